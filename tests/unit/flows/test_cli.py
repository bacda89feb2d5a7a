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
