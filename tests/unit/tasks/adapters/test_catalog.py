"""What `fusionaudit models list` shows, and that a repeated listing imports no model library."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tasks.adapters.catalog import describe, describe_all, weights_here
from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import available

ROOT = Path(__file__).resolve().parents[4]


def test_the_cached_catalog_is_what_describe_says_and_is_refreshed_when_it_is_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONAUDIT_HOME", str(tmp_path))
    first = describe_all()
    assert [i.name for i in first] == sorted(available())
    assert all(i == describe(i.name) for i in first)
    path = tmp_path / "cache" / "adapter_catalog.json"
    stale = json.loads(path.read_text())
    stale["stamp"], stale["adapters"] = "older code", stale["adapters"][:1]
    path.write_text(json.dumps(stale))
    assert describe_all() == first  # a stale stamp is described afresh, never trusted


def test_weights_here_answers_like_the_adapters_own_locate(tmp_path):
    from tasks.adapters.registry import get_adapter

    for spec in (ModelSpec("o", "openclip", "openai", "ViT-B-32"), ModelSpec("v", "vilt", "dandelin/vilt-b32-finetuned-coco"),
                 ModelSpec("c", "openclip", str(tmp_path / "none.pt"), "ViT-B-32")):
        assert weights_here(spec) == get_adapter(spec.adapter).locate(spec)


def test_a_repeated_listing_imports_neither_open_clip_nor_transformers(tmp_path):
    code = textwrap.dedent("""
        import sys
        from tasks.adapters.catalog import describe_all, weights_here
        from tasks.adapters.contract import ModelSpec
        describe_all()
        weights_here(ModelSpec("o", "openclip", "openai", "ViT-B-32"))
        weights_here(ModelSpec("v", "vilt", "dandelin/vilt-b32-finetuned-coco"))
        print(sorted(m for m in ("open_clip", "transformers", "timm") if m in sys.modules))
    """)
    env = {"FUSIONAUDIT_HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    runs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    assert runs[0].stdout.strip().splitlines()[-1] != "[]"  # the first listing describes every adapter
    assert runs[1].stdout.strip().splitlines()[-1] == "[]"
