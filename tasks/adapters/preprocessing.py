"""Image processors and tokenizers: the checkpoint's own when its files are here, else ones built in code.

The built ones (``fallback_tokenizer`` and the BERT-style variant) serve random-init runs and tests, where a
checkpoint has no tokenizer files; their vocabulary is the synthetic captions' words.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from tasks.adapters.contract import ModelSpec
from tasks.adapters.hub import local_checkpoint
from tasks.data.vocabulary import SPECIAL_TOKENS, VOCAB


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


def clip_crop(size: int) -> dict[str, dict[str, int]]:
    """An image processor's geometry à la CLIP (and LLaVA's CLIP tower): the shortest edge resized to ``size``,
    then a centred ``size`` × ``size`` crop."""
    return {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}


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


def caption_vocab() -> list[str]:
    """Words of the synthetic captions: what a random-init model's fallback tokenizer knows."""
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
