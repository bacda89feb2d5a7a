"""Generative adapters load where and in which precision the spec says (issue 16, "lab scale"), offline.

``spec.dtype`` sets the parameters' precision and ``spec.device`` where they sit, as for every transformers
adapter (``TransformersAdapter.open``); bfloat16 runs on a CPU, so the smoke models check it here.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tasks.adapters.registry import get_adapter

GENERATIVE = ("llava", "llava-next", "qwen2-vl", "qwen2.5-vl", "internvl", "idefics")


@pytest.mark.parametrize("name", GENERATIVE)
def test_generative_adapters_honour_spec_dtype_and_device(name):
    adapter = get_adapter(name, device="cpu")
    spec = replace(adapter.smoke.spec(name), device="cpu", dtype="bfloat16")
    model = adapter.load(spec)
    assert {p.dtype for p in model.model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.model.parameters()} == {"cpu"}
    assert model.device == "cpu"


def test_without_a_dtype_a_cpu_run_is_float32():
    adapter = get_adapter("llava", device="cpu")
    model = adapter.load(replace(adapter.smoke.spec("llava"), device="cpu"))
    assert {p.dtype for p in model.model.parameters()} == {torch.float32}
