"""Shared plumbing for adapters built on transformers models.

- ``resolve_pretrained``: a spec's source → a local checkpoint folder (a
  local directory, or a hub id found in the Hugging Face cache), or
  ``WeightsUnavailable`` naming the exact folders looked in and the command
  that fetches the weights. Offline, nothing touches the network.
- ``random_config`` / ``open_pretrained``: real weights when present, the
  real class with random weights (``--allow-random-init``) otherwise, always
  with eager attention (transformers >= 5 defaults to SDPA, which returns no
  attention maps).
- ``fallback_tokenizer``: a word-level tokenizer built in code, for
  random-init runs and tests where no tokenizer files exist.
- ``AttentionHooks``: forward hooks that reduce attention maps to per-sample
  summaries inside the hook and drop the maps, so no [B, H, Q, K] tensor
  outlives its layer.
- ``ImageTextModel`` / ``HFAdapter``: the LoadedModel body (prepare, masks,
  MM-SHAP players) and the adapter body (load, locate) that the CLIP, ALIGN,
  BLIP, BLIP-2 and ViLT adapters share.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from PIL import Image
from torch import nn

from tasks.adapters.base import AttentionSummary, Inputs, ModelSpec, Players, TokenSpans, WeightsUnavailable
from tasks.diagnostics.attention import reduce_attention
from tasks.diagnostics.masking import pixel_keep

_TRUE = {"1", "ON", "YES", "TRUE"}
# Weight layouts transformers' from_pretrained reads (PyTorch), in its order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
# Other frameworks' weights and exports: never fetched, a PyTorch model cannot use them.
_NOT_PYTORCH = ["*.h5", "*.msgpack", "*.ckpt", "*.onnx", "*.tflite", "*.ot", "flax_model*", "tf_model*",
                "onnx/*", "openvino/*", "coreml/*"]


# --- where weights live ---------------------------------------------------------

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


# --- building models -------------------------------------------------------------

def random_config(config_cls, spec: ModelSpec, cached: Path | None = None):
    """The config a random-weights model is built from.

    The checkpoint's own config.json when it is cached (the real architecture),
    else ``config_cls()``'s defaults; then ``spec.random_config`` overrides,
    whose dotted keys reach nested configs ("text_config.num_hidden_layers").
    Overrides are applied to the config *dict* before the class is built, so
    values a composite config derives from its parts (BLIP-2's Q-Former
    ``encoder_hidden_size`` from the vision width) follow the overrides.
    """
    if cached is not None and (cached / "config.json").exists():
        base = config_cls.from_pretrained(cached).to_dict()
    else:
        base = config_cls().to_dict()
    for key, value in spec.random_config.items():
        _set_dotted(base, key, value, config_cls.__name__)
    config = config_cls.from_dict(base)
    config._attn_implementation = "eager"  # applied to every sub-config too
    return config


def _set_dotted(tree: dict, key: str, value, owner: str) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.get(part)
        if not isinstance(child, dict):
            where = ".".join(parents[: i + 1])
            raise ValueError(f"random_init_config key {key!r}: {owner} has no nested config {where!r}; "
                             f"nested configs here: {sorted(k for k, v in node.items() if isinstance(v, dict))}")
        node = child
    if leaf not in node:
        raise ValueError(f"random_init_config key {key!r}: {owner} has no field {leaf!r} there; "
                         f"known fields: {sorted(k for k in node if not k.startswith('_'))}")
    if isinstance(node[leaf], dict) and isinstance(value, Mapping):
        node[leaf] = {**node[leaf], **value}
    else:
        node[leaf] = value


def open_pretrained(model_cls, spec: ModelSpec, config_cls, *, device: str | None = None, seed: int = 0, **kw):
    """(model in eval mode, random_init, revision) for ``spec``.

    Real weights via ``from_pretrained(folder, attn_implementation="eager")``
    when the checkpoint (config + weights) is here. Without weights and with
    ``spec.allow_random_init``, the real class is built from ``random_config``
    with weights drawn under ``torch.manual_seed(seed)`` (the global RNG is
    left as it was); its revision is the hash of that config. Otherwise
    ``WeightsUnavailable`` propagates. ``kw`` go to ``from_pretrained`` /
    ``_from_config`` (e.g. ``dtype``).
    """
    folder: Path | None = None
    error: WeightsUnavailable | None = None
    if spec.source.strip() or not spec.allow_random_init:
        try:
            folder = resolve_pretrained(spec, files=("config.json",))
        except WeightsUnavailable as e:
            error = e
    weights = weight_files(folder) if folder is not None else []
    if folder is not None and weights:
        _check_model_type(spec, folder, config_cls)
        model = model_cls.from_pretrained(folder, attn_implementation="eager", **kw)
        return _place(model, device), False, checkpoint_revision(folder, weights)
    if not spec.allow_random_init:
        if error is not None:
            raise error
        raise _no_weights(spec, folder)
    if folder is not None:
        _check_model_type(spec, folder, config_cls)
    config = random_config(config_cls, spec, folder)
    if kw.pop("device_map", None):  # random weights are built on the CPU; _place moves them to the GPU
        device = device or default_device()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls._from_config(config, attn_implementation="eager", **kw)
    digest = hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest()[:12]
    return _place(model, device), True, f"random-init@seed{seed}:{digest}"


def _no_weights(spec: ModelSpec, folder: Path) -> WeightsUnavailable:
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
        raise _no_weights(spec, folder)


def _check_model_type(spec: ModelSpec, folder: Path, config_cls) -> None:
    found = json.loads((folder / "config.json").read_text()).get("model_type")
    if found != config_cls.model_type:
        raise ValueError(f"{spec.name}: {folder / 'config.json'} is a {found!r} checkpoint, but adapter "
                         f"{spec.adapter!r} opens {config_cls.model_type!r} models; pick the adapter for {found!r}")


def _place(model: nn.Module, device: str | None) -> nn.Module:
    if device is not None:
        model = model.to(device)
    return model.eval()


DTYPES = ("auto", "float32", "float16", "bfloat16")


def torch_dtype(name: str) -> torch.dtype:
    """A dtype name of the mission's runtime section (DTYPES) as torch's dtype."""
    if name not in DTYPES[1:]:
        raise ValueError(f"dtype {name!r}: use one of {DTYPES}")
    return getattr(torch, name)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_processor(spec: ModelSpec, fallback: Callable[[], object]):
    """The checkpoint's own AutoProcessor when its files are here, else ``fallback()`` (random-init runs, tests)."""
    folder = local_checkpoint(spec)
    if folder is not None and any((folder / f).exists() for f in ("preprocessor_config.json", "processor_config.json")):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(folder)
    return fallback()


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def checkpoint_processors(spec: ModelSpec, fallback_image: Callable[[], object], fallback_text: Callable[[], object]):
    """(image processor, tokenizer): the checkpoint's own when their files are here, else the fallbacks.

    Loaded separately rather than as one AutoProcessor, so a processor that
    rewrites the text (BLIP-2's image-token expansion) cannot move tokens
    behind the adapter's back. The fallbacks serve random-init runs and tests.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    folder = local_checkpoint(spec)
    has = (lambda names: folder is not None and any((folder / n).exists() for n in names))
    image = AutoImageProcessor.from_pretrained(folder) if has(("preprocessor_config.json",)) else fallback_image()
    text = AutoTokenizer.from_pretrained(folder) if has(_TOKENIZER_FILES) else fallback_text()
    return image, text


# --- tokenizer for checkpoints without one -------------------------------------------

def fallback_tokenizer(vocab: Iterable[str], special_tokens: Mapping[str, str],
                       ids: Mapping[str, int] | None = None, max_length: int = 64):
    """A ``PreTrainedTokenizerFast`` built in code: lowercase, whitespace/punctuation split, one id per word.

    ``special_tokens`` maps roles to tokens ({"cls_token": "[CLS]", "sep_token":
    "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}).
    ``ids`` pins tokens to ids a model's config expects (CLIP pools the text at
    ``eos_token_id``); the other tokens take the lowest free ids. Sequences are
    wrapped as [CLS] … [SEP] (or BOS … EOS) when those roles are given.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if "unk_token" not in special_tokens:
        raise ValueError("fallback_tokenizer needs an unk_token: captions hold words outside the vocabulary")
    table = dict(ids or {})
    taken = set(table.values())
    words = list(dict.fromkeys([*special_tokens.values(), *(w.lower() for w in vocab)]))
    free = (i for i in range(len(words) + len(taken)) if i not in taken)
    for word in words:
        if word not in table:
            table[word] = next(free)
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token=special_tokens["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    first = special_tokens.get("cls_token", special_tokens.get("bos_token"))
    last = special_tokens.get("sep_token", special_tokens.get("eos_token"))
    if first and last:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", special_tokens=[(first, table[first]), (last, table[last])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **special_tokens)


# --- attention hooks -------------------------------------------------------------------

@dataclass(frozen=True)
class LayerMasks:
    """The position masks ``reduce_attention`` takes, [Q]/[K] shared or [B, Q]/[B, K] per sample."""

    query_rows: torch.Tensor   # rows whose allocation is measured (text / query tokens)
    image_cols: torch.Tensor   # keys that are image tokens
    text_cols: torch.Tensor    # keys that are text tokens
    image_rows: torch.Tensor   # rows averaged into entropy_visual
    text_rows: torch.Tensor    # rows averaged into entropy_text

    def to(self, device) -> LayerMasks:
        return LayerMasks(*(m.to(device) for m in (self.query_rows, self.image_cols, self.text_cols,
                                                    self.image_rows, self.text_rows)))


MaskFn = Callable[[str, torch.Tensor], LayerMasks]  # (layer name, probs [B, H, Q, K]) -> masks
Select = Callable[[str, nn.Module], bool]


def _as_predicate(select: str | Select | None) -> Select:
    if select is None:
        return lambda _name, _module: False
    if isinstance(select, str):
        pattern = re.compile(select)
        return lambda name, _module: pattern.fullmatch(name) is not None
    return select


class AttentionHooks:
    """Reduce attention maps inside forward hooks; the maps never leave their layer.

    ``select`` (a regex full-matched against module names, or a predicate
    ``(name, module) -> bool``) picks the attention modules whose output is
    ``(attn_output, attn_probs, ...)`` with probs [B, H, Q, K] (transformers'
    eager attention modules). ``masks(layer, probs)`` gives each layer's
    ``LayerMasks``. The hook replaces the probs in the output by ``None``, so
    nothing downstream keeps them.

    ``cross`` picks cross-attention modules (text or query rows onto image
    keys only, e.g. BLIP's text encoder, the BLIP-2 Q-Former). There every key
    is an image token, so the visual share is 1 by construction and says
    nothing about the model: visual_share and text_share are recorded as NaN,
    the entropies are kept.

    ``keep_maps`` > 0 keeps the head-mean map of the first ``keep_maps``
    samples per layer in ``summary.maps`` (capability "maps", for plots).
    ``observe(layer, probs)`` runs inside the hook before the map is dropped
    (e.g. ``Rollout.update``); what it returns lands in
    ``summary.extras[name]`` per layer when it returns {name: [B] tensor}.

    ``request`` is an optional forward pre-hook ``(module, args, kwargs) ->
    (args, kwargs)`` for modules that compute their maps only when asked
    (ViLT's ``output_attentions`` argument). ``rename`` turns module names
    into layer names. Layers are listed in the order they ran; a module that
    runs twice in one context is an error (its summaries would mix two passes).

    Use: ``with AttentionHooks(model, select, masks, ...) as hooks: model(...)``
    then ``hooks.summary``.
    """

    def __init__(self, model: nn.Module, select: str | Select, masks: MaskFn, *,
                 cross: str | Select | None = None, request=None, rename: Callable[[str], str] | None = None,
                 n_image_tokens: int = 0, n_text_tokens: int = 0, spans: TokenSpans | None = None,
                 n_text_per_sample: torch.Tensor | None = None, keep_maps: int = 0,
                 observe: Callable[[str, torch.Tensor], dict[str, torch.Tensor] | None] | None = None):
        is_selected, self._is_cross = _as_predicate(select), _as_predicate(cross)
        self.modules = [(name, m) for name, m in model.named_modules() if name and is_selected(name, m)]
        if not self.modules:
            raise ValueError(f"no attention module of {type(model).__name__} matches {select!r}")
        self.masks, self.request, self.rename = masks, request, rename or (lambda name: name)
        self.n_image_tokens, self.n_text_tokens, self.spans = n_image_tokens, n_text_tokens, spans
        self.n_text_per_sample, self.keep_maps, self.observe = n_text_per_sample, keep_maps, observe
        self.rows: dict[str, dict[str, torch.Tensor]] = {}
        self.extras: dict[str, dict[str, torch.Tensor]] = {}
        self.maps: dict[str, torch.Tensor] = {}
        self.cross_layers: list[str] = []
        self.summary: AttentionSummary | None = None
        self._handles: list = []

    def _hook(self, layer: str, cross: bool):
        def hook(_module, _args, output):
            if layer in self.rows:
                raise RuntimeError(f"attention module {layer} ran twice inside one AttentionHooks context; "
                                   "trace one forward pass per context")
            probs = output[1]
            if probs is None:
                raise RuntimeError(f"{layer} returned no attention probabilities: the model is not using eager "
                                   "attention; load it with attn_implementation='eager'")
            m = self.masks(layer, probs).to(probs.device)
            stats = reduce_attention(probs, m.query_rows, m.image_cols, m.text_cols, m.image_rows, m.text_rows)
            if cross:
                for key in ("visual_share", "text_share", "other_share", "sink_mass", "visual_share_sink_aware"):
                    stats[key] = torch.full_like(stats[key], float("nan"))
            self.rows[layer] = {k: v.detach().float().cpu() for k, v in stats.items()}
            if self.keep_maps:
                self.maps[layer] = probs[: self.keep_maps].detach().float().mean(1).cpu()
            if self.observe is not None:
                for key, value in (self.observe(layer, probs) or {}).items():
                    self.extras.setdefault(key, {})[layer] = value.detach().float().cpu()
            return (output[0], None, *output[2:])  # drop the map here
        return hook

    def __enter__(self) -> AttentionHooks:
        self.rows.clear()
        self.extras.clear()
        self.maps.clear()
        self.cross_layers = []
        for name, module in self.modules:
            layer, cross = self.rename(name), self._is_cross(name, module)
            if cross:
                self.cross_layers.append(layer)
            if self.request is not None:
                self._handles.append(module.register_forward_pre_hook(self.request, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._hook(layer, cross)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if exc[0] is None:
            self.summary = self._build()

    def _build(self) -> AttentionSummary:
        if not self.rows:
            raise RuntimeError("no hooked attention module ran inside the AttentionHooks context")
        names = list(self.rows)  # insertion order = execution order
        stacked = {key: torch.stack([self.rows[n][key] for n in names], dim=1) for key in self.rows[names[0]]}
        b = stacked["visual_share"].shape[0]
        nan = torch.full((b,), float("nan"))
        # an observed statistic is NaN on layers that did not report it
        extras = {key: torch.stack([per.get(n, nan) for n in names], dim=1) for key, per in self.extras.items()}
        return AttentionSummary(layer_names=names, **stacked, n_image_tokens=self.n_image_tokens,
                                n_text_tokens=self.n_text_tokens, spans=self.spans, extras=extras,
                                n_text_per_sample=self.n_text_per_sample, maps=dict(self.maps))


def tower_masks(probs: torch.Tensor, tower: str, valid_rows: torch.Tensor | None = None) -> LayerMasks:
    """Masks for a dual encoder's tower (one modality, no cross-modal keys): both shares come out NaN.

    ``tower`` "image": every row's entropy goes to entropy_visual; "text":
    the rows in ``valid_rows`` [B, Q] (padding excluded) go to entropy_text.
    """
    q, k, dev = probs.shape[-2], probs.shape[-1], probs.device
    none_k, none_q = torch.zeros(k, dtype=torch.bool, device=dev), torch.zeros(q, dtype=torch.bool, device=dev)
    if tower == "image":
        return LayerMasks(none_q, none_k, torch.ones(k, dtype=torch.bool, device=dev),
                          torch.ones(q, dtype=torch.bool, device=dev), none_q)
    rows = valid_rows if valid_rows is not None else torch.ones(q, dtype=torch.bool, device=dev)
    return LayerMasks(none_q, none_k, rows, none_q, rows)


# --- the shared LoadedModel body for image–caption pairs ---------------------------------

def caption_vocab() -> list[str]:
    """Words of the synthetic captions: what a random-init model's fallback tokenizer knows."""
    from tasks.data.synthetic import SPECIAL_TOKENS, VOCAB

    return [w for w in VOCAB if w not in SPECIAL_TOKENS]


BERT_SPECIALS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                 "mask_token": "[MASK]"}


def bert_fallback_tokenizer(pad_token_id: int | None, max_length: int):
    """A BERT-style ([CLS] … [SEP], [MASK]) fallback tokenizer whose [PAD] has the config's pad id."""
    ids = {"[PAD]": pad_token_id} if pad_token_id is not None else None
    return fallback_tokenizer(caption_vocab(), BERT_SPECIALS, ids=ids, max_length=max_length)


def neutral_token_id(tokenizer) -> int:
    """The id masked text tokens become: [MASK] when the vocabulary has one, else the lowest ordinary id.

    CLIP's BPE has no [MASK] and its pad/unk token is the EOT the text is
    pooled from, so it gets id 0 (what open_clip pads with), never a special.
    """
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    special = set(tokenizer.all_special_ids)
    return next(i for i in range(len(tokenizer) + len(special)) if i not in special)


def zero_grid_cells(pixels: torch.Tensor, keep: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """``pixels`` [B, C, H, W] with the cells of a g×g grid where ``keep`` [B, g, g] is False set to 0.

    Zero is the dataset mean after normalisation (the whole-image baseline).
    ``region`` [B, 2] gives each sample's (height, width) of real pixels at the
    top-left (ViLT pads images of other shapes); the grid covers that region.
    """
    b, _, h, w = pixels.shape
    if keep.dim() != 3 or keep.shape[0] != b or keep.shape[1] != keep.shape[2]:
        raise ValueError(f"image_keep must be [batch={b}, g, g] booleans, got shape {tuple(keep.shape)}")
    keep = keep.bool().cpu()
    if region is None:  # pixel_keep: the one grid geometry all adapters share
        return pixels.masked_fill(~pixel_keep(keep, h, w)[:, None].to(pixels.device), 0.0)
    out = pixels.clone()
    for i, (rh, rw) in enumerate(region.tolist()):
        drop = ~pixel_keep(keep[i : i + 1].cpu(), rh, rw)[0]  # [rh, rw]
        out[i, :, :rh, :rw] = out[i, :, :rh, :rw].masked_fill(drop.to(out.device), 0.0)
    return out


class ImageTextModel:
    """What transformers image–caption models share behind the LoadedModel contract.

    ``prepare`` runs the image processor and the tokenizer; ``mask``,
    ``players`` and ``mask_tokens`` edit the prepared tensors (pixels → 0 in
    normalised space, caption tokens → [MASK] or a neutral id, special tokens
    and padding untouched). Subclasses add ``score`` and ``trace``.
    """

    family = ""
    capabilities: frozenset[str] = frozenset()

    def __init__(self, spec: ModelSpec, model: nn.Module, image_processor, tokenizer, revision: str,
                 random_init: bool, device: str, max_text_length: int):
        self.spec, self.model, self.image_processor, self.tokenizer = spec, model, image_processor, tokenizer
        self.revision, self.random_init, self.device = revision, random_init, device
        self.max_text_length = max_text_length
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.mask_id = neutral_token_id(tokenizer)

    # -- inputs --
    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        if not len(images) == len(captions) == len(sample_ids):
            raise ValueError(f"prepare needs one caption and one id per image: got {len(images)} images, "
                             f"{len(captions)} captions, {len(sample_ids)} ids")
        pixels = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        text = self.tokenizer(list(captions), padding="longest", truncation=True, max_length=self.max_text_length,
                              return_tensors="pt")
        tensors = {"pixel_values": pixels["pixel_values"], "input_ids": text["input_ids"],
                   "attention_mask": text["attention_mask"]}
        if "pixel_mask" in pixels:
            tensors["pixel_mask"] = pixels["pixel_mask"]
        return Inputs(tensors=tensors, sample_ids=list(sample_ids))

    def _on_device(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        dtype = next(self.model.parameters()).dtype
        return {k: v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in inputs.tensors.items()}

    def text_players(self, inputs: Inputs) -> torch.Tensor:
        """[B, T]: caption tokens, i.e. not padding and not a special token (CLS/SEP/BOS/EOS)."""
        ids = inputs.tensors["input_ids"]
        return inputs.tensors["attention_mask"].bool() & ~torch.isin(ids, self.special_ids)

    def players(self, inputs: Inputs) -> Players:
        return Players(text_valid=self.text_players(inputs))

    def image_region(self, inputs: Inputs) -> torch.Tensor | None:
        """[B, 2] (height, width) of real pixels when images are padded to a common size, else None."""
        mask = inputs.tensors.get("pixel_mask")
        if mask is None:
            return None
        return torch.stack([mask.any(-1).sum(-1), mask.any(-2).sum(-1)], dim=-1)

    def _with(self, inputs: Inputs, **tensors: torch.Tensor) -> Inputs:
        return Inputs(tensors={**inputs.tensors, **tensors}, sample_ids=list(inputs.sample_ids),
                      meta=dict(inputs.meta))

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        """Whole-modality baselines: the mean image (zeros after normalisation); every caption token → mask id.

        Special tokens and padding keep their ids and positions, so the read-out
        token (CLS / EOT) and the sequence length do not change.
        """
        pixels, ids = inputs.tensors["pixel_values"], inputs.tensors["input_ids"]
        if not image_keep:
            pixels = torch.zeros_like(pixels)
        if not text_keep:
            ids = ids.masked_fill(self.text_players(inputs), self.mask_id)
        return self._with(inputs, pixel_values=pixels, input_ids=ids)

    def masked_pixels(self, inputs: Inputs, image_keep: torch.Tensor | None) -> torch.Tensor:
        pixels = inputs.tensors["pixel_values"]
        return pixels if image_keep is None else zero_grid_cells(pixels, image_keep.bool(), self.image_region(inputs))

    def masked_ids(self, inputs: Inputs, text_keep: torch.Tensor | None) -> torch.Tensor:
        ids = inputs.tensors["input_ids"]
        if text_keep is None:
            return ids
        if text_keep.shape != ids.shape:
            raise ValueError(f"text_keep must match input_ids {tuple(ids.shape)}, got {tuple(text_keep.shape)}")
        return ids.masked_fill(self.text_players(inputs) & ~text_keep.bool().to(ids.device), self.mask_id)

    def mask_tokens(self, inputs: Inputs, image_keep: torch.Tensor, text_keep: torch.Tensor) -> Inputs:
        """MM-SHAP coalitions: grid cells not kept → 0 pixels; caption tokens not kept → mask id."""
        return self._with(inputs, pixel_values=self.masked_pixels(inputs, image_keep),
                          input_ids=self.masked_ids(inputs, text_keep))


class HFAdapter:
    """Opens one transformers model class; subclasses name the classes and wrap the model."""

    name = ""
    family = ""
    capabilities: frozenset[str] = frozenset()
    model_cls = None
    config_cls = None
    # Config overrides every random-init build of this class needs (the spec's own come after and win),
    # e.g. a config default that only makes sense when weights are loaded.
    random_defaults: tuple[tuple[str, object], ...] = ()

    def __init__(self, device: str | None = None):
        self.device = device or default_device()

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        return locate_pretrained(spec)

    def open(self, spec: ModelSpec):
        """(model, random_init, revision); float32 on CPU, where half precision is slow or unsupported.

        ``spec.dtype`` other than auto sets the precision; on a GPU machine with ``spec.device`` auto the
        weights load with ``device_map="auto"`` (accelerate), so a model larger than one GPU spreads over all.
        """
        kw = {"dtype": torch_dtype(spec.dtype)} if spec.dtype not in (None, "auto") else (
            {"dtype": torch.float32} if self.device == "cpu" else {})
        if self.random_defaults:
            spec = replace(spec, random_init_config=(*self.random_defaults, *spec.random_init_config))
        if spec.device in (None, "auto") and self.device.startswith("cuda"):
            model, random_init, revision = open_pretrained(self.model_cls, spec, self.config_cls,
                                                           device_map="auto", **kw)
            self.device = str(next(model.parameters()).device)  # inputs go where the first layers are
            return model, random_init, revision
        return open_pretrained(self.model_cls, spec, self.config_cls, device=self.device, **kw)
