"""Hidden states of the image tokens at a model's extraction points, one batch at a time.

A point resolves to a key: ``vision`` (the vision encoder's output), ``projector``
(after the projector / merger: what the LM receives at its image tokens) or
``lm.<k>`` (the output of LM layer k, at the image tokens). ``states(model,
inputs, keys)`` returns, per key, one [T_i, D] array per sample (T_i image
tokens of sample i).

Generative VLMs (llava, llava-next, internvl, qwen2-vl, qwen2.5-vl) are read
with forward hooks, so the model runs once per batch as it does when it
scores: a pre-hook on the projector (merger) module gives the vision output,
a pre-hook on LM layer 0 the projected tokens where the LM sees them, a hook on
LM layer k its output; the image positions are the adapter's
(``Inputs.meta['image']``). The vision output's rows are split per image the
architecture's way (tiles per image for LLaVA-NeXT and InternVL, t·h·w patches
for Qwen). The spatial zoo exposes ``states`` itself. CogVLM2's remote code
is not hooked: its extraction is reported as not implemented.
"""
from __future__ import annotations

import numpy as np
import torch

from tasks.adapters.contract import Inputs
from tasks.probing.mission import Point, ProbingModel

HOOKED = ("llava", "llava-next", "internvl", "qwen2-vl", "qwen2.5-vl")


class NotExtractable(Exception):
    """The model opened but its hidden states cannot be read by this version (the stage records why)."""


def n_lm_layers(model, adapter: str) -> int:
    if adapter == "zoo-spatial":
        return model.n_layers
    if adapter in HOOKED:
        return len(model.model.model.language_model.layers)
    raise NotExtractable(f"adapter {adapter!r}: probing extraction is not implemented for it (its model code is "
                         "not hooked); run the model's points on an adapter listed in docs/probing-missions.md")


def point_key(entry: ProbingModel, point: Point, n_layers: int) -> str:
    stage = entry.stage(point)
    return f"lm.{point.layer(n_layers)}" if stage == "lm" else stage


def states(model, adapter: str, inputs: Inputs, keys: set[str]) -> dict[str, list[torch.Tensor]]:
    """{key: [T_i, D] per sample} for the requested keys."""
    if adapter == "zoo-spatial":
        out = model.states(inputs)
        return {k: list(out[k]) for k in keys}
    if adapter in HOOKED:
        return _hooked(model, adapter, inputs, keys)
    raise NotExtractable(f"adapter {adapter!r}: probing extraction is not implemented for it")


def _projector(model, adapter: str):
    inner = model.model.model
    return inner.visual.merger if adapter.startswith("qwen") else inner.multi_modal_projector


def _vision_rows(model, adapter: str, inputs: Inputs, captured: torch.Tensor) -> list[torch.Tensor]:
    """The projector's input split into one [rows, D] block per image."""
    n = len(inputs)
    if adapter.startswith("qwen"):
        counts = inputs.tensors["image_grid_thw"].prod(dim=1).tolist()
        return list(captured.reshape(-1, captured.shape[-1]).split(counts))
    if adapter == "llava":
        return [captured[i].reshape(-1, captured.shape[-1]) for i in range(n)]
    if adapter == "llava-next":
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        config = model.model.config
        tiles = [image_size_to_num_patches(tuple(size), config.image_grid_pinpoints, config.vision_config.image_size)
                 for size in inputs.tensors["image_sizes"].tolist()]
    else:  # internvl: image_seq_length tokens per tile in the LM sequence
        tiles = (inputs.meta["image"].sum(1) // model.processor.image_seq_length).tolist()
    return [block.reshape(-1, captured.shape[-1]) for block in captured.split(tiles)]


def _hooked(model, adapter: str, inputs: Inputs, keys: set[str]) -> dict[str, list[torch.Tensor]]:
    layers = model.model.model.language_model.layers
    image = inputs.meta["image"]
    got: dict[str, torch.Tensor] = {}

    def at_image(hidden: torch.Tensor) -> list[torch.Tensor]:
        hidden = hidden.detach().float().cpu()
        return [hidden[i][image[i]] for i in range(len(image))]

    def keep(name):
        def hook(_module, args, kwargs, output=None):
            source = output if output is not None else (args[0] if args else kwargs["hidden_states"])
            got[name] = source[0] if isinstance(source, tuple) else source
        return hook

    handles = []
    if "vision" in keys:
        handles.append(_projector(model, adapter).register_forward_pre_hook(keep("vision"), with_kwargs=True))
    if "projector" in keys:
        handles.append(layers[0].register_forward_pre_hook(keep("projector"), with_kwargs=True))
    for key in keys:
        if key.startswith("lm."):
            handles.append(layers[int(key[3:])].register_forward_hook(keep(key), with_kwargs=True))
    try:
        with torch.no_grad():
            model._hidden(inputs)  # the adapter's own forward pass, as when it scores
    finally:
        for h in handles:
            h.remove()
    out = {k: at_image(v) for k, v in got.items() if k != "vision"}
    if "vision" in keys:
        out["vision"] = [r.detach().float().cpu() for r in _vision_rows(model, adapter, inputs, got["vision"])]
    return out


def pool(tokens: torch.Tensor, how: str, length: int) -> np.ndarray:
    """[T, D] → [D] (mean) or [length·D] (tokens: order kept, resampled to ``length`` positions)."""
    if how == "mean":
        return tokens.mean(0).numpy()
    resampled = torch.nn.functional.adaptive_avg_pool1d(tokens.T[None], length)[0].T  # [length, D]
    return resampled.reshape(-1).numpy()
