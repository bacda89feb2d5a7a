"""IDEFICS (``IdeficsForVisionText2Text``): a Flamingo-style LM with gated cross-attention to the image.

The image never enters the LM's token sequence: the text holds one
``<image>`` placeholder (between ``<fake_token_around_image>`` markers),
and before every ``cross_layer_interval``-th decoder layer a gated
cross-attention layer lets the text rows after the placeholder attend to
the image's ViT patches (or perceiver latents), its output added to the
residual stream scaled by tanh(alpha_cross_attn), the following MLP's by
tanh(alpha_dense).

What the trace reports, per layer in execution order (``xattn.i`` before
``lm.i``):

- ``lm.i`` (self-attention): there are no image tokens in the sequence, so
  ``visual_share``/``text_share`` are NaN by construction, not zero;
  ``entropy_text`` is the caption/answer rows' entropy.
- ``xattn.i`` (gated cross-attention, hooked on its ``cross_attn`` module,
  whose maps the layer discards): every key is an image token, so the share
  would be 1 by construction and is NaN; ``entropy_text`` is the caption and
  answer rows' entropy over the image keys. ``n_image_tokens`` counts those
  keys.
- ``extras["gate_attn"]`` / ``extras["gate_dense"]``: tanh(alpha) of each
  gated layer (the mean |tanh(alpha)| when ``alpha_type`` is "vector"),
  NaN on ``lm.i`` rows. A gate near 0 shuts the image out whatever the
  attention looks like.
- ``extras["xattn_update_ratio"]``: ‖tanh(alpha_cross_attn) · cross-attention
  output‖ / ‖residual stream entering the gated layer‖, averaged over the
  caption and answer rows: how strongly the image rewrites the text stream.

Score, masking and players as in generative.py; the prompt is IDEFICS' own
"User:<image>…<end_of_utterance>\\nAssistant:" format (without
``<end_of_utterance>`` for tokenizers that lack it, as in idefics-9b). The
image is resized to a square without cropping, so a grid cell is masked by
zeroing its pixels of ``pixel_values`` [B, 1, 3, H, W] exactly.
"""
from __future__ import annotations

import re

import torch
from transformers import (
    IdeficsConfig,
    IdeficsForVisionText2Text,
    IdeficsImageProcessor,
    IdeficsProcessor,
)

from tasks.adapters.contract import AttentionSummary, Inputs, Smoke
from tasks.adapters.generative import GenerativeVLM, HFGenerativeAdapter, common_spans, random_tokenizer
from tasks.adapters.hooks import AttentionHooks, LayerMasks
from tasks.adapters.yes_no_prompt import YesNoPrompt
from tasks.diagnostics.masking import pixel_keep

FAKE, IMAGE, EOU = "<fake_token_around_image>", "<image>", "<end_of_utterance>"
IDEFICS_FORMAT = "User:" + IMAGE + "{question}" + EOU + "\nAssistant:"
IDEFICS_TOKENS = {"image_token": IMAGE, "fake_image_token": FAKE, "end_of_utterance_token": EOU}
SELF_ATTN = r"model\.layers\.(\d+)\.self_attn"
CROSS_ATTN = r"model\.gated_cross_attn_layers\.(\d+)\.cross_attn"


def idefics_prompt(tokenizer) -> YesNoPrompt:
    """IDEFICS' dialogue format; <end_of_utterance> only where the tokenizer was trained with it (instruct)."""
    has_eou = EOU in tokenizer.get_vocab()
    return YesNoPrompt.from_format(IDEFICS_FORMAT if has_eou else IDEFICS_FORMAT.replace(EOU, ""))


def gate_value(alpha: torch.Tensor) -> float:
    """tanh(alpha) of a float gate; mean |tanh(alpha)| of a vector gate (one value per hidden unit)."""
    gate = torch.tanh(alpha.detach().float())
    return float(gate.item()) if gate.numel() == 1 else float(gate.abs().mean())


