"""Where a transformers checkpoint lives: the hub cache, a local folder, or a download.

- ``resolve_pretrained``: a spec's source → a local checkpoint folder (a
  local directory, or a hub id found in the Hugging Face cache), or
  ``WeightsUnavailable`` naming the exact folders looked in and the command
  that fetches the weights. Offline, nothing touches the network.
- ``require_weights`` / ``locate_pretrained``: the same look-up without
  loading, for deciding *Blocked* and for ``fusionaudit models list``.

Light on purpose: the registry imports it before any adapter module, so
transformers is imported only inside the one function that needs it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from tasks.adapters.contract import ModelSpec, WeightsUnavailable

_TRUE = {"1", "ON", "YES", "TRUE"}
# Weight layouts transformers' from_pretrained reads (PyTorch), in its order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
# Other frameworks' weights and exports: never fetched, a PyTorch model cannot use them.
_NOT_PYTORCH = ["*.h5", "*.msgpack", "*.ckpt", "*.onnx", "*.tflite", "*.ot", "flax_model*", "tf_model*",
                "onnx/*", "openvino/*", "coreml/*"]


def hub_cache_dir() -> Path:
    """The hub cache as the environment names it *now* (huggingface_hub reads it once, at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.upper() in _TRUE or hf_constants.HF_HUB_OFFLINE


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)),
                                 timeout).close()
        return True
    except OSError:
        return False


