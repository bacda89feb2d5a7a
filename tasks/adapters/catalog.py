"""What each adapter can measure, known without loading a model: for ``fusionaudit models list`` and the README."""
from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import WEIGHTS_LOCATE, available, builtin_hook
from tasks.runtime.paths import cache_dir

# metric -> the capability it needs (DESIGN.md "Metrics"); attention shares need cross-modal attention in one sequence
METRIC_NEEDS = {
    "modality_shapley_v": "mask",
    "ablation_visual_share": "mask",
    "mm_shap_v": "mask_tokens",
    "attn_visual_share": "trace",
    "mcs_entropy": "trace",
    "rollout_visual_share": "rollout",
    "relevance_visual_share": "relevance",
}
# Families whose attention never mixes the modalities in one sequence: the attention share is undefined there.
NO_SHARED_ATTENTION = ("dual encoder", "cross-attention fusion (ITM)", "Flamingo-style", "remote code")


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    family: str
    capabilities: frozenset[str]
    metrics: tuple[str, ...]


def metrics_for(family: str, capabilities: frozenset[str]) -> tuple[str, ...]:
    shared = not any(f in family for f in NO_SHARED_ATTENTION)
    # both attention metrics need image and text tokens in one attention sequence
    return tuple(m for m, need in METRIC_NEEDS.items()
                 if need in capabilities and (shared or m not in ("attn_visual_share", "mcs_entropy")))


def adapter_class(name: str):
    module, _, attr = available()[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def describe(name: str) -> AdapterInfo:
    cls = adapter_class(name)
    family, caps = getattr(cls, "family", "unknown"), frozenset(getattr(cls, "capabilities", ()))
    return AdapterInfo(name, family, caps, metrics_for(family, caps))


def describe_all() -> list[AdapterInfo]:
    """``describe`` of every adapter, kept on disk while the adapters' code and the installed plugins stay the same.

    Describing an adapter imports its module (transformers, open_clip: some 10 s); the answer only changes with
    that code, so `fusionaudit models list` reads it back from ``<home>/cache/adapter_catalog.json``.
    """
    names = available()
    stamp = _code_stamp(names)
    path = cache_dir() / "adapter_catalog.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("stamp") == stamp:
            return [AdapterInfo(r["name"], r["family"], frozenset(r["capabilities"]), tuple(r["metrics"]))
                    for r in cached["adapters"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: describe afresh
    infos = [describe(name) for name in sorted(names)]
    rows = [{"name": i.name, "family": i.family, "capabilities": sorted(i.capabilities), "metrics": list(i.metrics)}
            for i in infos]
    try:
        path.write_text(json.dumps({"stamp": stamp, "adapters": rows}, indent=1), encoding="utf-8")
    except OSError:
        pass  # a read-only home only costs the next listing its imports
    return infos


def _code_stamp(names: dict[str, str]) -> str:
    """Changes when an adapter's code may have: the adapters package's files, the plugins' names and versions."""
    here = Path(__file__).parent
    files = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in here.rglob("*.py"))
    plugins = sorted((ep.name, ep.value, ep.dist.version if ep.dist else "") for ep in entry_points(group="fusionaudit.adapters"))
    return hashlib.sha256(repr((sorted(names.items()), files, plugins)).encode()).hexdigest()


def weights_here(spec: ModelSpec) -> tuple[bool, list[str]]:
    """(available, places checked); an adapter without ``locate`` answers unknown as (False, [])."""
    try:
        light = builtin_hook(WEIGHTS_LOCATE, spec.adapter)  # a built-in answers without importing its model library
        if light is not None and (spec.adapter != "openclip" or spec.arch):
            return light(spec)
        adapter = adapter_class(spec.adapter)()
        if not hasattr(adapter, "locate"):
            return False, []
        return adapter.locate(spec)
    except Exception as exc:  # noqa: BLE001 - a bad source is shown, not raised, in a listing
        return False, [f"cannot check: {exc}"]
