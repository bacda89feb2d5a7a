"""CogVLM2: remote code is never run on its own, so every source but a complete trusted folder is Blocked."""
from __future__ import annotations

import json

import pytest
import torch

from tasks.adapters.cogvlm2 import DEFAULT_REPO, CogVLM2Adapter, missing_parts
from tasks.adapters.contract import ModelSpec, WeightsUnavailable

AUTO_MAP = {"AutoConfig": "configuration_cogvlm.CogVLMConfig",
            "AutoModelForCausalLM": "modeling_cogvlm.CogVLMForCausalLM"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def _spec(source: str = "", random: bool = False) -> ModelSpec:
    return ModelSpec(name="cogvlm2", adapter="cogvlm2", source=source, allow_random_init=random)


def _write_config(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "cogvlm2", "auto_map": AUTO_MAP}))


def test_a_hub_id_is_blocked_and_says_why(hub_cache):
    adapter = CogVLM2Adapter(device="cpu")
    with pytest.raises(WeightsUnavailable) as info:
        adapter.load(_spec(DEFAULT_REPO))
    error = info.value
    assert "trust_remote_code" in error.reason and "does not run downloaded code" in error.reason
    assert error.searched[0] == str(hub_cache / "models--THUDM--cogvlm2-llama3-chat-19B")
    assert f"hf download {DEFAULT_REPO}" in error.mitigation and "source" in error.mitigation
    assert adapter.locate(_spec(DEFAULT_REPO)) == (False, error.searched)
    assert "trace" not in adapter.capabilities  # the repo's attention returns no maps


def test_a_cached_hub_copy_is_still_blocked_but_named(hub_cache):
    repo = hub_cache / "models--THUDM--cogvlm2-llama3-chat-19B"
    _write_config(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    with pytest.raises(WeightsUnavailable) as info:
        CogVLM2Adapter(device="cpu").load(_spec())  # no source: the default repo
    assert f"set source: {repo / 'snapshots' / COMMIT}" in info.value.mitigation


def test_random_init_cannot_stand_in(hub_cache):
    with pytest.raises(WeightsUnavailable, match="--allow-random-init cannot help"):
        CogVLM2Adapter(device="cpu").load(_spec(DEFAULT_REPO, random=True))


def test_an_incomplete_local_folder_lists_what_is_missing(tmp_path):
    folder = tmp_path / "cogvlm2"
    with pytest.raises(WeightsUnavailable) as info:
        CogVLM2Adapter(device="cpu").load(_spec(str(folder)))  # does not exist
    assert info.value.searched == [str(folder)]
    _write_config(folder)
    (folder / "configuration_cogvlm.py").write_text("")
    assert missing_parts(folder) == ["modeling_cogvlm.py",
                                     "the weights (model.safetensors[.index.json] with all shards)"]
    with pytest.raises(WeightsUnavailable, match="lacks modeling_cogvlm.py"):
        CogVLM2Adapter(device="cpu").load(_spec(str(folder)))
    assert CogVLM2Adapter().locate(_spec(str(folder)))[0] is False
    (folder / "config.json").write_text(json.dumps({"model_type": "cogvlm2"}))
    assert missing_parts(folder)[0].startswith("an auto_map")


def _trusting_folder(folder, marker):
    """A complete local folder whose code writes ``marker`` when it is imported (what the audit planted)."""
    _write_config(folder)
    plant = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (folder / "configuration_cogvlm.py").write_text(plant + "from transformers import PretrainedConfig\n"
                                                    "class CogVLMConfig(PretrainedConfig):\n    model_type = 'cogvlm2'\n")
    (folder / "modeling_cogvlm.py").write_text(plant)
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize("mission_opt_in, cli_opt_in, missing", [
    (False, False, "missing: the mission's trust_remote_code: true on model cogvlm2 and the CLI flag --trust-remote-code"),
    (True, False, "missing: the CLI flag --trust-remote-code"),
    (False, True, "missing: the mission's trust_remote_code: true on model cogvlm2"),
])
def test_a_local_remote_code_folder_is_blocked_without_both_opt_ins(tmp_path, monkeypatch, mission_opt_in, cli_opt_in, missing):
    marker = tmp_path / "marker"
    folder = _trusting_folder(tmp_path / "cogvlm2", marker)
    monkeypatch.setenv("FUSIONAUDIT_TRUST_REMOTE_CODE", "1") if cli_opt_in else monkeypatch.delenv(
        "FUSIONAUDIT_TRUST_REMOTE_CODE", raising=False)
    spec = ModelSpec(name="cogvlm2", adapter="cogvlm2", source=str(folder), trust_remote_code=mission_opt_in)
    with pytest.raises(WeightsUnavailable) as info:
        CogVLM2Adapter(device="cpu").load(spec)
    assert missing in str(info.value) and "--trust-remote-code" in info.value.mitigation
    assert not marker.exists()  # the folder's code never ran


def test_with_both_opt_ins_the_code_runs_and_is_hashed(tmp_path, monkeypatch):
    from tasks.adapters.cogvlm2 import code_hash

    marker = tmp_path / "marker"
    folder = _trusting_folder(tmp_path / "cogvlm2", marker)
    before = code_hash(folder)
    monkeypatch.setenv("FUSIONAUDIT_TRUST_REMOTE_CODE", "1")
    spec = ModelSpec(name="cogvlm2", adapter="cogvlm2", source=str(folder), trust_remote_code=True)
    with pytest.raises(Exception):  # noqa: B017 - the planted folder has no real weights: loading stops after its code ran
        CogVLM2Adapter(device="cpu").load(spec)
    assert marker.read_text() == "ran"
    assert code_hash(folder) == before and len(before) == 64
    (folder / "modeling_cogvlm.py").write_text("# changed\n")
    assert code_hash(folder) != before  # the logged hash names exactly the code that ran


class _Opened(Exception):
    """Raised by the stand-in from_pretrained once it has seen the arguments."""


@pytest.mark.parametrize("dtype, expected", [("bfloat16", torch.bfloat16), ("float16", torch.float16),
                                             (None, torch.float32), ("auto", torch.float32)])
def test_cogvlm2_asks_for_the_spec_dtype(tmp_path, monkeypatch, dtype, expected):
    """CogVLM2 runs only a trusted local copy; the call that opens it gets the spec's precision."""
    import transformers

    folder = _trusting_folder(tmp_path / "cogvlm2", tmp_path / "marker")
    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise _Opened

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setenv("FUSIONAUDIT_TRUST_REMOTE_CODE", "1")
    spec = ModelSpec(name="cogvlm2", adapter="cogvlm2", source=str(folder), trust_remote_code=True, device="cpu",
                     dtype=dtype)
    with pytest.raises(_Opened):
        CogVLM2Adapter(device="cpu").load(spec)
    assert seen["dtype"] == expected and "device_map" not in seen
