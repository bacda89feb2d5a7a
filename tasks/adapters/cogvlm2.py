"""CogVLM2 (THUDM/cogvlm2-llama3-chat-19B): a Llama-3 LM with visual-expert layers, defined by the repo's own code.

transformers has no CogVLM2 class, so the checkpoint can only be opened
with ``trust_remote_code``, which executes Python shipped inside the model
repository. fusionaudit never runs downloaded code on its own: a hub id is
Blocked (``WeightsUnavailable``) with instructions, even when its files are
in the hub cache. The model opens only when ``spec.source`` is a local
directory holding both the code (the files named in config.json's
``auto_map``) and the weights, i.e. a copy someone chose to trust; it is
then loaded with ``AutoModelForCausalLM.from_pretrained(dir,
trust_remote_code=True, local_files_only=True)``. There is no random-init
path (the architecture only exists in that code).

The loaded model follows the yes/no log-odds score of generative.py, with the
repo's own ``build_conversation_input_ids`` (template "chat"); image tokens
are the positions with ``token_type_ids == 1``. Capabilities: score, mask,
mask_tokens. No trace: the repo's attention computes scaled-dot-product
attention internally and returns no maps, so nothing can be hooked. This
path needs the 19B weights and the repo code, neither available offline
here: only the Blocked path is tested.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from PIL import Image

from tasks.adapters.contract import Inputs, ModelSpec, Players, Smoke, WeightsUnavailable
from tasks.adapters.generative import last_positions
from tasks.adapters.hub import fetch_command, hub_cache_dir, local_checkpoint, repo_cache_dir, weight_files
from tasks.adapters.loading import default_device, precision, spreads_over_gpus
from tasks.adapters.yes_no_prompt import QUESTION, answer_token_id
from tasks.diagnostics.masking import pixel_keep

DEFAULT_REPO = "THUDM/cogvlm2-llama3-chat-19B"
VISION_TOKEN_TYPE = 1


def _is_path(source: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else that names a place is a local path."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1


def missing_parts(folder: Path) -> list[str]:
    """What a local CogVLM2 folder lacks to be opened: config with auto_map, the code it names, the weights."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return ["config.json"]
    auto_map = json.loads(config_path.read_text()).get("auto_map") or {}
    missing = [] if auto_map else ["an auto_map in config.json (the remote-code entry points)"]
    modules = {ref.split("--")[-1].split(".")[0] for ref in auto_map.values() if isinstance(ref, str)}
    missing += [f"{m}.py" for m in sorted(modules) if not (folder / f"{m}.py").is_file()]
    if not weight_files(folder):
        missing.append("the weights (model.safetensors[.index.json] with all shards)")
    return missing


REMOTE_CODE_ENV = "FUSIONAUDIT_TRUST_REMOTE_CODE"  # set to 1 by `fusionaudit cycle run --trust-remote-code`


def remote_code_refusal(spec: ModelSpec) -> str | None:
    """Why the folder's code may not run (None when both opt-ins are given): never by default."""
    missing = ([] if spec.trust_remote_code else [f"the mission's trust_remote_code: true on model {spec.name}"]) + \
              ([] if os.environ.get(REMOTE_CODE_ENV) == "1" else ["the CLI flag --trust-remote-code"])
    return f"it runs only by explicit opt-in, missing: {' and '.join(missing)}" if missing else None


def code_hash(folder: Path) -> str:
    """sha256 over the folder's code (every .py file and config.json, by relative path): what was trusted."""
    digest = hashlib.sha256()
    for path in sorted([*folder.rglob("*.py"), folder / "config.json"]):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _mitigation(repo: str, cached: Path | None) -> str:
    steps = (f"on a connected machine: {fetch_command(repo, hub_cache_dir())} (or hf download {repo} --local-dir "
             f"/path/cogvlm2), review its modeling_cogvlm.py, copy the folder here and set the model's source to "
             f"that directory, set trust_remote_code: true on the model in the mission and run with "
             f"--trust-remote-code: fusionaudit then runs its code, offline, and logs its hash")
    if cached is not None:
        steps = f"the repository is in the hub cache: after reviewing its code, set source: {cached}; or {steps}"
    return steps


