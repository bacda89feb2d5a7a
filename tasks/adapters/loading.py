"""Building a transformers model for a spec: real weights when they are here, else the real class at random.

``open_pretrained`` always asks for eager attention (transformers >= 5 defaults to SDPA, which returns
no attention maps); ``TransformersAdapter.open`` adds where and in which precision (``spec.device``,
``spec.dtype``), the one rule every transformers adapter follows.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from tasks.adapters.contract import ModelSpec, WeightsUnavailable
from tasks.adapters.hub import (
    checkpoint_revision,
    locate_pretrained,
    missing_weights,
    resolve_pretrained,
    weight_files,
)

#: The transformer tower of the tiny smoke models (``Smoke``): two layers of four heads at width 32, so a
#: random-init model builds in seconds on a CPU; a text tower adds a small vocabulary, a vision one 4×4 patches.
_TINY_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_TEXT_TOWER = _TINY_TOWER | {"vocab_size": 64, "max_position_embeddings": 16}
TINY_VISION_TOWER = _TINY_TOWER | {"image_size": 32, "patch_size": 8}


def config_pairs(config: Mapping[str, object], prefix: str = "") -> tuple[tuple[str, object], ...]:
    """``config`` as ``random_init_config`` pairs, a nested config's fields under dotted keys:
    {"vision_config": {"patch_size": 8}} -> (("vision_config.patch_size", 8),)."""
    pairs: list[tuple[str, object]] = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            pairs += config_pairs(value, f"{prefix}{key}.")
        else:
            pairs.append((prefix + key, value))
    return tuple(pairs)


def random_config(config_cls, spec: ModelSpec, cached: Path | None = None):
    """The config a random-weights model is built from.

    The checkpoint's own config.json when it is cached (the real architecture),
    else ``config_cls()``'s defaults; then ``spec.random_config`` overrides,
    whose dotted keys reach nested configs ("text_config.num_hidden_layers").
    Overrides are applied to the config *dict* before the class is built, so
    values a composite config derives from its parts (BLIP-2's Q-Former
    ``encoder_hidden_size`` from the vision width) follow the overrides.
    """
    if cached is not None and (cached / "config.json").exists():
        base = config_cls.from_pretrained(cached).to_dict()
    else:
        base = config_cls().to_dict()
    for key, value in spec.random_config.items():
        _set_dotted(base, key, value, config_cls.__name__)
    config = config_cls.from_dict(base)
    config._attn_implementation = "eager"  # applied to every sub-config too
    return config


def _set_dotted(tree: dict, key: str, value, owner: str) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.get(part)
        if not isinstance(child, dict):
            where = ".".join(parents[: i + 1])
            raise ValueError(f"random_init_config key {key!r}: {owner} has no nested config {where!r}; "
                             f"nested configs here: {sorted(k for k, v in node.items() if isinstance(v, dict))}")
        node = child
    if leaf not in node:
        raise ValueError(f"random_init_config key {key!r}: {owner} has no field {leaf!r} there; "
                         f"known fields: {sorted(k for k in node if not k.startswith('_'))}")
    if isinstance(node[leaf], dict) and isinstance(value, Mapping):
        node[leaf] = {**node[leaf], **value}
    else:
        node[leaf] = value


def open_pretrained(model_cls, spec: ModelSpec, config_cls, *, device: str | None = None, seed: int = 0, **kw):
    """(model in eval mode, random_init, revision) for ``spec``.

    Real weights via ``from_pretrained(folder, attn_implementation="eager")``
    when the checkpoint (config + weights) is here. Without weights and with
    ``spec.allow_random_init``, the real class is built from ``random_config``
    with weights drawn under ``torch.manual_seed(seed)`` (the global RNG is
    left as it was); its revision is the hash of that config. Otherwise
    ``WeightsUnavailable`` propagates. ``kw`` go to ``from_pretrained`` /
    ``_from_config`` (e.g. ``dtype``).
    """
    folder: Path | None = None
    error: WeightsUnavailable | None = None
    if spec.source.strip() or not spec.allow_random_init:
        try:
            folder = resolve_pretrained(spec, files=("config.json",))
        except WeightsUnavailable as e:
            error = e
    weights = weight_files(folder) if folder is not None else []
    if folder is not None and weights:
        _check_model_type(spec, folder, config_cls)
        model = model_cls.from_pretrained(folder, attn_implementation="eager", **kw)
        return _place(model, device), False, checkpoint_revision(folder, weights)
    if not spec.allow_random_init:
        if error is not None:
            raise error
        raise missing_weights(spec, folder)
    if folder is not None:
        _check_model_type(spec, folder, config_cls)
    config = random_config(config_cls, spec, folder)
    if kw.pop("device_map", None):  # random weights are built on the CPU; _place moves them to the GPU
        device = device or default_device()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls._from_config(config, attn_implementation="eager", **kw)
    digest = hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest()[:12]
    return _place(model, device), True, f"random-init@seed{seed}:{digest}"


def _check_model_type(spec: ModelSpec, folder: Path, config_cls) -> None:
    found = json.loads((folder / "config.json").read_text()).get("model_type")
    if found != config_cls.model_type:
        raise ValueError(f"{spec.name}: {folder / 'config.json'} is a {found!r} checkpoint, but adapter "
                         f"{spec.adapter!r} opens {config_cls.model_type!r} models; pick the adapter for {found!r}")


def _place(model: nn.Module, device: str | None) -> nn.Module:
    if device is not None:
        model = model.to(device)
    return model.eval()


DTYPES = ("auto", "float32", "float16", "bfloat16")


def torch_dtype(name: str) -> torch.dtype:
    """A dtype name of the mission's runtime section (DTYPES) as torch's dtype."""
    if name not in DTYPES[1:]:
        raise ValueError(f"dtype {name!r}: use one of {DTYPES}")
    return getattr(torch, name)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def precision(spec: ModelSpec, device: str, gpu_default: torch.dtype | None = None) -> dict:
    """``from_pretrained``'s dtype argument: ``spec.dtype`` when set; else float32 on the CPU (half precision is
    slow or unsupported there), ``gpu_default`` elsewhere (None: the checkpoint's own precision)."""
    if spec.dtype not in (None, "auto"):
        return {"dtype": torch_dtype(spec.dtype)}
    if device == "cpu":
        return {"dtype": torch.float32}
    return {"dtype": gpu_default} if gpu_default is not None else {}


def spreads_over_gpus(spec: ModelSpec, device: str) -> bool:
    """Load with ``device_map="auto"`` (accelerate): a GPU machine and no device named in the spec, so a model
    larger than one GPU spreads over all of them."""
    return spec.device in (None, "auto") and device.startswith("cuda")


class TransformersAdapter:
    """Where and in which precision every transformers adapter opens its model class (``model_cls``, ``config_cls``).

    Subclasses add ``load``: the processors and the ``loaded_cls`` around the model ``open`` returns; the
    adapter's ``family`` and ``capabilities`` default to ``loaded_cls``'s.
    """

    name = ""
    family = ""
    capabilities: frozenset[str] = frozenset()
    model_cls = None
    config_cls = None
    # Config overrides every random-init build of this class needs (the spec's own come after and win),
    # e.g. a config default that only makes sense when weights are loaded.
    random_defaults: tuple[tuple[str, object], ...] = ()

    loaded_cls = None  # the LoadedModel class wrapping the model

    def __init_subclass__(cls, **kwargs):
        # An adapter's family and capabilities are its models' (the catalog reads them off the class).
        super().__init_subclass__(**kwargs)
        loaded = cls.__dict__.get("loaded_cls")
        for attr in ("family", "capabilities"):
            if loaded is not None and attr not in cls.__dict__:
                setattr(cls, attr, getattr(loaded, attr))

    def __init__(self, device: str | None = None):
        self.device = device or default_device()

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        return locate_pretrained(spec)

    def open(self, spec: ModelSpec):
        """(model, random_init, revision); float32 on CPU, where half precision is slow or unsupported.

        ``spec.dtype`` other than auto sets the precision; on a GPU machine with ``spec.device`` auto the
        weights load with ``device_map="auto"`` (accelerate), so a model larger than one GPU spreads over all.
        """
        kw = precision(spec, self.device)
        if self.random_defaults:
            spec = replace(spec, random_init_config=(*self.random_defaults, *spec.random_init_config))
        if spreads_over_gpus(spec, self.device):
            model, random_init, revision = open_pretrained(self.model_cls, spec, self.config_cls,
                                                           device_map="auto", **kw)
            self.device = str(next(model.parameters()).device)  # inputs go where the first layers are
            return model, random_init, revision
        return open_pretrained(self.model_cls, spec, self.config_cls, device=self.device, **kw)
