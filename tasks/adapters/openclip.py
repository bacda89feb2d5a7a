"""open_clip dual encoders (CLIP / OpenCLIP) behind the adapter contract.

``spec.arch`` is an open_clip model name ("ViT-B-32"), ``spec.source`` a
pretrained tag ("laion2b_s34b_b79k") or a local checkpoint file. Loading goes
through open_clip's own ``create_model_and_transforms``, so a tiny config in a
test and a real checkpoint run the same code.

Weights for a tag live in the Hugging Face hub cache (open_clip prefers the
``hf_hub`` entry of its pretrained table over the legacy URL). The cache is
checked *before* open_clip is called: offline, open_clip's own download
attempt retries for ~45 s before failing with a bare RuntimeError, and here a
missing file must become ``WeightsUnavailable`` at once, naming the exact
directory and the command that fetches it.

A dual encoder has no cross-modal attention, so ``trace`` reports each
tower's self-attention: ``visual.i`` layers carry ``entropy_visual`` (all
rows: CLS + patches), ``text.i`` layers carry ``entropy_text`` (rows up to and
including EOT; the causal mask is kept, so early rows are structurally low
entropy). The other entropy and both shares are NaN, and ``spans`` is None:
the towers do not share one sequence.

For MM-SHAP (capabilities ``mask_tokens`` and ``separable``) the players
are the caption's BPE tokens between SOT and EOT (masked to the pad id, as
``mask`` does) and the cells of a grid over the preprocessed image (masked
to zero, the mean image). Each tower embeds its own coalitions, and
``similarity`` combines them exactly as ``score`` does.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image
from torch import nn
from torch.nn import functional as F

from tasks.adapters.contract import AttentionSummary, Inputs, ModelSpec, Players, Smoke, WeightsUnavailable
from tasks.adapters.openclip_weights import CHECKPOINT_SUFFIXES as _CHECKPOINT_SUFFIXES
from tasks.adapters.openclip_weights import locate, locate_tag, missing_checkpoint, unreachable
from tasks.adapters.towers import distinct_rows, encode_distinct
from tasks.diagnostics.attention import reduce_attention
from tasks.diagnostics.masking import pixel_keep

# the mission's dtype names as open_clip's precision argument (its weights are float32 on "auto")
_PRECISION = {"auto": "fp32", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}






@contextmanager
def _cache_only():
    """Make huggingface_hub resolve from the local cache: no HEAD requests, no retries.

    Used when the file is known to be cached, so a load never waits on the
    network and always uses exactly the bytes that were hashed for ``revision``.
    """
    before = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = before




def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The smoke model: open_clip's own CLIP class at a tiny size, registered under this name on first use.
SMOKE_ARCH = "fusionaudit-tiny-ViT"
SMOKE_CONFIG = {
    "embed_dim": 32,
    # 32 px / 16 px patches: 4 patches + CLS = 5 image tokens, 4 heads of 16
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
    # the vocabulary must hold CLIP's BPE ids (SOT 49406, EOT 49407)
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def register_smoke_arch() -> str:
    """Make ``SMOKE_ARCH`` an open_clip model name (open_clip reads model configs from folders of JSON files)."""
    if SMOKE_ARCH not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="open_clip_smoke_"))
        (folder / f"{SMOKE_ARCH}.json").write_text(json.dumps(SMOKE_CONFIG), encoding="utf-8")
        open_clip.add_model_config(folder)
    return SMOKE_ARCH


class OpenClipAdapter:
    """Opens open_clip models; ``cache_dir`` overrides the hub cache (or ~/.cache/clip for URL weights)."""

    name = "openclip"
    family = "dual encoder"
    capabilities = frozenset({"score", "separable", "mask", "mask_tokens", "trace", "maps"})
    smoke = Smoke(arch=SMOKE_ARCH, setup=register_smoke_arch)

    def __init__(self, device: str | None = None, cache_dir: str | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.cache_dir = cache_dir

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        """Whether the tag's weights (or the checkpoint file) are on this machine, and where that was checked."""
        _check_arch(spec.arch)
        return locate(spec, self.cache_dir)  # the light check `models list` uses too

    def load(self, spec: ModelSpec) -> OpenClipModel:
        arch = _check_arch(spec.arch)
        if spec.allow_random_init and not spec.source:
            return self._random(spec, arch)
        try:
            return self._load_weights(spec, arch)
        except WeightsUnavailable:
            # --allow-random-init: real weights when they are here, the real class with random weights otherwise
            if spec.allow_random_init:
                return self._random(spec, arch)
            raise

    def _random(self, spec: ModelSpec, arch: str) -> OpenClipModel:
        return self._open(spec, arch, pretrained=None, checkpoint=None, label="random-init")

    def _load_weights(self, spec: ModelSpec, arch: str) -> OpenClipModel:
        cfg = open_clip.get_pretrained_cfg(arch, spec.source)
        if cfg:
            return self._load_tag(spec, arch, cfg)
        path = Path(spec.source).expanduser()
        if path.is_file():
            return self._open(spec, arch, pretrained=str(path), checkpoint=path, label=path.name)
        if os.sep in spec.source or path.suffix in _CHECKPOINT_SUFFIXES:
            raise missing_checkpoint(spec, arch, path)
        raise ValueError(f"{spec.source!r} is neither a pretrained tag of {arch} nor a file; "
                         f"known tags: {open_clip.list_pretrained_tags_by_model(arch)}")

    def _locate(self, arch: str, tag: str, cfg: dict) -> tuple[Path, list[str], Path | None, str, str]:
        """Where open_clip will look for a tag's weights (tasks.adapters.openclip_weights, shared with the Blocked check)."""
        return locate_tag(arch, tag, cfg, self.cache_dir)

    def _load_tag(self, spec: ModelSpec, arch: str, cfg: dict) -> OpenClipModel:
        tag = spec.source
        cache, searched, cached, endpoint, fetch = self._locate(arch, tag, cfg)
        if cached is not None:
            with _cache_only():
                return self._open(spec, arch, tag, cached, label=tag, cache_dir=str(cache))
        why = unreachable(spec, arch, tag, cache, searched, endpoint, fetch)
        if why is not None:
            raise why
        mitigation = (f"on a connected machine run: {fetch}, then copy that machine's hub cache "
                      f"(~/.cache/huggingface/hub) to {cache} here, or pass a local checkpoint path as the model source")
        try:
            loaded = self._open(spec, arch, tag, None, label=tag, cache_dir=str(cache))  # downloads into the cache
        except (RuntimeError, OSError) as e:  # open_clip wraps download errors in RuntimeError
            raise WeightsUnavailable(spec.name, f"download failed: {e}", searched, mitigation) from e
        downloaded = self._locate(arch, tag, cfg)[2]
        if downloaded is not None:
            loaded.revision = f"{tag}@sha256:{_sha256(downloaded)[:12]}"
        return loaded

    def _open(self, spec: ModelSpec, arch: str, pretrained: str | None, checkpoint: Path | None,
              label: str, cache_dir: str | None = None) -> OpenClipModel:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, cache_dir=cache_dir, device=self.device,
            precision=_PRECISION[spec.dtype or "auto"],
            pretrained_text=False,  # never fetch separate HF text-tower weights (random init or full checkpoint)
        )
        tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
        revision = f"{label}@sha256:{_sha256(checkpoint)[:12]}" if checkpoint else label
        return OpenClipModel(spec, model.eval(), preprocess, tokenizer, revision, pretrained is None, self.device)


