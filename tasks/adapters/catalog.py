"""What each adapter can measure, known without loading a model: for ``fusionaudit models list`` and the README."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from tasks.adapters.base import ModelSpec
from tasks.adapters.registry import available

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


def weights_here(spec: ModelSpec) -> tuple[bool, list[str]]:
    """(available, places checked); an adapter without ``locate`` answers unknown as (False, [])."""
    adapter = adapter_class(spec.adapter)()
    if not hasattr(adapter, "locate"):
        return False, []
    try:
        return adapter.locate(spec)
    except Exception as exc:  # noqa: BLE001 - a bad source is shown, not raised, in a listing
        return False, [f"cannot check: {exc}"]
