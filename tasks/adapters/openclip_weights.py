"""Where open_clip's weights for a model are, answered without importing open_clip.

Importing open_clip pulls in torchvision, timm and its model zoo (most of a
cycle's start-up on a busy machine), only to find that a model's weights are
not here. Its table of pretrained tags lives in ``open_clip/pretrained.py``,
which needs none of that: it is loaded on its own (as a module of a stand-in
package, so open_clip's ``__init__`` never runs) unless open_clip is already
imported, in which case open_clip's own module is used. The open_clip
adapter and the Blocked check share these functions, so both look in the
same places and say the same thing.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from urllib.parse import urlparse

from tasks.adapters.contract import ModelSpec, WeightsUnavailable

CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz", ".ckpt")
_STAND_IN = "_fusionaudit_open_clip_tables"


def pretrained():
    """open_clip's ``pretrained`` module (tags, hub repos, file names), importing as little as possible."""
    if "open_clip" in sys.modules:
        return importlib.import_module("open_clip.pretrained")
    if _STAND_IN not in sys.modules:
        found = importlib.util.find_spec("open_clip")  # locates the package without running it
        package = types.ModuleType(_STAND_IN)
        package.__path__ = list(found.submodule_search_locations)
        sys.modules[_STAND_IN] = package
    return importlib.import_module(f"{_STAND_IN}.pretrained")


def locate_tag(arch: str, tag: str, cfg: dict, cache_dir: str | None = None
               ) -> tuple[Path, list[str], Path | None, str, str]:
    """Where open_clip will look for a tag's weights: (cache dir, searched, cached file, endpoint, fetch hint)."""
    import huggingface_hub
    from huggingface_hub import constants as hf_constants

    from tasks.adapters.hub import hub_cache_dir

    table = pretrained()
    fetch = f"python -c \"import open_clip; open_clip.create_model_and_transforms('{arch}', pretrained='{tag}')\""
    if not cfg.get("hf_hub"):  # legacy URL-only weights: open_clip keeps them flat in cache_dir or ~/.cache/clip
        cache = Path(cache_dir or "~/.cache/clip").expanduser()
        target = cache / os.path.basename(cfg["url"])
        return cache, [str(target)], (target if target.is_file() else None), cfg["url"], fetch
    repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" means the default file name
    filename = filename or table.HF_WEIGHTS_NAME
    cache = Path(cache_dir).expanduser() if cache_dir else hub_cache_dir()
    cached = None
    for name in (*table._get_safe_alternatives(filename), filename):  # the order open_clip tries them in
        hit = huggingface_hub.try_to_load_from_cache(repo, name, cache_dir=cache)
        if isinstance(hit, str):
            cached = Path(hit)
            break
    searched = [str(cache / f"models--{repo.replace('/', '--')}")]
    return cache, searched, cached, hf_constants.ENDPOINT, f"{fetch} (or: hf download {repo} {filename})"


def unreachable(spec: ModelSpec, arch: str, tag: str, cache: Path, searched: list[str], endpoint: str,
                fetch: str) -> WeightsUnavailable | None:
    """Why a tag missing from the cache cannot be downloaded either (offline, hub unreachable); None if it can."""
    from tasks.adapters.hub import _reachable, hub_offline

    mitigation = (f"on a connected machine run: {fetch}, then copy that machine's hub cache "
                  f"(~/.cache/huggingface/hub) to {cache} here, "
                  "or pass a local checkpoint path as the model source")
    missing = f"weights for {arch}/{tag} are not in the local cache"
    command = fetch.split(" (or: ")[0]  # one runnable command for the handoff's shared block
    if hub_offline():
        return WeightsUnavailable(spec.name, f"{missing} and HF_HUB_OFFLINE is set", searched, mitigation, command)
    if not _reachable(endpoint):  # fail in seconds rather than after open_clip's ~45 s of retries
        return WeightsUnavailable(spec.name, f"{missing} and {urlparse(endpoint).hostname} is unreachable",
                                  searched, mitigation, command)
    return None


def missing_checkpoint(spec: ModelSpec, arch: str, path: Path) -> WeightsUnavailable:
    return WeightsUnavailable(
        spec.name, f"checkpoint file {path} does not exist", [str(path)],
        f"pass an existing open_clip checkpoint file as the model source, or one of the "
        f"pretrained tags of {arch}: {pretrained().list_pretrained_tags_by_model(arch)}")


def locate(spec: ModelSpec, cache_dir: str | None = None) -> tuple[bool, list[str]]:
    """(weights here, places looked) for a pretrained tag or a checkpoint file, without importing open_clip."""
    cfg = pretrained().get_pretrained_cfg(spec.arch, spec.source) if spec.arch else None
    if cfg:
        _, searched, cached, _, _ = locate_tag(spec.arch, spec.source, cfg, cache_dir)
        return cached is not None, searched
    path = Path(spec.source).expanduser()
    return path.is_file(), [str(path)]


def require_weights(spec: ModelSpec) -> None:
    """Raise the ``WeightsUnavailable`` the adapter would, before open_clip is imported; otherwise return."""
    if spec.allow_random_init or not spec.arch:
        return  # random weights can always be built; a missing arch is the adapter's error to name
    cfg = pretrained().get_pretrained_cfg(spec.arch, spec.source)
    if cfg:
        cache, searched, cached, endpoint, fetch = locate_tag(spec.arch, spec.source, cfg)
        if cached is None and (why := unreachable(spec, spec.arch, spec.source, cache, searched, endpoint, fetch)):
            raise why
        return
    path = Path(spec.source).expanduser()
    if not path.is_file() and (os.sep in spec.source or path.suffix in CHECKPOINT_SUFFIXES):
        raise missing_checkpoint(spec, spec.arch, path)
