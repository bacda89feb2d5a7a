"""CLI error paths: one clear message, a non-zero exit, no traceback (and nothing runs)."""
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def test_malformed_mission_fails_before_anything_runs(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("id: x\ntitle: t\n")
    result = runner.invoke(app, ["cycle", "run", "--mission", str(bad)])
    assert result.exit_code == 2
    assert "m.yaml: field" in result.output and "Traceback" not in result.output


def test_unknown_model_names_the_choices():
    result = runner.invoke(app, ["cycle", "run", "--models", "gpt-17"])
    assert result.exit_code == 2
    assert "unknown model(s) ['gpt-17']" in result.output and "zoo-balanced" in result.output


def test_unreachable_tracking_store_is_one_message(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = runner.invoke(app, ["cycle", "run"])
    assert result.exit_code == 2
    assert "not reachable" in result.output and "Traceback" not in result.output


def test_verify_exits_non_zero_on_an_uncited_number(tmp_path):
    report = tmp_path / "r.md"
    report.write_text("We measured 0.93 on every model.\n")
    result = runner.invoke(app, ["verify", str(report)])
    assert result.exit_code == 1 and "number 0.93 has no citation" in result.output


def test_report_show_without_cycles_says_what_to_run():
    result = runner.invoke(app, ["report", "show", "--mission", "no-such-mission"])
    assert result.exit_code == 2 and "fusionaudit cycle run" in result.output


def _rows(table_text: str) -> dict[str, str]:
    """A rich table's rows by their first cell, folded continuation lines joined (whatever the console width)."""
    rows: dict[str, str] = {}
    key = None
    for line in table_text.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")] if line.startswith("│") else []
        if not cells:
            continue
        if cells[0]:
            key = cells[0]
            rows[key] = " ".join(cells[1:])
        elif key:
            rows[key] += " " + " ".join(cells[1:])
    return rows


def test_models_list_shows_families_metrics_and_where_weights_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    adapters, _, models = result.output.partition("models of mission")
    rows = _rows(adapters)
    assert "LLM with image tokens" in rows["llava"] and "attn_visual_share" in rows["llava"].replace(" ", "")
    assert "dual encoder" in rows["clip"] and "attn_visual_share" not in rows["clip"].replace(" ", "")
    assert "Flamingo-style" in rows["idefics"]
    lines = {line.split(" ")[1]: line for line in models.splitlines() if line.startswith("- ")}
    assert "weights here: no" in lines["clip-vit-b-32"] and "models--openai--clip-vit-base-patch32" in lines["clip-vit-b-32"]
    assert "weights here: yes" in lines["zoo-balanced"] and "(alternative)" in lines["vilt-b32"]


def test_cycle_list_without_cycles_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")  # a store no other test wrote to
    result = runner.invoke(app, ["cycle", "list"])
    assert result.exit_code == 0 and "no cycles of mission week1-attention-collapse yet" in result.output


def test_help_shows_plain_types(monkeypatch, capsys):
    import pytest as _pytest

    from flows.cli import main

    for argv in (["cycle", "run", "--help"], ["report", "show", "--help"]):
        monkeypatch.setattr("sys.argv", ["fusionaudit", *argv])
        with _pytest.raises(SystemExit) as exit_:
            main()
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and "<" not in out, out  # no <bool>, <str>, <list[Path]>
    assert "[handoff|summary]" in out and "CYCLE" in out


def test_report_show_refuses_a_which_outside_its_choices():
    result = CliRunner().invoke(app, ["report", "show", "--which", "nope"])
    assert result.exit_code == 2 and "handoff" in result.output and "summary" in result.output