def _check_arch(arch: str | None) -> str:
    if not arch:
        raise ValueError("the openclip adapter needs spec.arch, an open_clip model name such as 'ViT-B-32'")
    if open_clip.get_model_config(arch) is None:
        near = difflib.get_close_matches(arch, open_clip.list_models(), n=5)
        raise ValueError(f"unknown open_clip architecture {arch!r} (close matches: {near}); "
                         f"open_clip.list_models() lists all {len(open_clip.list_models())}")
    return arch


def _mha_blocks(transformer: nn.Module | None) -> list[nn.MultiheadAttention]:
    """Self-attention modules of an open_clip ``Transformer``; timm/HF towers and custom blocks have none."""
    blocks = getattr(transformer, "resblocks", [])
    return [blk.attn for blk in blocks if isinstance(getattr(blk, "attn", None), nn.MultiheadAttention)]


def _want_weights(_module, args, kwargs):
    # open_clip calls attn(q, k, v, need_weights=False, attn_mask=...); ask for per-head maps instead.
    return args, {**kwargs, "need_weights": True, "average_attn_weights": False}


def _leanable(attn: nn.MultiheadAttention) -> bool:
    """A packed-projection self-attention in eval mode: ``_self_attention_with_probs`` computes it exactly."""
    return attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn and not attn.training


