"""Bad input the other test files do not cover (docs/bad-input.md): each fails with one message naming the input and the fix."""
from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import FileSystemLoader, TemplateSyntaxError, UndefinedError
from typer.testing import CliRunner

from flows.cli import app
from flows.week1 import prepare_mission
from tasks.adapters.contract import ModelSpec, WeightsUnavailable
from tasks.adapters.registry import UnknownAdapter, available, get_adapter
from tasks.mission import MissionError
from tasks.reporting.rendering import make_env
from tasks.runtime.preflight import describe_template_error

WEEK1 = Path(__file__).resolve().parents[2] / "missions" / "week1.yaml"


@pytest.fixture
def template_env(tmp_path):
    """The reports' own environment (filters, StrictUndefined), reading templates from a test folder."""
    env = make_env()
    env.loader = FileSystemLoader(tmp_path)
    return env


def test_a_template_syntax_error_names_the_template_file_and_line(template_env, tmp_path):
    path = tmp_path / "broken.md.j2"
    path.write_text("# Handoff\n{% if models %}\n{{ value | cite }\n")
    with pytest.raises(TemplateSyntaxError) as err:
        template_env.get_template("broken.md.j2").render()
    assert describe_template_error(err.value) == f"{path}:3: unexpected '}}': fix the template's syntax"


def test_an_undefined_name_in_a_template_names_the_file_and_line(template_env, tmp_path):
    path = tmp_path / "undef.md.j2"
    path.write_text("# Handoff\nDecision: {{ decison.value }}\n")  # misspelt
    with pytest.raises(UndefinedError) as err:
        template_env.get_template("undef.md.j2").render(decision="GO")
    assert describe_template_error(err.value) == (f"{path}:2: UndefinedError: 'decison' is undefined: "
                                                  "fix the template or the value it reads")


def test_unknown_adapter_name_lists_the_known_ones():
    with pytest.raises(UnknownAdapter) as err:
        get_adapter("gpt-17")
    assert str(err.value) == (f"unknown adapter 'gpt-17': use one of {sorted(available())} "
                              "or install a plugin that provides it")


def test_a_mission_with_an_unknown_adapter_fails_before_anything_runs(tmp_path):
    mission = tmp_path / "m.yaml"
    mission.write_text(WEEK1.read_text().replace("adapter: openclip", "adapter: open-clip", 1))
    with pytest.raises(MissionError) as err:
        prepare_mission(str(mission))
    assert str(err.value) == (f"{mission}: model openclip-vit-b-32 uses unknown adapter 'open-clip': "
                              f"use one of {sorted(available())}")


def test_missing_weights_name_the_folder_searched_and_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    spec = ModelSpec(name="clip-vit-b-32", adapter="clip", source="openai/clip-vit-base-patch32")
    with pytest.raises(WeightsUnavailable) as err:  # fails fast offline: tests/unit/tasks/adapters/test_transformers_plumbing.py times it
        get_adapter("clip").load(spec)
    folder = tmp_path / "hf" / "hub" / "models--openai--clip-vit-base-patch32"
    assert err.value.searched[0] == str(folder)
    message = str(err.value)
    assert message.startswith("clip-vit-b-32: openai/clip-vit-base-patch32 is not in the local hub cache and HF_HUB_OFFLINE is set.")
    assert f"hf download openai/clip-vit-base-patch32 --cache-dir {tmp_path / 'hf' / 'hub'}" in message


# ------------------------------------------------------------------ the CLI: no traceback unless --debug

runner = CliRunner()


def test_malformed_mission_is_one_line_on_stderr_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text(WEEK1.read_text().replace("priority: HIGH", "priority: URGENT", 1))
    result = runner.invoke(app, ["cycle", "run", "--mission", str(bad)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {bad}: field 'actions.0.priority': Input should be 'HIGH', 'MEDIUM' or 'LOW': use one of the values listed"]
    assert "Traceback" not in result.output


def test_with_debug_the_same_error_raises_with_its_traceback(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("id: x\n")
    result = runner.invoke(app, ["cycle", "run", "--mission", str(bad), "--debug"])
    assert isinstance(result.exception, MissionError)
    assert result.exc_info[2] is not None  # the traceback is there for the user who asked


def test_runtime_overrides_apply_and_bad_ones_name_the_option():
    mission = prepare_mission(str(WEEK1), runtime={"device": "cpu", "dtype": None, "batch_size": 8})
    assert (mission.runtime.device, mission.runtime.dtype, mission.runtime.batch_size) == ("cpu", "auto", 8)
    with pytest.raises(MissionError, match=r"--device 'gpu0'.*device: auto, cpu, cuda, cuda:N or mps"):
        prepare_mission(str(WEEK1), runtime={"device": "gpu0"})
    with pytest.raises(MissionError, match=r"--batch-size 0"):
        prepare_mission(str(WEEK1), runtime={"batch_size": 0})
    out = CliRunner().invoke(app, ["cycle", "run", "--dtype", "fp8"])
    assert out.exit_code == 2 and "--dtype 'fp8'" in out.output and "Traceback" not in out.output


def test_an_adapter_gets_the_device_it_is_asked_for():
    assert get_adapter("openclip", device="cpu").device == "cpu"
    assert get_adapter("zoo", device="cpu").name == "zoo"  # takes no device: built as before
