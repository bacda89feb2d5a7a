import numpy as np
import pandas as pd
from PIL import Image

from tasks.diagnostics import plots


def _per_layer(n_samples=5, n_layers=4):
    rng = np.random.default_rng(0)
    rows = [{"sample_id": f"s{s}", "layer": f"layer{i}", "layer_index": i,
             "attn_visual_share": rng.uniform(0.4, 0.9), "rollout_visual_share": rng.uniform(0.2, 0.6),
             "entropy_visual": 0.5, "entropy_text": 0.6, "mcs_entropy": 0.45}
            for s in range(n_samples) for i in range(n_layers)]
    return pd.DataFrame(rows)


def test_draw_all_writes_the_layer_profile_and_the_maps(tmp_path):
    per_layer = _per_layer()
    per_sample = pd.DataFrame({"sample_id": [f"s{i}" for i in range(5)], "modality_shapley_v": np.linspace(0, 1, 5)})
    maps = {"s0": {"layer0": np.eye(6) / 1, "layer1": np.full((6, 6), 1 / 6)}}
    drawn = plots.draw_all(per_sample, per_layer, 0.8, "model", tmp_path, maps=maps)
    assert [p.name for p in drawn] == [*plots.PLOTS, plots.MAPS_PLOT]
    for path in drawn:
        with Image.open(path) as image:
            assert image.size[0] > 200 and image.size[1] > 200
    assert len(plots.draw_all(per_sample, per_layer, 0.8, "model", tmp_path / "no_maps")) == len(plots.PLOTS)


def test_layer_profile_plot_draws_one_line_and_band_per_share_metric(tmp_path, monkeypatch):
    seen = {}
    real_save = plots._save

    def capture(fig, path):
        ax = fig.axes[0]
        seen["lines"] = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
        seen["bands"] = len(ax.collections)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    plots.plot_layer_profile(_per_layer(), "m", tmp_path / "p.png")
    assert seen["lines"] == ["attention share", "rollout share", "entropy MCS"] and seen["bands"] == 3
    unimodal = _per_layer().assign(attn_visual_share=np.nan, rollout_visual_share=np.nan, mcs_entropy=np.nan)
    plots.plot_layer_profile(unimodal, "m", tmp_path / "q.png")
    assert seen["lines"] == [] and seen["bands"] == 0


def test_layer_axes_have_integer_ticks(tmp_path, monkeypatch):
    ticks = []
    real_save = plots._save

    def capture(fig, path):
        out = real_save(fig, path)  # _save sets the integer locator
        ticks.extend(fig.axes[0].get_xticks())
        return out

    monkeypatch.setattr(plots, "_save", capture)
    plots.plot_layer_wise_attention(_per_layer(n_layers=3), "m", tmp_path / "l.png")
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_attention_maps_have_a_colour_bar_token_labels_and_the_boundary(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    maps = {"s0": {"layer0": np.full((6, 6), 1 / 6), "layer1": np.eye(6)}}
    plots.plot_attention_maps(maps, "m", tmp_path / "maps.png", spans=(1, 4, 4, 6))
    fig = figures[0]
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(fig.axes) == len(panels) + 1  # one shared colour bar
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["image", "text"]
    assert {line.get_xdata()[0] for line in panels[0].lines if line.get_xdata()[0] == line.get_xdata()[1]} >= {0.5, 3.5}


def test_plots_drawn_once_are_copied_for_the_same_tables_and_redrawn_for_others(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONAUDIT_HOME", str(tmp_path / "home"))
    per_layer = _per_layer()
    per_sample = pd.DataFrame({"sample_id": [f"s{i}" for i in range(5)], "modality_shapley_v": np.linspace(0, 1, 5)})
    first = plots.draw_all(per_sample, per_layer, 0.8, "model", tmp_path / "a")
    drawing = []
    real = plots.plt.subplots
    monkeypatch.setattr(plots.plt, "subplots", lambda *a, **k: drawing.append(1) or real(*a, **k))
    again = plots.draw_all(per_sample, per_layer, 0.8, "model", tmp_path / "b")
    assert not drawing and [p.read_bytes() for p in again] == [p.read_bytes() for p in first]
    assert all(p.parent == tmp_path / "b" for p in again)
    plots.draw_all(per_sample, per_layer, 0.9, "model", tmp_path / "c")  # another threshold: drawn anew
    assert drawing
    drawing.clear()
    changed = per_layer.assign(attn_visual_share=per_layer["attn_visual_share"] * 0.5)
    plots.draw_all(per_sample, changed, 0.8, "model", tmp_path / "d")  # other numbers: drawn anew
    assert drawing