class CogVLM2Adapter:
    """``cogvlm2``: opens a trusted local copy only (see the module docstring)."""

    name = "cogvlm2"
    family = "LLM with visual-expert layers (remote code)"
    capabilities = frozenset({"score", "mask", "mask_tokens"})
    smoke = Smoke(source=DEFAULT_REPO, loads=False)  # remote code: no random stand-in, only a trusted local copy

    def __init__(self, device: str | None = None):
        self.device = device or default_device()

    def _folder(self, spec: ModelSpec) -> tuple[Path | None, list[str]]:
        source = (spec.source or DEFAULT_REPO).strip()
        local = Path(source).expanduser()
        if local.is_dir():
            return local, [str(local.absolute())]
        if local.exists() or _is_path(source):
            return None, [str(local.absolute())]
        return None, [str(repo_cache_dir(source)), str(local.absolute())]

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        folder, searched = self._folder(spec)
        return folder is not None and not missing_parts(folder), searched

    def load(self, spec: ModelSpec) -> CogVLM2Model:
        folder, searched = self._folder(spec)
        repo = spec.source.strip() if spec.source.strip() and not _is_path(spec.source) else DEFAULT_REPO
        if folder is None:
            cached = local_checkpoint(ModelSpec(spec.name, spec.adapter, repo, revision=spec.revision))
            reason = ("CogVLM2 exists only as code inside its model repository (trust_remote_code), and "
                      "fusionaudit does not run downloaded code on its own")
            if spec.allow_random_init:
                reason += "; --allow-random-init cannot help, there is no transformers class to build"
            raise WeightsUnavailable(spec.name, reason, searched, _mitigation(repo, cached))
        missing = missing_parts(folder)
        if missing:
            raise WeightsUnavailable(spec.name, f"{folder} lacks {', '.join(missing)}", searched,
                                     _mitigation(repo, None))
        refused = remote_code_refusal(spec)
        if refused:
            raise WeightsUnavailable(spec.name, f"{folder} holds Python code that runs when the model opens "
                                                f"(trust_remote_code); {refused}", searched,
                                     f"review the code in {folder}, then opt in twice: set trust_remote_code: true "
                                     f"on model {spec.name} in the mission, and run `fusionaudit cycle run "
                                     f"--trust-remote-code`")
        digest = code_hash(folder)  # logged as the model's revision (fa.revision): which code ran is evidence
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # without a dtype: the checkpoint's own bfloat16 on a GPU, float32 anywhere else
        kw = precision(spec, self.device, torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        if spreads_over_gpus(spec, self.device):
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, local_files_only=True,
                                                         device_map="auto", **kw).eval()
            self.device = str(next(model.parameters()).device)  # inputs go where the first layers are
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, local_files_only=True,
                                                         **kw).to(self.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
        return CogVLM2Model(spec, model, tokenizer, f"{folder.absolute()}@remote-code-sha256:{digest}", self.device)


def _find(sequence: list[int], part: list[int], start: int) -> int:
    for i in range(start, len(sequence) - len(part) + 1):
        if sequence[i:i + len(part)] == part:
            return i
    return -1


class CogVLM2Model:
    """A trusted local CogVLM2 behind the contract: yes/no log-odds, whole-modality and token masking."""

    family = CogVLM2Adapter.family
    capabilities = CogVLM2Adapter.capabilities
    random_init = False

    def __init__(self, spec: ModelSpec, model, tokenizer, revision: str, device: str):
        self.spec, self.model, self.tokenizer, self.revision, self.device = spec, model, tokenizer, revision, device
        self.yes_id = answer_token_id(tokenizer, "ASSISTANT:", " Yes")
        self.no_id = answer_token_id(tokenizer, "ASSISTANT:", " No")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 128002  # Llama-3 reserved
        self.dtype = next(model.parameters()).dtype

    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        rows = []
        for image, caption in zip(images, captions, strict=True):
            caption = " ".join(caption.split())
            built = self.model.build_conversation_input_ids(self.tokenizer, query=QUESTION.format(caption=caption),
                                                            images=[image.convert("RGB")], template_version="chat")
            ids = built["input_ids"].tolist()
            part = self.tokenizer(" " + caption, add_special_tokens=False)["input_ids"]
            text_start = int((built["token_type_ids"] == VISION_TOKEN_TYPE).nonzero().max()) + 1
            at = _find(ids, part, text_start)
            if at < 0:
                raise RuntimeError(f"caption {caption!r} is not a contiguous token run of its CogVLM2 prompt")
            rows.append((built, at, at + len(part)))
        length = max(len(b["input_ids"]) for b, _, _ in rows)

        def padded(key: str, fill: int) -> torch.Tensor:
            return torch.stack([torch.nn.functional.pad(b[key], (0, length - len(b[key])), value=fill)
                                for b, _, _ in rows])

        tensors = {"input_ids": padded("input_ids", self.pad_id), "token_type_ids": padded("token_type_ids", 0),
                   "attention_mask": padded("attention_mask", 0),
                   "images": torch.stack([b["images"][0] for b, _, _ in rows])}
        caption = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (_, start, stop) in enumerate(rows):
            caption[i, start:stop] = True
        meta = {"caption": caption, "last": last_positions(tensors["attention_mask"])}
        return Inputs(tensors=tensors, sample_ids=list(sample_ids), meta=meta)

    @torch.no_grad()
    def score(self, inputs: Inputs) -> torch.Tensor:
        t = inputs.tensors
        images = [[im.to(self.device, self.dtype)] for im in t["images"]]
        logits = self.model(input_ids=t["input_ids"].to(self.device), token_type_ids=t["token_type_ids"].to(self.device),
                            attention_mask=t["attention_mask"].to(self.device), images=images).logits
        last = inputs.meta["last"].to(logits.device)
        row = logits[torch.arange(len(last), device=logits.device), last].float()
        return (row[:, self.yes_id] - row[:, self.no_id]).cpu()

    def _with(self, inputs: Inputs, **tensors) -> Inputs:
        return Inputs(tensors={**inputs.tensors, **tensors}, sample_ids=list(inputs.sample_ids), meta=dict(inputs.meta))

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        t = inputs.tensors
        ids = t["input_ids"] if text_keep else t["input_ids"].masked_fill(inputs.meta["caption"], self.pad_id)
        return self._with(inputs, input_ids=ids, images=t["images"] if image_keep else torch.zeros_like(t["images"]))

    def players(self, inputs: Inputs) -> Players:
        return Players(text_valid=inputs.meta["caption"].clone())

    def mask_tokens(self, inputs: Inputs, image_keep: torch.Tensor, text_keep: torch.Tensor) -> Inputs:
        t = inputs.tensors
        ids = t["input_ids"].masked_fill(inputs.meta["caption"] & ~text_keep.bool(), self.pad_id)
        keep = pixel_keep(image_keep.bool(), t["images"].shape[-2], t["images"].shape[-1])
        return self._with(inputs, input_ids=ids, images=t["images"] * keep[:, None].to(t["images"].dtype))
