import numpy as np
import pytest

from tasks.data.synthetic import (
    _RGB, COLOURS, MASK_ID, PAD_ID, POSITIONS, SHAPES, UNK_ID, VOCAB,
    caption_for, dataset_hash, make_synthetic, tokenize,
)


def test_same_seed_gives_identical_bytes():
    a, b = make_synthetic(16, seed=3), make_synthetic(16, seed=3)
    assert [s.image.tobytes() for s in a] == [s.image.tobytes() for s in b]
    assert dataset_hash(a) == dataset_hash(b)
    assert dataset_hash(a) != dataset_hash(make_synthetic(16, seed=4))


def test_samples_are_rgb_at_the_requested_size():
    for size in (32, 64):
        s = make_synthetic(4, image_size=size)[0]
        assert s.image.mode == "RGB" and s.image.size == (size, size)


def test_about_half_the_captions_mismatch():
    samples = make_synthetic(400, seed=1)
    assert 0.4 < np.mean([s.matches for s in samples]) < 0.6
    for s in samples:
        said = s.caption_attributes
        assert s.caption == caption_for(said["shape"], said["colour"], said["position"])
        assert (said == s.attributes) == s.matches
        assert set(s.attributes) == {"shape", "colour", "position"}
        assert s.attributes["shape"] in SHAPES and s.attributes["colour"] in COLOURS


def test_sample_ids_are_unique():
    ids = [s.sample_id for s in make_synthetic(50)]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("index", range(12))
def test_image_shows_its_attributes(index):
    s = make_synthetic(12, seed=5)[index]
    pixels = np.asarray(s.image).astype(int)
    ys, xs = np.nonzero((np.abs(pixels - _RGB[s.attributes["colour"]]).sum(-1) < 10))
    assert len(xs) > 10  # the shape is drawn in its colour
    cx, cy = xs.mean() - 16, ys.mean() - 16
    expected = {"left": cx < -3, "right": cx > 3, "top": cy < -3, "bottom": cy > 3}
    assert expected[s.attributes["position"]], (s.attributes, cx, cy)


def test_tokenize_pads_truncates_and_marks_unknown_words():
    ids = tokenize("A red circle on the left", max_len=8)
    assert [VOCAB[i] for i in ids[:6]] == ["a", "red", "circle", "on", "the", "left"]
    assert ids[6:] == [PAD_ID, PAD_ID]
    assert len(tokenize("a red circle on the left", max_len=3)) == 3
    assert tokenize("a purple blob", max_len=3) == [VOCAB.index("a"), UNK_ID, UNK_ID]
    assert MASK_ID != PAD_ID and {"[PAD]", "[MASK]", "[CLS]"} <= set(VOCAB)
    assert all(w in VOCAB for w in SHAPES + COLOURS + POSITIONS)
