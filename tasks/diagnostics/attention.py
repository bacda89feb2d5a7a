"""Attention reductions that run inside forward hooks.

Only per-sample, per-layer summaries leave the hook; the [B, H, Q, K]
attention maps are dropped right after, so memory stays flat in depth.
"""
from __future__ import annotations

import math

import torch

#: Key positions per layer treated as attention sinks: the k keys that hold the most mass of the measured rows
#: (visual attention sinks, 2025: a few tokens take most of the attention whatever the input).
SINK_K = 2


SHARE_KEYS = ("visual_share", "text_share", "other_share", "sink_mass", "visual_share_sink_aware")


def reduce_attention(
    probs: torch.Tensor,
    query_rows: torch.Tensor,
    image_cols: torch.Tensor,
    text_cols: torch.Tensor,
    image_rows: torch.Tensor,
    text_rows: torch.Tensor,
    sink_k: int = SINK_K,
) -> dict[str, torch.Tensor]:
    """Summarise one layer's attention probabilities.

    probs: [B, H, Q, K], rows sum to 1. Boolean position masks, each either
    shared ([Q] or [K]) or per sample ([B, Q] / [B, K], e.g. to skip padding):
    ``query_rows`` are the rows whose allocation is measured (text and
    CLS/query tokens), ``image_cols``/``text_cols`` the key modalities,
    ``image_rows``/``text_rows`` the rows whose entropy is averaged.
    Returns [B] tensors: visual_share, text_share (row mass onto each key
    modality, averaged over the measured rows), other_share (the third bucket:
    mass on keys that are neither, CLS/BOS/EOS, registers; never folded into
    either modality), sink_mass (mass on the ``sink_k`` keys holding the most
    mass in this layer) and visual_share_sink_aware (image mass ÷ the mass
    left once those keys are excluded), entropy_visual, entropy_text (row
    entropy normalised by log K, so different sequence lengths compare).
    """
    p = probs.detach().float()
    b, _, q, k = p.shape
    # [B, Q], heads averaged, one head at a time: a temporary of one head's map, never of all of them; entr(0) = 0
    ent = sum(torch.special.entr(p[:, h]).sum(-1) for h in range(p.shape[1])) / p.shape[1]
    if k > 1:
        ent = ent / math.log(k)
    entropies = {"entropy_visual": _masked_mean(ent, _per_sample(image_rows, b)),
                 "entropy_text": _masked_mean(ent, _per_sample(text_rows, b))}
    if not bool(image_cols.any()) or not bool(query_rows.any()):
        # no image keys (allocation undefined, not zero) or no measured rows (a dual encoder's towers): skip the work
        nan = torch.full((b,), float("nan"))
        return {key: nan.clone() for key in SHARE_KEYS} | entropies
    rows_q, img_k, txt_k = (_per_sample(m, b) for m in (query_rows, image_cols, text_cols))
    head_mean = p.mean(dim=1)  # [B, Q, K]
    to_image = torch.einsum("bqk,bk->bq", head_mean, img_k)
    to_text = torch.einsum("bqk,bk->bq", head_mean, txt_k)
    mass = head_mean.sum(-1).clamp_min(1e-12)
    visual_share = _masked_mean(to_image / mass, rows_q)
    text_share = _masked_mean(to_text / mass, rows_q)
    other_share = _masked_mean((mass - to_image - to_text).clamp_min(0) / mass, rows_q)
    # sinks: per sample, the keys with the most mean mass over the measured rows
    col_mass = torch.einsum("bqk,bq->bk", head_mean, rows_q) / rows_q.sum(-1, keepdim=True).clamp_min(1)
    sink = torch.zeros_like(col_mass).scatter_(1, col_mass.topk(min(sink_k, k), dim=-1).indices, 1.0)
    to_sink = torch.einsum("bqk,bk->bq", head_mean, sink)
    sink_mass = _masked_mean(to_sink / mass, rows_q)
    to_image_kept = torch.einsum("bqk,bk->bq", head_mean, img_k * (1 - sink))
    visual_sink_aware = _masked_mean(to_image_kept / (mass - to_sink).clamp_min(1e-12), rows_q)
    return {
        "visual_share": visual_share,
        "text_share": text_share,
        "other_share": other_share,
        "sink_mass": sink_mass,
        "visual_share_sink_aware": visual_sink_aware,
    } | entropies


def _per_sample(mask: torch.Tensor, batch: int) -> torch.Tensor:
    mask = mask.float()
    return mask.expand(batch, -1) if mask.dim() == 1 else mask


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    total = weights.sum(-1)
    mean = (values * weights).sum(-1) / total.clamp_min(1e-12)
    return torch.where(total > 0, mean, torch.full_like(mean, float("nan")))


def mcs_entropy(entropy_visual: torch.Tensor, entropy_text: torch.Tensor) -> torch.Tensor:
    """The source documents' Modality Contribution Score H_v / (H_v + H_t).

    Shown for comparison only: on the calibration zoo it does not track which
    modality the model uses, so no verdict rests on it.
    """
    return entropy_visual / (entropy_visual + entropy_text)


def attention_efficiency(
    visual_share: torch.Tensor,
    text_share: torch.Tensor,
    n_image_tokens: torch.Tensor | int,
    n_text_tokens: torch.Tensor | int,
) -> dict[str, torch.Tensor]:
    """Per-token attention efficiency (FastV-style): each modality's share ÷ its token count.

    A share alone rewards the modality with more tokens (196 patches against
    a dozen words); per token, the allocation compares like with like. The
    ratio visual/text efficiency is > 1 when an image token receives more
    attention than a text token. Shapes broadcast: shares [B, L], counts a
    scalar or [B, 1]. NaN where a count or the text efficiency is zero.
    """
    n_img = torch.as_tensor(n_image_tokens, dtype=torch.float32)
    n_txt = torch.as_tensor(n_text_tokens, dtype=torch.float32)
    nan = torch.tensor(float("nan"))
    visual = torch.where(n_img > 0, visual_share / n_img.clamp_min(1), nan)
    text = torch.where(n_txt > 0, text_share / n_txt.clamp_min(1), nan)
    ratio = torch.where(text > 0, visual / text.clamp_min(1e-12), nan)
    return {"attn_visual_efficiency": visual, "attn_text_efficiency": text, "attn_efficiency_ratio": ratio}