class IdeficsModel(GenerativeVLM):
    """IDEFICS behind the contract; the LM sequence holds no image tokens (see the module docstring)."""

    family = "LLM with gated cross-attention (Flamingo-style)"
    attention_modules = f"{SELF_ATTN}|{CROSS_ATTN}"

    def image_token_ids(self) -> tuple[int, ...]:
        return ()  # the <image> placeholder carries no image features; the image enters by cross-attention

    def layer_name(self, module_name: str) -> str:
        match = re.fullmatch(SELF_ATTN, module_name)
        return f"lm.{match.group(1)}" if match else f"xattn.{re.fullmatch(CROSS_ATTN, module_name).group(1)}"

    def encode(self, images, texts):
        """The processor's tensors, and offsets from tokenising the same string it builds (checked equal)."""
        tok = self.processor.tokenizer
        prompts, full, replacements = [], [], []
        for image, text in zip(images, texts):
            before, after = text.split(IMAGE)
            if before != before.strip(" ") or after != after.strip(" "):
                raise ValueError(f"IDEFICS prompt parts must not start or end with spaces (the processor strips "
                                 f"them): {before!r}, {after!r}")
            prompts.append([before, image, after])
            bos, marker = tok.bos_token or "", FAKE + IMAGE + FAKE
            full.append(bos + before + marker + after)
            replacements.append([{"span": (0, 0), "new_span": (0, len(bos))},
                                 {"span": (len(before), len(before) + len(IMAGE)),
                                  "new_span": (len(bos) + len(before), len(bos) + len(before) + len(marker))}])
        enc = self.processor(text=prompts, padding=True, padding_side="right", return_tensors="pt")
        mine = tok(full, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt",
                   return_offsets_mapping=True)
        if not torch.equal(mine["input_ids"], enc["input_ids"]):
            raise RuntimeError("IdeficsProcessor built a different prompt than the adapter expects; "
                               "its text layout changed in this transformers version")
        return dict(enc), mine["offset_mapping"], replacements

    def _mask_cells(self, inputs: Inputs, image_keep: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = inputs.tensors["pixel_values"]  # [B, images, 3, H, W]
        keep = pixel_keep(image_keep, pixels.shape[-2], pixels.shape[-1]).to(pixels.device)
        return {"pixel_values": pixels * keep[:, None, None].to(pixels.dtype)}

    def _gates(self) -> dict[str, tuple[float, float]]:
        return {f"xattn.{i}": (gate_value(layer.alpha_cross_attn), gate_value(layer.alpha_dense))
                for i, layer in enumerate(self.model.model.gated_cross_attn_layers)}

    @torch.no_grad()
    def trace(self, inputs: Inputs, keep_maps: int = 0) -> AttentionSummary:
        """Self- and gated cross-attention per layer, gates and the image's update ratio (module docstring)."""
        meta = inputs.meta
        self_masks = self._layer_masks(inputs)
        rows = self_masks.query_rows
        n_keys: dict[str, int] = {}
        maps: dict[str, torch.Tensor] = {}

        def masks(layer: str, probs: torch.Tensor) -> LayerMasks:
            if keep_maps:
                maps[layer] = probs[:keep_maps].detach().float().mean(1).cpu()
            if layer.startswith("lm."):
                return self_masks
            k, q = probs.shape[-1], probs.shape[-2]
            n_keys[layer] = k
            every, none = torch.ones(k, dtype=torch.bool), torch.zeros(k, dtype=torch.bool)
            return LayerMasks(query_rows=rows, image_cols=every, text_cols=none,
                              image_rows=torch.zeros(q, dtype=torch.bool), text_rows=rows)

        ratio, residual_norm, handles = {}, {}, []
        layers = self.model.model.gated_cross_attn_layers
        for i, layer in enumerate(layers):
            handles.append(layer.register_forward_pre_hook(self._keep_norm(residual_norm, f"xattn.{i}")))
            handles.append(layer.cross_attn.register_forward_hook(
                self._update_ratio(ratio, residual_norm, f"xattn.{i}", layer, rows)))
        try:
            with AttentionHooks(self.model, self.attention_modules, masks, cross=CROSS_ATTN, rename=self.layer_name,
                                n_text_tokens=int(meta["caption"].sum(1).max()),
                                spans=common_spans(meta["spans"])) as hooks:
                self._hidden(inputs)
        finally:
            for h in handles:
                h.remove()
        summary = hooks.summary
        summary.n_image_tokens = max(n_keys.values(), default=0)
        summary.n_text_per_sample = meta["caption"].sum(1)
        summary.maps = maps
        b, gates, nan = len(inputs), self._gates(), float("nan")
        per_layer = {
            "gate_attn": [gates.get(name, (nan, nan))[0] for name in summary.layer_names],
            "gate_dense": [gates.get(name, (nan, nan))[1] for name in summary.layer_names],
        }
        summary.extras = {k: torch.tensor(v).expand(b, -1).clone() for k, v in per_layer.items()}
        summary.extras["xattn_update_ratio"] = torch.stack(
            [ratio.get(name, torch.full((b,), nan)) for name in summary.layer_names], dim=1)
        return summary

    @staticmethod
    def _keep_norm(store: dict, name: str):
        def hook(_module, args):
            store[name] = args[0].detach().float().norm(dim=-1)  # [B, S] residual stream entering the layer
        return hook

    @staticmethod
    def _update_ratio(store: dict, residual_norm: dict, name: str, layer, rows: torch.Tensor):
        def hook(_module, _args, output):
            update = (torch.tanh(layer.alpha_cross_attn.detach().float()) * output[0].detach().float()).norm(dim=-1)
            r = (update / residual_norm[name].clamp_min(1e-12)).cpu()
            weights = rows.float()
            store[name] = (r * weights).sum(1) / weights.sum(1).clamp_min(1)
        return hook


SMOKE = Smoke(hub_id="HuggingFaceM4/idefics-9b-instruct", random_init_config=(
    ("vision_config.embed_dim", 32), ("vision_config.intermediate_size", 64), ("vision_config.num_hidden_layers", 2),
    ("vision_config.num_attention_heads", 4), ("vision_config.image_size", 32), ("vision_config.patch_size", 8),
    ("hidden_size", 64), ("intermediate_size", 128), ("num_hidden_layers", 2), ("num_attention_heads", 4),
    ("vocab_size", 128),
    # real IDEFICS starts its gates at 0 (the image is shut out until training opens them); random-init runs
    # open them so the image reaches the score ("normal" with float gates fails inside transformers 5.23)
    ("alpha_initializer", "ones"),
))


class IdeficsAdapter(HFGenerativeAdapter):
    """``idefics``: IdeficsForVisionText2Text (HuggingFaceM4/idefics-9b, idefics-9b-instruct)."""

    name = "idefics"
    smoke = SMOKE
    model_cls, config_cls, loaded_cls = IdeficsForVisionText2Text, IdeficsConfig, IdeficsModel

    def prompt_for(self, processor) -> YesNoPrompt:
        return idefics_prompt(processor.tokenizer)  # the processor takes a list of items, not a chat template

    def random_processor(self, model):
        config = model.config
        tok = random_tokenizer(model, IDEFICS_FORMAT, IDEFICS_TOKENS, bos="<s>",
                               vocab_size=config.vocab_size + config.additional_vocab_size)
        size = config.vision_config.image_size
        return IdeficsProcessor(image_processor=IdeficsImageProcessor(image_size=size), tokenizer=tok,
                                image_size=size)
