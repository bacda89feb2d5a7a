"""Adapter registry: built-in families plus plugins from the ``fusionaudit.adapters`` entry point."""
from __future__ import annotations

import importlib
import inspect
from functools import lru_cache
from importlib.metadata import entry_points

from tasks.adapters.contract import Adapter, LoadedModel, ModelSpec

BUILTIN = {
    "zoo": "tasks.adapters.zoo.calibration:ZooAdapter",
    "zoo-spatial": "tasks.adapters.zoo.spatial:SpatialZooAdapter",
    "openclip": "tasks.adapters.openclip:OpenClipAdapter",
    "clip": "tasks.adapters.hf_clip:ClipAdapter",
    "align": "tasks.adapters.align:AlignAdapter",
    "blip-itm": "tasks.adapters.blip:BlipItmAdapter",
    "blip2-itm": "tasks.adapters.blip2:Blip2ItmAdapter",
    "vilt": "tasks.adapters.vilt:ViltAdapter",
    "llava": "tasks.adapters.llava:LlavaAdapter",
    "llava-next": "tasks.adapters.llava:LlavaNextAdapter",
    "idefics": "tasks.adapters.idefics:IdeficsAdapter",
    "qwen2-vl": "tasks.adapters.qwen2_vl:Qwen2VLAdapter",
    "qwen2.5-vl": "tasks.adapters.qwen2_vl:Qwen25VLAdapter",
    "internvl": "tasks.adapters.internvl:InternVLAdapter",
    "cogvlm2": "tasks.adapters.cogvlm2:CogVLM2Adapter",
    "planted": "tasks.adapters.zoo.planted:PlantedAdapter",  # closed-form planted truths: check the verdicts
}


# Built-in adapters whose weights a light check finds (or not) before the adapter module, and with it
# transformers, is imported: deciding Blocked costs no heavy import.
_HF = "tasks.adapters.hub:require_weights"
WEIGHTS_CHECK = {name: _HF for name in ("clip", "align", "blip-itm", "blip2-itm", "vilt", "llava", "llava-next",
                                        "idefics", "qwen2-vl", "qwen2.5-vl", "internvl")}
WEIGHTS_CHECK["openclip"] = "tasks.adapters.openclip_weights:require_weights"
# The same light look-up answering "are the weights here?" (`fusionaudit models list`), as the adapter's ``locate``.
WEIGHTS_LOCATE = {name: "tasks.adapters.hub:locate_pretrained" for name in WEIGHTS_CHECK}
WEIGHTS_LOCATE["openclip"] = "tasks.adapters.openclip_weights:locate"


def builtin_hook(table: dict[str, str], adapter: str):
    """The light function ``table`` names for ``adapter``, if it is a built-in not overridden by a plugin."""
    path = table.get(adapter) if available().get(adapter) == BUILTIN.get(adapter) else None
    if path is None:
        return None
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class UnknownAdapter(ValueError):
    pass


def available() -> dict[str, str]:
    """Adapter name → import path; plugins come only from installed entry points."""
    found = dict(BUILTIN)
    for ep in entry_points(group="fusionaudit.adapters"):
        found.setdefault(ep.name, ep.value)
    return found


def get_adapter(name: str, device: str | None = None) -> Adapter:
    """An adapter instance; ``device`` (other than None/"auto") goes to adapters that take one."""
    known = available()
    if name not in known:
        raise UnknownAdapter(f"unknown adapter {name!r}: use one of {sorted(known)} or install a plugin that provides it")
    module, _, attr = known[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if device in (None, "auto") or "device" not in inspect.signature(cls).parameters:
        return cls()
    return cls(device=device)


@lru_cache(maxsize=4)
def load_model(spec: ModelSpec) -> LoadedModel:
    """Open a model once per process; the adapter stage and the diagnostics share it.

    Raises ``WeightsUnavailable`` (Blocked) from the light weights check where the adapter has one.
    """
    check = builtin_hook(WEIGHTS_CHECK, spec.adapter)
    if check is not None:
        check(spec)
    return get_adapter(spec.adapter, spec.device).load(spec)
