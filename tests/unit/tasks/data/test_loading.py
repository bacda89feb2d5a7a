import hashlib
import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tasks.data.loading import (
    BadSample, Candidate, Collector, DatasetError, check_caption, content_hash, decode_image, draw, ensure_exists,
    open_image, read_text, unique_ids,
)
from tasks.data.synthetic import make_synthetic


def _encoded(fmt: str, mode: str = "RGB", size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 100 if mode in ("L", "P") else (200, 30, 30, 255)[: len(mode)]).save(buf, fmt)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"),
                                       ("PNG", "P"), ("BMP", "RGB")])
def test_open_image_returns_rgb_pixels(tmp_path, fmt, mode):
    image = open_image(_write(tmp_path / "x.img", _encoded(fmt, mode)))
    assert image.mode == "RGB" and image.size == (24, 16)
    assert image.getpixel((3, 3)) is not None  # decoded: no lazy file handle left behind


def test_a_png_named_jpg_is_fine(tmp_path):
    # The extension is not the format; PIL reads the bytes, and so do we.
    assert open_image(_write(tmp_path / "x.jpg", _encoded("PNG"))).size == (24, 16)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    make_synthetic(1, image_size=64)[0].image.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _garbled(data: bytes) -> bytes:
    bad = bytearray(data)
    for i in range(300, 600):
        bad[i] = 0xFF if i % 2 else 0x00
    return bytes(bad)


@pytest.mark.parametrize("name, data, reason", [
    ("empty.jpg", b"", "empty image file (0 bytes)"),
    ("text.jpg", b"a red circle on the left\n", "not an image: the file holds text"),
    ("blob.jpg", bytes(range(256)) * 4, "not an image: unrecognised file format"),
    ("half.jpg", _jpeg()[:700], "truncated image: the file ends before the image data does"),
    ("short.jpg", _jpeg()[:200], "truncated image: the file ends before the image data does"),
    # Cut right before the scan: PIL says only "cannot load this image"; the missing end marker tells.
    ("header.jpg", _jpeg()[: _jpeg().index(b"\xff\xda")], "truncated image: the file ends before the image data does"),
    ("half.png", _encoded("PNG", size=(64, 64))[:60], "truncated image: the file ends before the image data does"),
    ("garbled.jpg", _garbled(_jpeg()), "corrupt image data (broken data stream when reading image file)"),
])
def test_bad_images_raise_bad_sample_with_the_reason(tmp_path, name, data, reason):
    path = _write(tmp_path / name, data)
    with pytest.raises(BadSample) as info:
        open_image(path)
    assert info.value.reason == reason
    assert info.value.source == str(path) and str(info.value) == f"{path}: {reason}"


