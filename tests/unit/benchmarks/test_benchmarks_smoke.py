"""Each benchmark's main() end to end on tiny open_clip configs: figures come back positive and consistent.

The configs are the real CLIP class at toy sizes. The long-sequence one
keeps 785 image tokens (224 px / 8 px patches) at width 32 so that one
attention map (4 heads x 785^2 floats, ~10 MiB) is big enough to show in
the peak RSS, while a forward still takes milliseconds.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import diagnostic_memory, long_sequence_trace, trace_overhead
from benchmarks._measure import interleaved_times, peak_rss_of, positive_finite, random_openclip, \
    register_open_clip_arch
from tasks.data.synthetic import make_synthetic

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}
TINY = json.dumps({"embed_dim": 16, "text_cfg": TEXT_CFG,
                   "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 16}})
LONG = json.dumps({"embed_dim": 16, "text_cfg": TEXT_CFG,
                   "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8}})


def _all_positive_finite(figures: dict) -> bool:
    return bool(figures) and all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in figures.values())


def test_positive_finite_rejects_a_broken_measurement():
    assert positive_finite({"a": 1.5}) == {"a": 1.5}
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive and finite"):
            positive_finite({"peak": bad})


def test_interleaved_times_runs_each_variant_warmup_plus_repeats_times():
    calls = {"a": 0, "b": 0}
    times = interleaved_times({k: (lambda k=k: calls.__setitem__(k, calls[k] + 1)) for k in calls}, repeats=3, warmup=2)
    assert calls == {"a": 5, "b": 5}
    assert {k: len(v["wall"]) for k, v in times.items()} == {"a": 3, "b": 3}


def test_peak_rss_sees_a_torch_tensor_tracemalloc_would_miss():
    size = 64 * 1024 * 1024
    baseline, peak, _ = peak_rss_of(lambda: torch.ones(size // 4).sum())
    assert peak - baseline >= 0.9 * size


def test_register_open_clip_arch_cuts_depth_without_touching_the_original():
    import open_clip

    name = register_open_clip_arch("ViT-B-32", layers=3)
    assert name == "ViT-B-32-3L"
    assert open_clip.get_model_config(name)["vision_cfg"]["layers"] == 3
    assert open_clip.get_model_config("ViT-B-32")["vision_cfg"]["layers"] == 12


def test_naive_baseline_computes_the_same_summary_as_trace():
    model = random_openclip(register_open_clip_arch("bench-tiny", TINY))
    samples = make_synthetic(3, seed=0)
    inputs = model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])
    naive = long_sequence_trace.naive_trace(model, inputs)
    assert naive["entropy_visual"].shape == (3, 4)  # 2 visual + 2 text layers
    assert long_sequence_trace.same_summary(model.trace(inputs), naive)
    naive["entropy_visual"][0, 0] += 0.1
    assert not long_sequence_trace.same_summary(model.trace(inputs), naive)


def test_trace_overhead_main(capsys):
    figures = trace_overhead.main(["--quick", "--arch", "bench-tiny", "--model-config", TINY, "--image-size", "32"])
    assert _all_positive_finite(figures)
    assert figures["traced_over_plain_cpu"] == pytest.approx(figures["traced_cpu_s"] / figures["plain_cpu_s"])
    assert "traced / plain (cpu)" in capsys.readouterr().out


@pytest.mark.slow
def test_long_sequence_trace_main(capsys):
    figures = long_sequence_trace.main(["--quick", "--arch", "bench-long", "--model-config", LONG,
                                        "--image-size", "224"])
    assert _all_positive_finite(figures)
    assert figures["memory_ratio"] == pytest.approx(figures["naive_peak_above_mib"] / figures["traced_peak_above_mib"])
    assert "785 image tokens" in capsys.readouterr().out


@pytest.mark.slow
def test_diagnostic_memory_main(capsys):
    figures = diagnostic_memory.main(["--arch", "bench-tiny", "--model-config", TINY,
                                      "--small", "4", "--large", "12", "--batch-size", "4", "--repeats", "1"])
    assert _all_positive_finite(figures)
    assert figures["ratio"] == pytest.approx(figures["large_peak_above_mib"] / figures["small_peak_above_mib"])
    assert "12 / 4" in capsys.readouterr().out


def test_diagnose_cost_main(capsys):
    from benchmarks import diagnose_cost

    figures = diagnose_cost.main(["--quick", "--arch", "bench-tiny", "--model-config", TINY, "--batch", "4",
                                  "--repeats", "1"])
    assert _all_positive_finite(figures)
    assert figures["diagnose_over_plain_cpu"] == pytest.approx(figures["diagnose_cpu_s"] / figures["plain_cpu_s"])
    assert "diagnose / plain (cpu)" in capsys.readouterr().out


def test_cycle_sampler_files_a_sample_under_the_deepest_prefect_mlflow_or_project_frame(tmp_path):
    import importlib.util
    import sys

    from benchmarks import _cycle_profile as profile

    def frame_in(path: str, inner=None, name: str = "f"):
        """A real frame whose code says it lives at ``path`` (in ``name``), optionally calling ``inner`` from there."""
        space = {"sys": sys, "inner": inner}
        exec(compile(f"def {name}():\n    return inner() if inner else sys._getframe()", path, "exec"), space)
        return space[name]

    def imported(path: str, inner, name: str = "fa_fake_module"):
        """The frame ``inner`` sees while module ``name`` at ``path`` is imported (its body calls ``inner``)."""
        import builtins

        file = tmp_path / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("import builtins\nseen = builtins._fa_inner[__name__]()\n")
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        builtins.__dict__.setdefault("_fa_inner", {})[name] = inner
        try:
            spec.loader.exec_module(module)
        finally:
            del builtins._fa_inner[name]
        return module.seen

    prefect = "/venv/lib/python3.11/site-packages/prefect/engine.py"
    mlflow_utils = "/venv/lib/python3.11/site-packages/mlflow/tracking/_tracking_service/utils.py"
    sqlalchemy = "/venv/lib/python3.11/site-packages/sqlalchemy/engine/base.py"
    project = str(profile.ROOT / "tasks" / "stage.py")
    assert profile._side(frame_in(prefect)()) == "calls"
    assert profile._side(frame_in(project)()) == "work"
    assert profile._side(frame_in(project, frame_in(prefect))()) == "calls"  # the project called into Prefect
    assert profile._side(frame_in(prefect, frame_in(project))()) == "work"  # Prefect ran the project's task
    assert profile._side(frame_in("/usr/lib/python3.11/threading.py")()) == "other"
    assert profile._side(imported("/venv/lib/python3.11/site-packages/prefect/flows.py", frame_in(sqlalchemy))) \
        == "startup"  # importing Prefect and what it imports
    assert profile._side(imported("/app/tasks/stages/x.py", frame_in(prefect))) == "startup"  # a module applying @task
    # a library the project imports itself is the project's cost, also when Prefect happens to import it first
    numpy = "/venv/lib/python3.11/site-packages/numpy/_core/multiarray.py"
    assert "numpy" in profile.PROJECT_LIBRARIES and "sqlalchemy" not in profile.PROJECT_LIBRARIES
    assert profile._side(imported("/venv/lib/python3.11/site-packages/prefect/flows.py",
                                  lambda: imported(numpy, frame_in(numpy), "numpy._core.multiarray"), "prefect.flows")) == "work"
    assert profile._side(imported("/venv/lib/python3.11/site-packages/prefect/flows.py",
                                  lambda: imported(sqlalchemy, frame_in(sqlalchemy), "sqlalchemy.engine.base"),
                                  "prefect.flows")) == "startup"
    assert profile._side(frame_in(project, frame_in(mlflow_utils, frame_in(sqlalchemy), "_get_sqlalchemy_store"))()) \
        == "startup"  # building MLflow's store
    assert profile._side(frame_in(project, frame_in(mlflow_utils, frame_in(sqlalchemy), "log_batch"))()) == "calls"
