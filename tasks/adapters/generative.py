"""The body every generative VLM adapter shares (LLaVA, LLaVA-NeXT, Qwen2-VL, InternVL, Idefics).

A generative VLM has no image-text matching head, so every one of them is
scored the same way: the prompt asks, in the model's own chat format,
whether the caption describes the image, and the score is the log-odds of
the answer "Yes" against "No" read from the next-token logits at the last
position (logit(Yes) − logit(No) = log p(Yes) − log p(No)); the prompt is
``yes_no_prompt.py``'s. Each architecture's file subclasses ``GenerativeVLM``
and ``HFGenerativeAdapter`` with its specifics.

Positions, per sample (``Inputs.meta``):

- image tokens: the expanded placeholder tokens in the LM sequence, i.e.
  where the architecture scatters the projected image features
  (``input_ids == image_token_id``): 576 for LLaVA-1.5 at 336 px, a variable
  number of tiles for LLaVA-NeXT;
- caption tokens: the tokens whose characters overlap the caption inside the
  prompt (tokenizer offsets), never the prompt or special tokens. They are
  the text players of MM-SHAP and what text masking replaces by the pad id
  (unk where there is no pad token), positions and attention mask unchanged;
- the answer row: the last real token, where the score is read.

Batches are right-padded, so a sample's positions and values do not depend
on what it is batched with (left padding would shift absolute positions).

Image masking: the whole image → pixels zero in normalised space (the
dataset-mean image); grid cells (MM-SHAP) → the cell's pixels zeroed, or,
where tiles are resized crops, the cell painted the mean colour and the
image processed again (``repainted_pixels``).

Trace: forward hooks on the LM decoder's self-attention modules (eager);
the measured rows are the caption tokens and the answer row, image columns
the image tokens, text columns every other real token that is not a
special token (so BOS / chat markers, often attention sinks, count for
neither modality).

Random-init runs (``--allow-random-init`` without weights) build the
processor from its classes with ``random_tokenizer``; the architecture's file
points the config's token ids at that tokenizer.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from tasks.adapters.contract import AttentionSummary, Inputs, ModelSpec, Players, TokenSpans, WeightsUnavailable
from tasks.adapters.hooks import AttentionHooks, LayerMasks
from tasks.adapters.loading import TransformersAdapter
from tasks.adapters.preprocessing import fallback_tokenizer, load_processor
from tasks.adapters.yes_no_prompt import QUESTION, YesNoPrompt, answer_token_id, chat_prompt
from tasks.data.vocabulary import VOCAB
from tasks.diagnostics.masking import pixel_keep

FAMILY = "LLM with image tokens"
CAPABILITIES = frozenset({"score", "mask", "mask_tokens", "trace", "maps"})


# --- positions -----------------------------------------------------------------------

def shifted_span(span: tuple[int, int], replacements: list[dict] | None) -> tuple[int, int]:
    """A character span of the prompt moved past the image placeholders the processor expanded before it."""
    shift = 0
    for r in replacements or []:
        (old_start, old_stop), (new_start, new_stop) = r["span"], r["new_span"]
        if old_stop <= span[0]:
            shift += (new_stop - new_start) - (old_stop - old_start)
    return span[0] + shift, span[1] + shift


def overlap_positions(offsets: torch.Tensor, attention: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """[B, S] tokens whose characters overlap each sample's span; empty-offset (special) tokens never do."""
    s = torch.tensor(spans, dtype=offsets.dtype).view(-1, 2)
    start, stop = offsets[..., 0], offsets[..., 1]
    return (stop > s[:, :1]) & (start < s[:, 1:]) & (stop > start) & attention.bool()


def last_positions(attention: torch.Tensor) -> torch.Tensor:
    """[B] index of each row's last real token, whichever side the padding is on."""
    return attention.shape[1] - 1 - attention.long().flip(1).argmax(1)


def span_of(mask: torch.Tensor) -> tuple[int, int]:
    """[start, stop) of the True positions of a [S] mask; (0, 0) when there are none."""
    where = mask.nonzero().flatten()
    return (int(where[0]), int(where[-1]) + 1) if len(where) else (0, 0)


def common_spans(spans: list[TokenSpans]) -> TokenSpans | None:
    """The batch's spans when every sample has the same; None when they differ (see ``Inputs.meta['spans']``)."""
    return spans[0] if spans and all(s == spans[0] for s in spans) else None


# --- random-init processors ------------------------------------------------------------

