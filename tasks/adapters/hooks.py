"""Attention statistics reduced inside forward hooks, so no [B, H, Q, K] map outlives its layer.

``AttentionHooks`` wraps the eager attention modules of a transformers model; ``LayerMasks`` says, per layer,
which rows and columns are image, text or measured; ``tower_masks`` covers a dual encoder's single-modality towers.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tasks.adapters.contract import AttentionSummary, TokenSpans
from tasks.diagnostics.attention import reduce_attention


@dataclass(frozen=True)
class LayerMasks:
    """The position masks ``reduce_attention`` takes, [Q]/[K] shared or [B, Q]/[B, K] per sample."""

    query_rows: torch.Tensor   # rows whose allocation is measured (text / query tokens)
    image_cols: torch.Tensor   # keys that are image tokens
    text_cols: torch.Tensor    # keys that are text tokens
    image_rows: torch.Tensor   # rows averaged into entropy_visual
    text_rows: torch.Tensor    # rows averaged into entropy_text

    def to(self, device) -> LayerMasks:
        return LayerMasks(*(m.to(device) for m in (self.query_rows, self.image_cols, self.text_cols,
                                                    self.image_rows, self.text_rows)))


MaskFn = Callable[[str, torch.Tensor], LayerMasks]  # (layer name, probs [B, H, Q, K]) -> masks
Select = Callable[[str, nn.Module], bool]


def _as_predicate(select: str | Select | None) -> Select:
    if select is None:
        return lambda _name, _module: False
    if isinstance(select, str):
        pattern = re.compile(select)
        return lambda name, _module: pattern.fullmatch(name) is not None
    return select


class AttentionHooks:
    """Reduce attention maps inside forward hooks; the maps never leave their layer.

    ``select`` (a regex full-matched against module names, or a predicate
    ``(name, module) -> bool``) picks the attention modules whose output is
    ``(attn_output, attn_probs, ...)`` with probs [B, H, Q, K] (transformers'
    eager attention modules). ``masks(layer, probs)`` gives each layer's
    ``LayerMasks``. The hook replaces the probs in the output by ``None``, so
    nothing downstream keeps them.

    ``cross`` picks cross-attention modules (text or query rows onto image
    keys only, e.g. BLIP's text encoder, the BLIP-2 Q-Former). There every key
    is an image token, so the visual share is 1 by construction and says
    nothing about the model: visual_share and text_share are recorded as NaN,
    the entropies are kept.

    ``keep_maps`` > 0 keeps the head-mean map of the first ``keep_maps``
    samples per layer in ``summary.maps`` (capability "maps", for plots).
    ``observe(layer, probs)`` runs inside the hook before the map is dropped
    (e.g. ``Rollout.update``); what it returns lands in
    ``summary.extras[name]`` per layer when it returns {name: [B] tensor}.

    ``request`` is an optional forward pre-hook ``(module, args, kwargs) ->
    (args, kwargs)`` for modules that compute their maps only when asked
    (ViLT's ``output_attentions`` argument). ``rename`` turns module names
    into layer names. Layers are listed in the order they ran; a module that
    runs twice in one context is an error (its summaries would mix two passes).

    Use: ``with AttentionHooks(model, select, masks, ...) as hooks: model(...)``
    then ``hooks.summary``.
    """

    def __init__(self, model: nn.Module, select: str | Select, masks: MaskFn, *,
                 cross: str | Select | None = None, request=None, rename: Callable[[str], str] | None = None,
                 n_image_tokens: int = 0, n_text_tokens: int = 0, spans: TokenSpans | None = None,
                 n_text_per_sample: torch.Tensor | None = None, keep_maps: int = 0,
                 observe: Callable[[str, torch.Tensor], dict[str, torch.Tensor] | None] | None = None):
        is_selected, self._is_cross = _as_predicate(select), _as_predicate(cross)
        self.modules = [(name, m) for name, m in model.named_modules() if name and is_selected(name, m)]
        if not self.modules:
            raise ValueError(f"no attention module of {type(model).__name__} matches {select!r}")
        self.masks, self.request, self.rename = masks, request, rename or (lambda name: name)
        self.n_image_tokens, self.n_text_tokens, self.spans = n_image_tokens, n_text_tokens, spans
        self.n_text_per_sample, self.keep_maps, self.observe = n_text_per_sample, keep_maps, observe
        self.rows: dict[str, dict[str, torch.Tensor]] = {}
        self.extras: dict[str, dict[str, torch.Tensor]] = {}
        self.maps: dict[str, torch.Tensor] = {}
        self.cross_layers: list[str] = []
        self.summary: AttentionSummary | None = None
        self._handles: list = []

    def _hook(self, layer: str, cross: bool):
        def hook(_module, _args, output):
            if layer in self.rows:
                raise RuntimeError(f"attention module {layer} ran twice inside one AttentionHooks context; "
                                   "trace one forward pass per context")
            probs = output[1]
            if probs is None:
                raise RuntimeError(f"{layer} returned no attention probabilities: the model is not using eager "
                                   "attention; load it with attn_implementation='eager'")
            m = self.masks(layer, probs).to(probs.device)
            stats = reduce_attention(probs, m.query_rows, m.image_cols, m.text_cols, m.image_rows, m.text_rows)
            if cross:
                for key in ("visual_share", "text_share", "other_share", "sink_mass", "visual_share_sink_aware"):
                    stats[key] = torch.full_like(stats[key], float("nan"))
            self.rows[layer] = {k: v.detach().float().cpu() for k, v in stats.items()}
            if self.keep_maps:
                self.maps[layer] = probs[: self.keep_maps].detach().float().mean(1).cpu()
            if self.observe is not None:
                for key, value in (self.observe(layer, probs) or {}).items():
                    self.extras.setdefault(key, {})[layer] = value.detach().float().cpu()
            return (output[0], None, *output[2:])  # drop the map here
        return hook

    def __enter__(self) -> AttentionHooks:
        self.rows.clear()
        self.extras.clear()
        self.maps.clear()
        self.cross_layers = []
        for name, module in self.modules:
            layer, cross = self.rename(name), self._is_cross(name, module)
            if cross:
                self.cross_layers.append(layer)
            if self.request is not None:
                self._handles.append(module.register_forward_pre_hook(self.request, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._hook(layer, cross)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if exc[0] is None:
            self.summary = self._build()

    def _build(self) -> AttentionSummary:
        if not self.rows:
            raise RuntimeError("no hooked attention module ran inside the AttentionHooks context")
        names = list(self.rows)  # insertion order = execution order
        stacked = {key: torch.stack([self.rows[n][key] for n in names], dim=1) for key in self.rows[names[0]]}
        b = stacked["visual_share"].shape[0]
        nan = torch.full((b,), float("nan"))
        # an observed statistic is NaN on layers that did not report it
        extras = {key: torch.stack([per.get(n, nan) for n in names], dim=1) for key, per in self.extras.items()}
        return AttentionSummary(layer_names=names, **stacked, n_image_tokens=self.n_image_tokens,
                                n_text_tokens=self.n_text_tokens, spans=self.spans, extras=extras,
                                n_text_per_sample=self.n_text_per_sample, maps=dict(self.maps))


def tower_masks(probs: torch.Tensor, tower: str, valid_rows: torch.Tensor | None = None) -> LayerMasks:
    """Masks for a dual encoder's tower (one modality, no cross-modal keys): both shares come out NaN.

    ``tower`` "image": every row's entropy goes to entropy_visual; "text":
    the rows in ``valid_rows`` [B, Q] (padding excluded) go to entropy_text.
    """
    q, k, dev = probs.shape[-2], probs.shape[-1], probs.device
    none_k, none_q = torch.zeros(k, dtype=torch.bool, device=dev), torch.zeros(q, dtype=torch.bool, device=dev)
    if tower == "image":
        return LayerMasks(none_q, none_k, torch.ones(k, dtype=torch.bool, device=dev),
                          torch.ones(q, dtype=torch.bool, device=dev), none_q)
    rows = valid_rows if valid_rows is not None else torch.ones(q, dtype=torch.bool, device=dev)
    return LayerMasks(none_q, none_k, rows, none_q, rows)
