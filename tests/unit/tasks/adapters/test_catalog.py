"""What `fusionaudit models list` shows, and that a repeated listing imports no model library."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tasks.adapters.catalog import BUILTIN_TABLE, builtin_table, describe, describe_all, weights_here
from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import available

ROOT = Path(__file__).resolve().parents[4]


def test_the_shipped_table_is_what_the_adapters_say():
    """builtin_catalog.json is what `models list` shows without importing: it must match the adapter classes."""
    table = json.loads(BUILTIN_TABLE.read_text())
    assert table == builtin_table(), "stale: run `python -m tasks.adapters.catalog` after changing an adapter"
    infos = describe_all()
    assert [i.name for i in infos] == sorted(available())
    assert all(i == describe(i.name) for i in infos)


def test_weights_here_answers_like_the_adapters_own_locate(tmp_path):
    from tasks.adapters.registry import get_adapter

    for spec in (ModelSpec("o", "openclip", "openai", "ViT-B-32"), ModelSpec("v", "vilt", "dandelin/vilt-b32-finetuned-coco"),
                 ModelSpec("c", "openclip", str(tmp_path / "none.pt"), "ViT-B-32")):
        assert weights_here(spec) == get_adapter(spec.adapter).locate(spec)


def test_a_listing_imports_neither_open_clip_nor_transformers(tmp_path):
    code = textwrap.dedent("""
        import sys
        from tasks.adapters.contract import ModelSpec
        from tasks.adapters.catalog import describe_all, weights_here
        describe_all()
        weights_here(ModelSpec("o", "openclip", "openai", "ViT-B-32"))
        weights_here(ModelSpec("v", "vilt", "dandelin/vilt-b32-finetuned-coco"))
        print(sorted(m for m in ("open_clip", "transformers", "timm") if m in sys.modules))
    """)
    env = {"FUSIONAUDIT_HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
