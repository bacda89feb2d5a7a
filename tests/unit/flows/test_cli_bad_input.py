"""Bad CLI options and mission fields, through the real Typer app: one line on stderr naming the input, exit 2, no traceback.

Every case fails before anything runs (no Prefect flow, no MLflow run).
docs/bad-input.md lists each case with its message.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

WEEK1 = Path(__file__).resolve().parents[3] / "missions" / "week1.yaml"
runner = CliRunner()


def _mission(tmp_path: Path, old: str, new: str, name: str = "m.yaml") -> Path:
    text = WEEK1.read_text()
    assert old in text, old
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


def _one_line_exit_2(args: list[str], *expected: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in expected:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("old, new, expected", [
    ("title: \"Week 1: is attention collapse field-wide?\"", "title: \"Week 1\"\nstart_date: 2025-13-45",
     ("field 'start_date'", "2025-13-45")),
    ("baseline: 0.5", "baseline: .nan", ("field 'gates.baseline'", "finite number")),
    ('op: ">=", value: 1}', 'op: ">=", value: .inf}', ("acceptance.0.value", "finite number")),
    ("seed: 0", "seed: -1", ("field 'dataset.seed'", "greater than or equal to 0")),
    ("deadline_hours: 24", "deadline_hours: 1000000000000", ("deadline_hours", "less than or equal to 8784")),
    ("title: \"Week 1: is attention collapse field-wide?\"", "title: \"" + "x" * 300 + "\"", ("field 'title'", "at most 200")),
    ("- name: zoo-balanced", "- name: " + "z" * 300, ("models.", "name", "at most 64")),
    ("source: balanced", "source: ../../etc/passwd", ("zoo source '../../etc/passwd'", "balanced")),
])
def test_bad_mission_fields_name_the_field(tmp_path, old, new, expected):
    mission = _mission(tmp_path, old, new)
    _one_line_exit_2(["cycle", "run", "--mission", str(mission)], str(mission), *expected)


@pytest.mark.parametrize("command", [["cycle", "run"], ["cycle", "list"], ["models", "list"]])
def test_a_folder_as_mission_is_named(tmp_path, command):
    _one_line_exit_2(command + ["--mission", str(tmp_path)], str(tmp_path), "is a folder, not a mission file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_mission_or_report_is_refused_not_read(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    _one_line_exit_2(["cycle", "list", "--mission", str(fifo)], "not a regular file")
    _one_line_exit_2(["verify", str(fifo)], "not a regular file")


def test_rich_markup_in_a_path_is_printed_verbatim(tmp_path):
    weird = tmp_path / "a[/]b[bold]c.yaml"
    line = _one_line_exit_2(["cycle", "run", "--mission", str(weird)], "mission file not found")
    assert "[/]b[bold]c.yaml" in line


@pytest.mark.parametrize("args, expected", [
    (["--samples", "1000000000"], ("--samples 1000000000", "at most 100000")),
    (["--models", "zoo-balanced,zoo-balanced"], ("--models names ['zoo-balanced'] more than once",)),
    (["--models", ","], ("--models names no model",)),
    (["--previous", "20260101T000000Z-abcdef"], ("--previous 20260101T000000Z-abcdef needs --next",)),
])
def test_bad_options_name_the_option(args, expected):
    _one_line_exit_2(["cycle", "run", *args], *expected)


@pytest.mark.parametrize("args, expected", [
    (["--mission", "../../.."], "is not a mission id"),
    (["--mission", "week1-attention-collapse", "../../etc"], "is not a cycle id"),
])
def test_report_show_reads_only_inside_the_reports_folder(args, expected):
    _one_line_exit_2(["report", "show", *args], expected)