def _self_attention_with_probs(self: nn.MultiheadAttention, query, key, value, key_padding_mask=None,
                               need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False):
    """nn.MultiheadAttention's self-attention, returning per-head probabilities [B, H, T, T] (tracing only).

    Asking PyTorch for the weights (``need_weights=True``) leaves its fused kernel for a path that transposes and
    copies the activations around the same matmuls, about 10 % of a ViT-B-32 forward at batch 32; this computes
    the same attention batch-first in four matmuls, so the traced forward costs about what the plain one does.
    """
    if query is not key or key is not value:
        raise ValueError("lean tracing handles self-attention only")
    x = query if self.batch_first else query.transpose(0, 1)
    b, t, d = x.shape
    h = self.num_heads
    # one copy lays q, k, v out [3, B, H, T, d/h] contiguous, so the matmuls below copy nothing more
    q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4).contiguous()
    scores = torch.matmul(q.mul_((d // h) ** -0.5), k.transpose(-2, -1))  # q scaled first, as PyTorch does
    if attn_mask is not None:  # [T, T] or [B*H, T, T]; bool True = masked out, as PyTorch reads it
        mask = attn_mask.view(-1, h, t, t) if attn_mask.dim() == 3 else attn_mask
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores.add_(mask)
    if key_padding_mask is not None:  # [B, T]; True = padding
        pad = key_padding_mask[:, None, None, :]
        scores = scores.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else scores.add_(pad)
    # softmax in place: a second [B, H, T, T] tensor would double the trace's peak memory on long sequences
    probs = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
    probs.div_(probs.sum(dim=-1, keepdim=True))
    out = F.linear(torch.matmul(probs, v).transpose(1, 2).reshape(b, t, d), self.out_proj.weight, self.out_proj.bias)
    return (out if self.batch_first else out.transpose(0, 1)), probs


@contextmanager
def _tracing(blocks: list[nn.MultiheadAttention]):
    """Every block returns its per-head maps: the lean self-attention where it applies, PyTorch's path elsewhere."""
    handles, patched = [], []
    for attn in blocks:
        if _leanable(attn):
            attn.forward = types.MethodType(_self_attention_with_probs, attn)  # instance attribute, removed after
            patched.append(attn)
        else:
            handles.append(attn.register_forward_pre_hook(_want_weights, with_kwargs=True))
    try:
        yield
    finally:
        for attn in patched:
            del attn.forward
        for h in handles:
            h.remove()


class OpenClipModel:
    """An open_clip CLIP behind the LoadedModel contract. Inputs: ``image`` [B,3,H,W], ``text`` [B,ctx] ids."""

    family = "dual encoder"

    def __init__(self, spec: ModelSpec, model: nn.Module, preprocess, tokenizer, revision: str,
                 random_init: bool, device: str):
        self.spec, self.model, self.preprocess, self.tokenizer = spec, model, preprocess, tokenizer
        self.revision, self.random_init, self.device = revision, random_init, device
        self.dtype = next(model.parameters()).dtype  # images are cast to it (float16 / bfloat16 runs)
        # CLIP keeps the text transformer on the model itself; CustomTextCLIP under ``.text``.
        text = getattr(model, "text", model)
        self.pool_type = getattr(text, "text_pool_type", None) or getattr(text, "pool_type", None)
        self.eos_id = getattr(text, "text_eos_id", None) or getattr(text, "eos_id", None)
        # SimpleTokenizer pads with 0; HF tokenizers with their own pad id.
        self.pad_id = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None) or 0
        # CLIP's text config carries eos_id=2 even under argmax pooling (id 2 is an ordinary BPE token there)
        specials = [getattr(tokenizer, "sot_token_id", None), getattr(tokenizer, "eot_token_id", None)]
        self.special_ids = {i for i in specials + [self.eos_id if self.pool_type == "eos" else None] if i is not None}
        self.visual_attn = _mha_blocks(getattr(model.visual, "transformer", None))
        self.text_attn = _mha_blocks(getattr(text, "transformer", None))
        caps = {"score", "separable"}  # two towers: a coalition's image and text embed apart
        if self.pool_type in ("argmax", "eos"):  # the pooled (EOT) position is known, so text can be masked around it
            caps |= {"mask", "mask_tokens"}
        if self.visual_attn or self.text_attn:
            caps |= {"trace", "maps"}
        self.capabilities = frozenset(caps)

    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        if not len(images) == len(captions) == len(sample_ids):
            raise ValueError(f"{len(images)} images, {len(captions)} captions, {len(sample_ids)} ids")
        image = torch.stack([self.preprocess(im) for im in images])
        return Inputs(tensors={"image": image, "text": self.tokenizer(list(captions))}, sample_ids=list(sample_ids))

    def eot_index(self, text: torch.Tensor) -> torch.Tensor:
        """The position open_clip pools the text from: argmax of the ids (EOT is the largest id) or the first EOS."""
        if self.pool_type == "argmax":
            return text.argmax(dim=-1)
        return (text == self.eos_id).int().argmax(dim=-1)

    @torch.no_grad()
    def score(self, inputs: Inputs) -> torch.Tensor:
        """The model's own pair logit: cosine(image, text) x logit_scale.exp() (+ logit_bias for SigLIP)."""
        return self.similarity(self.encode_image(inputs), self.encode_text(inputs))

    @torch.no_grad()
    def encode_image(self, inputs: Inputs, image_keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, D] normalised image embeddings; grid cells not in ``image_keep`` [B, g, g] become the mean image."""
        image = inputs.tensors["image"]
        if image_keep is not None:
            image = self._mask_cells(image, image_keep)
        return encode_distinct(lambda x: self.model.encode_image(x.to(self.device, self.dtype), normalize=True), image)

    @torch.no_grad()
    def encode_text(self, inputs: Inputs, text_keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, D] normalised text embeddings; caption tokens not in ``text_keep`` [B, T] become padding."""
        text = inputs.tensors["text"]
        if text_keep is not None:
            text = self._mask_words(text, text_keep)
        return encode_distinct(lambda x: self.model.encode_text(x.to(self.device), normalize=True), text)

    @torch.no_grad()
    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """[B] pair logits of normalised embeddings: the same formula ``score`` uses."""
        logits = (image_emb * text_emb).sum(-1) * self.model.logit_scale.exp()
        if getattr(self.model, "logit_bias", None) is not None:
            logits = logits + self.model.logit_bias
        return logits.float().cpu()

    def _content(self, text: torch.Tensor) -> torch.Tensor:
        """[B, T] caption tokens: before the pooled EOT, not SOT/EOT/padding."""
        positions = torch.arange(text.shape[1], device=text.device)
        content = positions[None, :] < self.eot_index(text)[:, None]
        for special in self.special_ids:
            content &= text != special
        return content

    def players(self, inputs: Inputs) -> Players:
        """Text players: the caption's BPE tokens between SOT and EOT."""
        self._need("mask_tokens")
        return Players(text_valid=self._content(inputs.tensors["text"]))

    def mask_tokens(self, inputs: Inputs, image_keep: torch.Tensor, text_keep: torch.Tensor) -> Inputs:
        """Cells not kept → 0 after normalisation (the mean image); caption tokens not kept → the pad id."""
        self._need("mask_tokens")
        image = self._mask_cells(inputs.tensors["image"], image_keep)
        text = self._mask_words(inputs.tensors["text"], text_keep)
        return Inputs(tensors={**inputs.tensors, "image": image, "text": text},
                      sample_ids=list(inputs.sample_ids), meta=dict(inputs.meta))

    def _mask_cells(self, image: torch.Tensor, image_keep: torch.Tensor) -> torch.Tensor:
        if image_keep.dim() != 3 or image_keep.shape[0] != image.shape[0]:
            raise ValueError(f"image_keep must be [{image.shape[0]}, g, g] booleans, got {tuple(image_keep.shape)}")
        keep = pixel_keep(image_keep, image.shape[-2], image.shape[-1]).to(image.device)
        return image * keep[:, None].to(image.dtype)

    def _mask_words(self, text: torch.Tensor, text_keep: torch.Tensor) -> torch.Tensor:
        self._need("mask_tokens")
        if tuple(text_keep.shape) != tuple(text.shape):
            raise ValueError(f"text_keep must match the token ids {tuple(text.shape)}, got {tuple(text_keep.shape)}")
        drop = self._content(text) & ~text_keep.to(text.device).bool()
        return text.masked_fill(drop, self.pad_id)

    def _need(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise NotImplementedError(f"text pooling {self.pool_type!r}: the pooled token cannot be located, "
                                      f"so {capability} is unavailable for {self.spec.name}")

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        """Baselines: the image becomes all zeros after normalisation, i.e. the dataset-mean image.

        The caption keeps its special tokens (SOT, EOT) at their positions and
        every content token before EOT becomes the padding id (0 for CLIP's
        BPE, which has no [MASK]). The EOT - the pooled token - thus keeps its
        position embedding, and argmax pooling still finds it; an empty
        caption would move it and confound the comparison with position.
        """
        self._need("mask")
        image, text = inputs.tensors["image"].clone(), inputs.tensors["text"].clone()
        if not image_keep:
            image.zero_()
        if not text_keep:
            text[self._content(text)] = self.pad_id
        return Inputs(tensors={**inputs.tensors, "image": image, "text": text},
                      sample_ids=list(inputs.sample_ids), meta=dict(inputs.meta))

    @torch.no_grad()
    def trace(self, inputs: Inputs, keep_maps: int = 0) -> AttentionSummary:
        """Each tower's per-layer self-attention entropy, reduced inside forward hooks.

        No rollout: neither tower attends across modalities, so an image share of a row is undefined.
        """
        if "trace" not in self.capabilities:
            raise NotImplementedError("neither tower is built from nn.MultiheadAttention blocks (timm / HF towers)")
        image = inputs.tensors["image"].to(self.device, self.dtype)
        text = inputs.tensors["text"].to(self.device)
        # each tower runs its distinct rows once, as score() does (a caption or an image often recurs in a batch)
        distinct = {"visual": distinct_rows(image), "text": distinct_rows(text)}
        image, text = image[distinct["visual"][0].to(image.device)], text[distinct["text"][0].to(text.device)]
        eot = self.eot_index(text)
        rows: dict[str, dict[str, torch.Tensor]] = {}
        n_tokens = {"visual": 0, "text": 0}
        maps: dict[str, torch.Tensor] = {}

        def reducer(name: str, tower: str):
            def hook(_module, _args, output):
                out, probs = output  # probs [B, H, Q, K] whatever batch_first is
                k, dev = probs.shape[-1], probs.device
                none, every = torch.zeros(k, dtype=torch.bool, device=dev), torch.ones(k, dtype=torch.bool, device=dev)
                if tower == "visual":  # every token is an image token (CLS included)
                    masks = (none, every, none, every, none)
                else:  # rows after EOT are padding the pooled token never sees (causal mask)
                    valid = torch.arange(k, device=dev)[None, :] <= eot[:, None]
                    masks = (none, none, valid, none, valid)
                # query_rows empty: no text row attends to an image here, so both shares come out NaN
                every_row = distinct[tower][1]  # distinct row of each sample of the batch
                rows[name] = {key: v.cpu()[every_row] for key, v in reduce_attention(probs, *masks).items()}
                n_tokens[tower] = k
                if keep_maps:
                    maps[name] = probs[every_row[:keep_maps].to(probs.device)].mean(1).float().cpu()
                return out, None  # drop the map right away
            return hook

        handles = []
        for tower, blocks in (("visual", self.visual_attn), ("text", self.text_attn)):
            for i, attn in enumerate(blocks):
                handles.append(attn.register_forward_hook(reducer(f"{tower}.{i}", tower)))
        try:  # both towers run whole, so the traced forward also gives the embeddings and the score
            with _tracing([*self.visual_attn, *self.text_attn]):
                image_emb = self.model.encode_image(image, normalize=True)[distinct["visual"][1].to(self.device)]
                text_emb = self.model.encode_text(text, normalize=True)[distinct["text"][1].to(self.device)]
        finally:
            for h in handles:
                h.remove()
        names = [f"{t}.{i}" for t, blocks in (("visual", self.visual_attn), ("text", self.text_attn))
                 for i in range(len(blocks))]
        stack = {key: torch.stack([rows[n][key] for n in names], dim=1) for key in rows[names[0]]}
        return AttentionSummary(layer_names=names, **stack, n_image_tokens=n_tokens["visual"],
                                n_text_tokens=n_tokens["text"], spans=None, maps=maps,
                                score=self.similarity(image_emb, text_emb), embeddings=(image_emb, text_emb))
