"""The words of the synthetic captions and their word-level tokenizer, nothing learned.

Kept apart from tasks.data.synthetic (which draws the images) so that adapters, whose
random-init tokenizers and calibration zoo read these words, import no data generator.
"""
from __future__ import annotations

import re

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
POSITIONS = ("left", "right", "top", "bottom")

SPECIAL_TOKENS = ("[PAD]", "[MASK]", "[CLS]", "[UNK]")
VOCAB: tuple[str, ...] = SPECIAL_TOKENS + ("a", "on", "the") + COLOURS + SHAPES + POSITIONS
PAD_ID, MASK_ID, CLS_ID, UNK_ID = range(len(SPECIAL_TOKENS))
_INDEX = {word: i for i, word in enumerate(VOCAB)}


def tokenize(caption: str, max_len: int) -> list[int]:
    """Word ids, truncated to ``max_len`` and right-padded with [PAD]."""
    words = re.findall(r"[a-z]+", caption.lower())[:max_len]
    ids = [_INDEX.get(w, UNK_ID) for w in words]
    return ids + [PAD_ID] * (max_len - len(ids))