def prompt_words(*texts: str, specials: tuple[str, ...] = ()) -> list[str]:
    """Vocabulary for a fallback tokenizer: the prompt's words and punctuation, the synthetic data's words, yes/no."""
    words = []
    for text in texts:
        for token in specials:
            text = text.replace(token, " ")
        words += re.findall(r"\w+|[^\w\s]+", text.lower())  # the pieces pre_tokenizers.Whitespace cuts
    words += [w for w in VOCAB if not w.startswith("[")] + ["yes", "no"]
    return list(dict.fromkeys(words))


def lm_tokenizer(words: list[str], named: dict[str, str], bos: str | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (``fallback_tokenizer``) whose ``named`` special tokens are never split and exist as
    attributes (``tokenizer.image_token``), processors read them so; BOS is prepended when given, as Llama does."""
    roles = {"unk_token": "<unk>", "pad_token": "<pad>"} | ({"bos_token": bos} if bos else {})
    base = fallback_tokenizer([*words, *named.values()], roles)
    tok = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, model_max_length=1 << 16,
                                  extra_special_tokens=dict(named), **roles)
    if bos:
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])
    return tok


def check_vocab(model, tokenizer, vocab_size: int) -> None:
    if len(tokenizer) > vocab_size:
        raise ValueError(f"{type(model).__name__}: the random-init tokenizer needs {len(tokenizer)} ids but the "
                         f"config's vocab_size is {vocab_size}; raise text_config.vocab_size in random_init_config")


def random_tokenizer(model, prompt_format: str, named: dict[str, str], bos: str | None = None,
                     vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """The random-init tokenizer of a chat format: its words, the question's, the captions', and the ``named``
    special tokens; checked against ``vocab_size`` (default: the config's ``text_config.vocab_size``)."""
    tok = lm_tokenizer(prompt_words(prompt_format, QUESTION, specials=tuple(named.values())), named, bos=bos)
    check_vocab(model, tok, model.config.text_config.vocab_size if vocab_size is None else vocab_size)
    return tok


# --- grid cells of tiled images --------------------------------------------------------

def mean_colour(image_processor) -> tuple[int, ...]:
    """The processor's mean as an 8-bit colour: painted over a cell it is ≈ 0 after normalisation."""
    return tuple(round(255 * m) for m in image_processor.image_mean)


def paint_cells(images: list[Image.Image], image_keep: torch.Tensor, colour: tuple[int, ...]) -> list[Image.Image]:
    """Each image with the cells not kept painted ``colour`` (cell geometry from ``pixel_keep``)."""
    out = []
    for image, keep in zip(images, image_keep):
        if bool(keep.all()):
            out.append(image)
            continue
        arr = np.array(image)
        mask = pixel_keep(keep[None], arr.shape[0], arr.shape[1])[0].numpy()
        arr[~mask] = colour
        out.append(Image.fromarray(arr))
    return out


def repainted_pixels(model: GenerativeVLM, inputs: Inputs, image_keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pixel tensors of the inputs' images with the cells not kept painted the mean colour, processed again.

    For tiled inputs (resized crops of a padded canvas) a cell of the original
    image has no simple footprint in the tiles. Rows whose cells are all kept
    come out bit-identical to ``prepare`` (same uint8 path).
    """
    painted = paint_cells(inputs.meta["images"], image_keep, mean_colour(model.processor.image_processor))
    tensors, _, _ = model.encode(painted, inputs.meta["texts"])
    return {k: tensors[k] for k in model.pixel_keys}


# --- the shared model wrapper -----------------------------------------------------------

class GenerativeVLM:
    """A transformers image-text-to-text model behind the LoadedModel contract (yes/no log-odds score).

    Subclasses set ``attention_modules`` (regex of the LM self-attention module
    names), ``image_token_ids`` and override ``_mask_cells`` where
    ``pixel_values`` is not a [B, 3, H, W] tensor.
    """

    family = FAMILY
    capabilities = CAPABILITIES
    attention_modules = r"model\.language_model\.layers\.(\d+)\.self_attn"
    pixel_keys: tuple[str, ...] = ("pixel_values",)

    def __init__(self, spec: ModelSpec, model, processor, prompt: YesNoPrompt, random_init: bool, revision: str,
                 device: str):
        self.spec, self.model, self.processor, self.prompt = spec, model, processor, prompt
        self.random_init, self.revision, self.device = random_init, revision, device
        self.tokenizer = processor.tokenizer
        self.dtype = next(model.parameters()).dtype
        context = prompt.render("a photo")[0]
        self.yes_id = answer_token_id(self.tokenizer, context, prompt.yes)
        self.no_id = answer_token_id(self.tokenizer, context, prompt.no)
        unk = self.tokenizer.unk_token_id
        if self.yes_id == self.no_id or unk in (self.yes_id, self.no_id):
            raise ValueError(f"{spec.name}: the tokenizer does not tell {prompt.yes!r} from {prompt.no!r} "
                             f"(ids {self.yes_id}, {self.no_id}); the yes/no score needs both in its vocabulary")
        self.mask_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else unk
        if self.mask_id is None:
            raise ValueError(f"{spec.name}: the tokenizer has neither a pad nor an unk token to mask captions with")
        self.image_ids = self.image_token_ids()
        self.special_ids = set(self.tokenizer.all_special_ids) - set(self.image_ids)

    # -- architecture hooks --

    def image_token_ids(self) -> tuple[int, ...]:
        """Ids of the LM-sequence positions that carry image features."""
        return (self.model.config.image_token_id,)

    def layer_name(self, module_name: str) -> str:
        return f"lm.{re.fullmatch(self.attention_modules, module_name).group(1)}"

    def encode(self, images: list[Image.Image], texts: list[str]) -> tuple[dict, torch.Tensor, list]:
        """Processor outputs (model kwargs), token character offsets [B, S, 2], placeholder replacements."""
        enc = self.processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side="right",
                             return_offsets_mapping=True, return_text_replacement_offsets=True)
        offsets = enc.pop("offset_mapping")
        replacements = enc.pop("text_replacement_offsets", None) or [[] for _ in texts]
        return dict(enc), offsets, replacements

    def _mask_cells(self, inputs: Inputs, image_keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pixels of the cells not kept → 0 (normalised mean), for [B, 3, H, W] ``pixel_values``."""
        pixels = inputs.tensors["pixel_values"]
        keep = pixel_keep(image_keep, pixels.shape[-2], pixels.shape[-1]).to(pixels.device)
        return {"pixel_values": pixels * keep[:, None].to(pixels.dtype)}

    # -- the contract --

    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        if not len(images) == len(captions) == len(sample_ids):
            raise ValueError(f"{len(images)} images, {len(captions)} captions, {len(sample_ids)} ids")
        images = [im.convert("RGB") for im in images]
        texts, spans = zip(*(self.prompt.render(c) for c in captions)) if captions else ((), ())
        tensors, offsets, replacements = self.encode(images, list(texts))
        attention = tensors["attention_mask"].bool()
        caption = overlap_positions(offsets, attention, [shifted_span(s, r) for s, r in zip(spans, replacements)])
        ids = tensors["input_ids"]
        image = torch.isin(ids, torch.tensor(self.image_ids, dtype=torch.long)) & attention
        special = torch.isin(ids, torch.tensor(sorted(self.special_ids), dtype=torch.long)) & attention & ~image
        lost = [c for c, row in zip(captions, caption) if c.strip() and not row.any()]
        if lost or (caption & (image | special)).any():
            raise RuntimeError(f"{self.spec.name}: caption tokens could not be located in the prompt "
                               f"({'none found for ' + repr(lost[0]) if lost else 'they overlap image/special tokens'})"
                               "; the processor must return offset_mapping and text_replacement_offsets")
        token_spans = [TokenSpans(image=span_of(image[i]), text=span_of(caption[i]),
                                  special=tuple(special[i].nonzero().flatten().tolist())) for i in range(len(ids))]
        meta = {"caption": caption, "image": image, "special": special, "last": last_positions(attention),
                "spans": token_spans, "images": images, "texts": list(texts)}
        return Inputs(tensors=tensors, sample_ids=list(sample_ids), meta=meta)

    def _model_kwargs(self, inputs: Inputs) -> dict:
        return {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in inputs.tensors.items()}

    def _hidden(self, inputs: Inputs) -> torch.Tensor:
        """Last hidden states [B, S, D] of the LM (the head is applied only where the score is read)."""
        base = getattr(self.model, self.model.base_model_prefix)
        return base(**self._model_kwargs(inputs), use_cache=False).last_hidden_state

    @torch.no_grad()
    def score(self, inputs: Inputs) -> torch.Tensor:
        """logit("Yes") − logit("No") of the next token after the prompt, [B]."""
        hidden = self._hidden(inputs)
        last = inputs.meta["last"].to(hidden.device)
        logits = self.model.get_output_embeddings()(hidden[torch.arange(len(last), device=hidden.device), last])
        return (logits[:, self.yes_id] - logits[:, self.no_id]).float().cpu()

    def _with(self, inputs: Inputs, tensors: dict) -> Inputs:
        return Inputs(tensors={**inputs.tensors, **tensors}, sample_ids=list(inputs.sample_ids),
                      meta=dict(inputs.meta))

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        """Whole modalities → baselines: every pixel 0 in normalised space; every caption token → the pad id."""
        tensors = {}
        if not text_keep:
            tensors["input_ids"] = inputs.tensors["input_ids"].masked_fill(inputs.meta["caption"], self.mask_id)
        if not image_keep:
            tensors.update({k: torch.zeros_like(inputs.tensors[k]) for k in self.pixel_keys})
        return self._with(inputs, tensors)

    def players(self, inputs: Inputs) -> Players:
        return Players(text_valid=inputs.meta["caption"].clone())

    def mask_tokens(self, inputs: Inputs, image_keep: torch.Tensor, text_keep: torch.Tensor) -> Inputs:
        """Caption tokens not kept → pad id; grid cells not kept → the normalised mean."""
        caption = inputs.meta["caption"]
        if text_keep.shape != caption.shape or image_keep.dim() != 3 or image_keep.shape[0] != len(inputs):
            raise ValueError(f"mask_tokens: text_keep must be {tuple(caption.shape)} (players().text_valid) and "
                             f"image_keep [{len(inputs)}, g, g]; got {tuple(text_keep.shape)}, "
                             f"{tuple(image_keep.shape)}")
        tensors = {"input_ids": inputs.tensors["input_ids"].masked_fill(caption & ~text_keep.bool(), self.mask_id)}
        if not bool(image_keep.all()):
            tensors.update(self._mask_cells(inputs, image_keep.bool()))
        return self._with(inputs, tensors)

    def _layer_masks(self, inputs: Inputs) -> LayerMasks:
        meta = inputs.meta
        image, caption, special = meta["image"], meta["caption"], meta["special"]
        rows = caption.clone()
        rows[torch.arange(len(rows)), meta["last"]] = True  # the answer row reads out the score
        text = inputs.tensors["attention_mask"].bool() & ~image & ~special
        return LayerMasks(query_rows=rows, image_cols=image, text_cols=text, image_rows=image, text_rows=rows)

    def _masks_fn(self, inputs: Inputs, keep_maps: int, maps: dict):
        masks = self._layer_masks(inputs)

        def fn(layer: str, probs: torch.Tensor) -> LayerMasks:
            if keep_maps:
                maps[layer] = probs[:keep_maps].detach().float().mean(1).cpu()
            return masks
        return fn

    @torch.no_grad()
    def trace(self, inputs: Inputs, keep_maps: int = 0) -> AttentionSummary:
        """Per LM layer: attention of the caption and answer rows onto image / text tokens, reduced in the hook."""
        maps: dict[str, torch.Tensor] = {}
        meta = inputs.meta
        with AttentionHooks(self.model, self.attention_modules, self._masks_fn(inputs, keep_maps, maps),
                            rename=self.layer_name, n_image_tokens=int(meta["image"].sum(1).max()),
                            n_text_tokens=int(meta["caption"].sum(1).max()),
                            spans=common_spans(meta["spans"])) as hooks:
            self._hidden(inputs)
        summary = hooks.summary
        summary.n_text_per_sample = meta["caption"].sum(1)
        summary.maps = maps
        return summary


# --- loading ------------------------------------------------------------------------------

class HFGenerativeAdapter(TransformersAdapter):
    """Opens one transformers image-text-to-text class; subclasses name the classes and the random processor."""

    family = FAMILY
    capabilities = CAPABILITIES
    loaded_cls: type[GenerativeVLM] = GenerativeVLM
    prompt_format = ""

    def load(self, spec: ModelSpec) -> GenerativeVLM:
        model, random_init, revision = self.open(spec)  # spec.device / spec.dtype as for every transformers model
        if random_init:
            processor = self.random_processor(model)
        else:
            processor = load_processor(spec, lambda: self._no_processor(spec))
        return self.loaded_cls(spec, model, processor, self.prompt_for(processor), random_init, revision,
                               self.device)

    def prompt_for(self, processor) -> YesNoPrompt:
        return chat_prompt(processor, self.prompt_format)

    def _no_processor(self, spec: ModelSpec):
        raise WeightsUnavailable(
            spec.name, f"the checkpoint {spec.source} has weights but no processor files "
                       "(preprocessor_config.json / processor_config.json and the tokenizer)", [spec.source],
            "download the complete repository (hf download <id>), or save the processor next to the weights "
            "with processor.save_pretrained(<dir>)")

    def random_processor(self, model):
        raise NotImplementedError