def _looks_like_path(source: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else that names a place is a path.
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or (os.sep != "/" and os.sep in source)


def repo_cache_dir(repo_id: str, cache: Path | None = None) -> Path:
    """The folder huggingface_hub keeps a model repo in: <cache>/models--org--name."""
    return (cache or hub_cache_dir()) / f"models--{repo_id.replace('/', '--')}"


def fetch_command(repo_id: str, cache: Path, revision: str | None = None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return f"hf download {repo_id}{rev} --cache-dir {cache}"


def resolve_pretrained(spec: ModelSpec, files: Iterable[str] = ("config.json",)) -> Path:
    """The local folder holding ``spec.source``'s checkpoint, with ``files`` in it.

    ``spec.source`` is a local directory (always works, offline too) or a hub
    id. A hub id is looked up in the cache first, without any request; only
    when it is missing and the hub is allowed and reachable is it downloaded
    (PyTorch files only). Raises ``WeightsUnavailable`` when the checkpoint is
    missing offline, gated, unknown, or needs ``trust_remote_code``.
    """
    files = tuple(files)
    source = spec.source.strip()
    if not source:
        raise WeightsUnavailable(spec.name, "no model source given", [],
                                 "set the model's source to a hub id (org/name) or a local checkpoint directory")
    local = Path(source).expanduser()
    if local.is_dir():
        _require_files(spec, local, files, mitigation=f"point the source at a folder written by save_pretrained "
                                                      f"(it holds {', '.join(files)})")
        return local
    if local.exists() or _looks_like_path(source):
        raise WeightsUnavailable(
            spec.name, f"{local} is not a checkpoint directory" + ("" if local.exists() else " (it does not exist)"),
            [str(local.absolute())],
            "pass a folder written by save_pretrained, or a hub id (org/name) whose weights are in the hub cache")
    try:
        validate_repo_id(source)
    except HFValidationError as e:
        raise ValueError(f"model source {source!r} is neither an existing directory nor a valid hub id "
                         f"(org/name): {e}") from e

    cache = hub_cache_dir()
    searched = [str(repo_cache_dir(source, cache)), str(local.absolute())]
    fetch = fetch_command(source, cache, spec.revision)
    mitigation = (f"on a connected machine: {fetch} (or copy the folder and set source: /path/to/dir); "
                  f"then copy that cache folder to {searched[0]} here")
    folder = _cached_snapshot(source, spec.revision, cache)
    if folder is None or any(not (folder / f).exists() for f in files):
        if hub_offline():
            raise WeightsUnavailable(spec.name, f"{source} is not in the local hub cache and HF_HUB_OFFLINE is set",
                                     searched, mitigation, fetch)
        if not _reachable(hf_constants.ENDPOINT):  # fail in seconds, not after the hub client's retries
            raise WeightsUnavailable(spec.name, f"{source} is not in the local hub cache and "
                                     f"{urlparse(hf_constants.ENDPOINT).hostname} is unreachable", searched, mitigation, fetch)
        folder = _download(spec, source, cache, searched, mitigation)
    _require_files(spec, folder, files, mitigation=mitigation)
    if "config.json" in files:
        _refuse_remote_code(spec, folder)
    return folder


def _cached_snapshot(repo_id: str, revision: str | None, cache: Path) -> Path | None:
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None


def _download(spec: ModelSpec, repo_id: str, cache: Path, searched: list[str], mitigation: str) -> Path:
    page = f"{hf_constants.ENDPOINT}/{repo_id}"
    try:
        return Path(snapshot_download(repo_id, revision=spec.revision, cache_dir=cache, ignore_patterns=_NOT_PYTORCH))
    except GatedRepoError as e:  # before RepositoryNotFoundError: it is a subclass
        raise WeightsUnavailable(
            spec.name, f"{repo_id} is a gated model and this machine's token has no access "
                       f"(HTTP {getattr(e.response, 'status_code', '401/403')})",
            searched, f"accept the model's terms at {page}, then `hf auth login` (or set HF_TOKEN) and run "
                      f"{fetch_command(repo_id, cache, spec.revision)}") from e
    except RepositoryNotFoundError as e:
        raise WeightsUnavailable(
            spec.name, f"the hub has no repository {repo_id} visible to this machine (unknown or private)", searched,
            f"check the id at {page}; for a private repo, `hf auth login` (or set HF_TOKEN) first") from e
    except RevisionNotFoundError as e:
        raise WeightsUnavailable(spec.name, f"{repo_id} has no revision {spec.revision!r}", searched,
                                 f"use a branch, tag or commit listed at {page}/tree/main") from e
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status in (401, 403):
            raise WeightsUnavailable(
                spec.name, f"the hub refused access to {repo_id} (HTTP {status}: gated or private)", searched,
                f"request access at {page}, then `hf auth login` (or set HF_TOKEN)") from e
        raise WeightsUnavailable(spec.name, f"download of {repo_id} failed: {e}", searched, mitigation) from e
    except OSError as e:
        raise WeightsUnavailable(spec.name, f"download of {repo_id} failed: {e}", searched, mitigation) from e


def _require_files(spec: ModelSpec, folder: Path, files: tuple[str, ...], mitigation: str) -> None:
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise WeightsUnavailable(spec.name, f"{folder} lacks {', '.join(missing)}", [str(folder)], mitigation)


def _refuse_remote_code(spec: ModelSpec, folder: Path) -> None:
    """A checkpoint whose model type transformers does not know needs the repo's own code: refused."""
    from transformers import CONFIG_MAPPING

    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type in CONFIG_MAPPING:
        return
    if config.get("auto_map"):
        raise WeightsUnavailable(
            spec.name, f"{spec.source} needs trust_remote_code (model_type {model_type!r} is defined by code "
                       "inside the repository, which fusionaudit does not execute)", [str(folder)],
            "use a transformers-native checkpoint of the same model (often the '-hf' repo of the same family), "
            "or convert the weights with transformers' conversion script and set source: /path/to/dir")
    raise WeightsUnavailable(
        spec.name, f"model_type {model_type!r} in {folder / 'config.json'} is unknown to this transformers version",
        [str(folder)], "upgrade transformers, or use a checkpoint of a supported architecture")


def weight_files(folder: Path) -> list[Path]:
    """The PyTorch weight files ``from_pretrained`` would read from ``folder`` (shards included); [] when incomplete."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.exists():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            shard_paths = [folder / s for s in shards]
            return shard_paths if all(p.exists() for p in shard_paths) else []
        return [path]
    return []


def locate_pretrained(spec: ModelSpec) -> tuple[bool, list[str]]:
    """(weights present here, the places looked) without loading or any network request."""
    source = spec.source.strip()
    local = Path(source).expanduser()
    if not source:
        return False, []
    if local.is_dir() or local.exists() or _looks_like_path(source):
        return (local.is_dir() and bool(weight_files(local))), [str(local.absolute())]
    cache = hub_cache_dir()
    folder = _cached_snapshot(source, spec.revision, cache)
    return (folder is not None and bool(weight_files(folder))), [str(repo_cache_dir(source, cache)),
                                                                 str(local.absolute())]


def local_checkpoint(spec: ModelSpec) -> Path | None:
    """The checkpoint folder when it is on this machine (its processor/tokenizer files live there); never downloads."""
    source = spec.source.strip()
    if not source:
        return None
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    if _looks_like_path(source):
        return None
    try:
        validate_repo_id(source)
    except HFValidationError:
        return None
    return _cached_snapshot(source, spec.revision, hub_cache_dir())


def checkpoint_revision(folder: Path, weights: list[Path]) -> str:
    """A hub snapshot's commit hash; for a plain folder, a hash of its config and its weights' sizes and heads."""
    if folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return f"{folder.parent.parent.name.removeprefix('models--').replace('--', '/')}@{folder.name[:12]}"
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in weights:  # name, size and the first MiB: cheap for 7B checkpoints, changes when the weights do
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            digest.update(f.read(1 << 20))
    return f"{folder.name}@sha256:{digest.hexdigest()[:12]}"


def missing_weights(spec: ModelSpec, folder: Path) -> WeightsUnavailable:
    return WeightsUnavailable(
        spec.name, f"{folder} has a config.json but no weights ({' / '.join(WEIGHT_FILES)})", [str(folder)],
        f"on a connected machine: {fetch_command(spec.source, hub_cache_dir(), spec.revision)} "
        "(or copy the complete folder and set source: /path/to/dir); "
        "or pass --allow-random-init to run the architecture with random weights")


def require_weights(spec: ModelSpec) -> None:
    """Raise the ``WeightsUnavailable`` that ``open_pretrained`` would, before transformers is imported.

    The same look-up (cache first, a download only where the hub is allowed and reachable), so a
    model without weights is Blocked without paying for the import of its model class.
    """
    if spec.allow_random_init:
        return  # random weights can always be built: the adapter decides
    folder = resolve_pretrained(spec, files=("config.json",))
    if not weight_files(folder):
        raise missing_weights(spec, folder)
