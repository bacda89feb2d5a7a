"""Blocked without the heavy imports: the light weights check says what the adapter would say."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.adapters.contract import ModelSpec, WeightsUnavailable
from tasks.adapters.openclip import OpenClipAdapter
from tasks.adapters.openclip_weights import require_weights

ROOT = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("source", ["laion2b_s34b_b79k", "/nowhere/vit.pt"])
def test_the_light_check_raises_what_the_adapter_raises(offline_hub, source):
    spec = ModelSpec(name="oc", adapter="openclip", arch="ViT-B-32", source=source)
    with pytest.raises(WeightsUnavailable) as light:
        require_weights(spec)
    with pytest.raises(WeightsUnavailable) as adapter:
        OpenClipAdapter(device="cpu").load(spec)
    assert str(light.value) == str(adapter.value)


def test_random_init_and_unknown_sources_are_left_to_the_adapter(offline_hub):
    require_weights(ModelSpec(name="oc", adapter="openclip", arch="ViT-B-32", source="", allow_random_init=True))
    require_weights(ModelSpec(name="oc", adapter="openclip", arch="ViT-B-32", source="no-such-tag"))  # a ValueError later


def test_deciding_blocked_imports_neither_open_clip_nor_transformers(tmp_path):
    code = textwrap.dedent("""
        import sys
        from tasks.adapters.contract import ModelSpec, WeightsUnavailable
        from tasks.adapters.registry import load_model
        for spec in (ModelSpec(name="b", adapter="blip-itm", source="Salesforce/blip-itm-base-coco"),
                     ModelSpec(name="o", adapter="openclip", arch="ViT-B-32", source="laion2b_s34b_b79k")):
            try:
                load_model(spec)
            except WeightsUnavailable:
                pass
            else:
                raise SystemExit("loaded")
        print(sorted(m for m in ("open_clip", "transformers", "torchvision", "timm") if m in sys.modules))
    """)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