def test_missing_file_and_folder_are_bad_samples(tmp_path):
    with pytest.raises(BadSample, match="missing image file$"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(BadSample, match="image path is not a file$"):
        open_image(tmp_path)


def test_decompression_bombs_are_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 24x16 = 384 > 2 x 100
    with pytest.raises(BadSample) as info:
        decode_image(_encoded("PNG"))
    assert info.value.reason.startswith("image too large to decode safely (")


@pytest.mark.parametrize("text, reason", [
    ("a red circle", None),
    (" ".join(["w"] * 64), None),
    (" ".join(["w"] * 65), "over-long caption (65 words > 64)"),
    ("", "empty caption"),
    ("  \t\n ", "empty caption"),
    (None, "empty caption"),
    (5, "caption is not text (int)"),
])
def test_check_caption(text, reason):
    assert check_caption(text) == reason


def test_check_caption_limit_is_a_parameter():
    assert check_caption("one two three four", max_words=3) == "over-long caption (4 words > 3)"
    assert check_caption("one two three", max_words=3) is None


def test_draw_spreads_evenly_and_replaces_bad_items_within_their_group():
    groups = {"a": list(range(0, 10)), "b": list(range(10, 20)), "c": list(range(20, 30))}
    bad = {0, 1, 2, 3, 10}  # group a loses four items, b one
    taken = []
    draw(groups, 8, seed=0, take=lambda i: i not in bad and (taken.append(i) or True))
    counts = Counter(i // 10 for i in taken)
    assert len(taken) == 8 and max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 3
    assert not bad & set(taken)


def test_draw_fills_from_other_groups_when_one_runs_out():
    groups = {"big": list(range(10)), "small": [100, 101]}
    taken = []
    draw(groups, 6, seed=1, take=lambda i: taken.append(i) or True)
    assert sorted(taken)[-2:] == [100, 101] and len(taken) == 6
    everything = []
    draw(groups, None, seed=1, take=lambda i: everything.append(i) or True)
    assert sorted(everything) == list(range(10)) + [100, 101]


def test_draw_is_seeded_and_ignores_input_order():
    def run(groups, seed):
        out = []
        draw(groups, 5, seed, lambda i: out.append(i) or True)
        return out

    groups = {"x": list(range(50))}
    assert run(groups, 3) == run({"x": list(reversed(range(50)))}, 3)
    assert run(groups, 3) != run(groups, 4)


def test_collector_lists_bad_samples_and_hashes_the_used_ones(tmp_path):
    _write(tmp_path / "ok.png", _encoded("PNG"))
    _write(tmp_path / "empty.png", b"")
    collector = Collector(tmp_path, max_words=5)
    candidates = [
        Candidate("ok", tmp_path / "ok.png", " a red circle ", "caps row 1", {"k": 1}),
        Candidate("long", tmp_path / "ok.png", "one two three four five six", "caps row 2", {}),
        Candidate("empty", tmp_path / "empty.png", "fine", "caps row 3", {}),
    ]
    assert [collector.take(c) for c in candidates] == [True, False, False]
    data = collector.finish("folder", tmp_path / "caps.csv", "fix it")
    assert [s.sample_id for s in data.samples] == ["ok"] and data.samples[0].caption == "a red circle"
    assert data.samples[0].attributes == {"k": 1} and data.samples[0].matches is True
    assert data.skipped.to_dict("records") == [
        {"source": "caps row 2", "sample_id": "long", "reason": "over-long caption (6 words > 5)"},
        {"source": str(tmp_path / "empty.png"), "sample_id": "empty", "reason": "empty image file (0 bytes)"},
    ]
    assert data.skip_counts() == {"over-long caption (6 words > 5)": 1, "empty image file (0 bytes)": 1}
    assert data.kind == "folder" and data.root == str(tmp_path) and len(data) == 1


def test_an_empty_dataset_is_an_error_naming_the_reasons(tmp_path):
    collector = Collector(tmp_path)
    collector.take(Candidate("a", tmp_path / "a.png", "x", "r1", {}))
    collector.take(Candidate("b", tmp_path / "b.png", "x", "r2", {}))
    with pytest.raises(DatasetError) as info:
        collector.finish("folder", "caps.csv", "fix the listed files")
    assert str(info.value) == "caps.csv: no usable samples (2 × missing image file): fix the listed files"
    with pytest.raises(DatasetError, match=r"^caps.csv: no usable samples \(it names no samples\): fix$"):
        Collector(tmp_path).finish("folder", "caps.csv", "fix")


def test_content_hash_is_order_free_and_sees_every_field():
    base = {"a": ("a.jpg", "11", "cap a"), "b": ("b.jpg", "22", "cap b")}
    assert content_hash(base) == content_hash(dict(reversed(base.items())))
    # The layout is pinned: the hash is a cache key, so a silent change would invalidate every cache.
    assert content_hash(base) == hashlib.sha256(b"a\0a.jpg\x0011\0cap a\0\0b\0b.jpg\x0022\0cap b\0\0").hexdigest()
    for change in ({"a": ("a.jpg", "12", "cap a")}, {"a": ("a.jpg", "11", "cap A")}, {"a": ("x.jpg", "11", "cap a")}):
        assert content_hash({**base, **change}) != content_hash(base)
    assert content_hash({"a": base["a"]}) != content_hash(base)


def test_read_text_names_the_bad_byte_and_the_fix(tmp_path):
    path = _write(tmp_path / "caps.csv", "image,caption\nx.jpg,café\n".encode("latin-1"))
    with pytest.raises(DatasetError) as info:
        read_text(path)
    assert str(info.value) == (f"{path}: not UTF-8 text (byte 0xe9 at offset 23): save the file as UTF-8 "
                               "(in a spreadsheet: 'CSV UTF-8'; or: iconv -f <its encoding> -t utf-8)")
    assert read_text(_write(tmp_path / "bom.csv", b"\xef\xbb\xbfimage")) == "image"  # a BOM is fine


def test_ensure_exists_names_path_problem_and_fix(tmp_path):
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/x: image folder not found: pass it$"):
        ensure_exists(tmp_path / "x", "image folder", "pass it", want_dir=True)
    _write(tmp_path / "f", b"1")
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/f: image folder not a folder: pass it$"):
        ensure_exists(tmp_path / "f", "image folder", "pass it", want_dir=True)
    with pytest.raises(DatasetError, match=rf"^{tmp_path}: captions file not a file: pass it$"):
        ensure_exists(tmp_path, "captions file", "pass it")
    assert ensure_exists(tmp_path / "f", "captions file", "pass it") == tmp_path / "f"


def test_unique_ids_number_repeats():
    assert unique_ids(["a", "b", "a", "a"]) == ["a", "b", "a#2", "a#3"]
