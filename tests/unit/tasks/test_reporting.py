"""Report text helpers: the one-screen summary and plots embedded for viewers without the files."""
import base64

from tasks.reporting import first_screen, inline_images

HANDOFF = "# Title\n\n- **Decision: GO**\n\n## Recommendation: GO\n\n![forest](../results/forest_plot.png)\n![gone](missing.png)\n"


def test_first_screen_stops_at_the_first_detail_section():
    assert first_screen(HANDOFF) == "# Title\n\n- **Decision: GO**\n"


def test_relative_png_links_become_data_uris_and_missing_files_stay_links(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "forest_plot.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "handoff").mkdir()
    out = inline_images(HANDOFF, tmp_path / "handoff")
    encoded = base64.b64encode(b"\x89PNG fake").decode()
    assert f"![forest](data:image/png;base64,{encoded})" in out
    assert "![gone](missing.png)" in out
