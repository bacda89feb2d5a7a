"""What each adapter can measure, known without loading a model: for ``fusionaudit models list`` and the README."""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import BUILTIN, WEIGHTS_LOCATE, available, builtin_hook

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


BUILTIN_TABLE = Path(__file__).with_name("builtin_catalog.json")


def describe_all() -> list[AdapterInfo]:
    """``describe`` of every adapter; the built-ins from ``builtin_catalog.json``, without importing them.

    Describing an adapter imports its module (transformers, open_clip: some 10 s). The built-ins' answers ship
    with the code (``python -m tasks.adapters.catalog`` rewrites the table; a unit test fails when it is stale);
    a plugin, or a plugin that replaces a built-in's name, is described by importing it.
    """
    table = json.loads(BUILTIN_TABLE.read_text(encoding="utf-8"))
    infos = []
    for name, path in sorted(available().items()):
        row = table.get(name) if path == BUILTIN.get(name) else None
        if row is None:
            infos.append(describe(name))
        else:
            caps = frozenset(row["capabilities"])
            infos.append(AdapterInfo(name, row["family"], caps, metrics_for(row["family"], caps)))
    return infos


def builtin_table() -> dict[str, dict]:
    """The built-ins as ``describe`` finds them (what ``builtin_catalog.json`` must hold)."""
    return {name: {"family": (i := describe(name)).family, "capabilities": sorted(i.capabilities)} for name in sorted(BUILTIN)}


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


if __name__ == "__main__":  # rewrite the built-ins' table after changing an adapter's family or capabilities
    BUILTIN_TABLE.write_text(json.dumps(builtin_table(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {BUILTIN_TABLE}")
