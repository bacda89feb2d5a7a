import io
import json
import shutil

import pandas as pd
import pytest
from PIL import Image

from tasks.data.fixtures import write_folder_fixture
from tasks.data.folder import load_folder
from tasks.data.loading import DatasetError


@pytest.fixture(params=["csv", "jsonl"])
def folder(request, tmp_path):
    return write_folder_fixture(tmp_path / "byo", n_good=8, seed=0, fmt=request.param)


def _png(colour=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buf, "PNG")
    return buf.getvalue()


def _byo(tmp_path, rows, name="caps.csv"):
    """A tiny folder: every image a valid PNG; ``rows`` are (image, caption)."""
    (tmp_path / "img").mkdir(exist_ok=True)
    for image, _ in rows:
        (tmp_path / image).write_bytes(_png())
    pd.DataFrame(rows, columns=["image", "caption"]).to_csv(tmp_path / name, index=False)
    return tmp_path / name


def test_every_defect_is_skipped_with_its_reason(folder):
    data = load_folder(folder.root, folder.captions, samples=None, seed=0)
    assert {s.sample_id: s.caption for s in data.samples} == folder.good
    assert dict(zip(data.skipped.sample_id, data.skipped.reason)) == folder.bad
    assert set(folder.bad.values()) == {
        "empty caption", "over-long caption (70 words > 64)", "empty image file (0 bytes)", "missing image file",
        "truncated image: the file ends before the image data does", "not an image: the file holds text",
    }
    assert list(data.skipped.columns) == ["source", "sample_id", "reason"]
    sources = dict(zip(data.skipped.sample_id, data.skipped.source))
    assert sources["img/zero_byte.jpg"] == str(folder.root / "img/zero_byte.jpg")  # the file to fix
    unit = "row" if folder.captions.suffix == ".csv" else "line"
    assert sources["img/empty_caption.png"].startswith(f"{folder.captions} {unit} ")  # the row to fix
    assert data.kind == "folder" and data.root == str(folder.root)
    assert all(s.image.mode == "RGB" for s in data.samples)


def test_samples_are_drawn_with_the_seed(folder):
    a = load_folder(folder.root, folder.captions, samples=3, seed=4)
    b = load_folder(folder.root, folder.captions, samples=3, seed=4)
    assert [s.sample_id for s in a.samples] == [s.sample_id for s in b.samples]
    assert len(a) == 3 and {s.sample_id for s in a.samples} <= set(folder.good)
    assert a.content_hash == b.content_hash
    c = load_folder(folder.root, folder.captions, samples=3, seed=5)
    assert {s.sample_id for s in c.samples} != {s.sample_id for s in a.samples}
    with pytest.raises(ValueError, match="samples=0: ask for at least one sample, or None for all rows"):
        load_folder(folder.root, folder.captions, samples=0, seed=0)


def test_max_words_is_a_parameter(folder):
    data = load_folder(folder.root, folder.captions, None, 0, max_words=70)
    assert "img/long_caption.png" in {s.sample_id for s in data.samples}  # 70 words: now within the limit
    with pytest.raises(DatasetError, match=r"no usable samples \(12 × over-long caption \(6 words > 5\), "):
        load_folder(folder.root, folder.captions, None, 0, max_words=5)  # every 6-word "a red circle on the left" row


def test_hash_is_row_order_free_and_sees_image_bytes(tmp_path):
    rows = [("img/a.png", "a green thing"), ("img/b.png", "another green thing")]
    captions = _byo(tmp_path, rows)
    first = load_folder(tmp_path, captions).content_hash
    pd.DataFrame(rows[::-1], columns=["image", "caption"]).to_csv(captions, index=False)
    assert load_folder(tmp_path, captions).content_hash == first
    (tmp_path / "img/b.png").write_bytes(_png((10, 200, 31)))  # one pixel value differs
    assert load_folder(tmp_path, captions).content_hash != first
    moved = shutil.copytree(tmp_path, tmp_path.parent / (tmp_path.name + "-moved"))
    assert load_folder(moved, moved / "caps.csv").content_hash == load_folder(tmp_path, captions).content_hash


def test_an_image_on_several_rows_gives_several_samples(tmp_path):
    captions = _byo(tmp_path, [("img/a.png", "one caption"), ("img/a.png", "another caption")])
    data = load_folder(tmp_path, captions)
    assert [(s.sample_id, s.caption) for s in sorted(data.samples, key=lambda s: s.sample_id)] == [
        ("img/a.png", "one caption"), ("img/a.png#2", "another caption")]


def test_jsonl_null_empty_and_non_text_values(tmp_path):
    (tmp_path / "a.png").write_bytes(_png())
    lines = [{"image": "a.png", "caption": None}, {"image": "a.png", "caption": 7},
             {"image": None, "caption": "fine"}, {"image": "a.png", "caption": "fine"}]
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    data = load_folder(tmp_path, path)
    assert [s.sample_id for s in data.samples] == ["a.png#3"]
    assert dict(zip(data.skipped.sample_id, data.skipped.reason)) == {
        "a.png": "empty caption", "a.png#2": "caption is not text (int)", "": "no image path"}
    assert dict(zip(data.skipped.sample_id, data.skipped.source))[""] == f"{path} line 3"


def test_non_utf8_captions_name_the_file_and_the_fix(tmp_path):
    captions = _byo(tmp_path, [("img/a.png", "x")])
    captions.write_bytes("image,caption\nimg/a.png,un caf\u00e9\n".encode("cp1252"))
    with pytest.raises(DatasetError) as info:
        load_folder(tmp_path, captions)
    assert str(info.value) == (f"{captions}: not UTF-8 text (byte 0xe9 at offset 30): save the file as UTF-8 "
                               "(in a spreadsheet: 'CSV UTF-8'; or: iconv -f <its encoding> -t utf-8)")


@pytest.mark.parametrize("name, content, message", [
    ("caps.csv", "img,text\na.png,x\n", "missing column 'image' (found: img, text)"),
    ("caps.csv", "image,text\na.png,x\n", "missing column 'caption' (found: image, text)"),
    ("caps.csv", "", "empty file"),
    ("caps.jsonl", '{"image": "a.png", "caption": "x"}\n{"image": "a.png"\n',
     "line 2 is not valid JSON (Expecting ',' delimiter)"),
    ("caps.jsonl", '{"image": "a.png"}\n', "line 1 has no key 'caption'"),
    ("caps.jsonl", '["a.png", "x"]\n', "line 1 is a JSON list, not an object"),
    ("caps.jsonl", "\n\n", "empty file"),
    ("caps.txt", "a.png x\n", "unknown captions format '.txt'"),
])
def test_malformed_captions_files_are_dataset_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError) as info:
        load_folder(tmp_path, path)
    assert str(info.value).startswith(f"{path}: {message}: a captions file is a CSV with a header row "
                                      "image,caption or a JSONL file with keys image, caption")


def test_missing_paths_and_an_empty_dataset(tmp_path):
    captions = _byo(tmp_path, [("img/a.png", "")])
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/none: image folder not found: pass the folder that "
                                           "the captions file's image paths are relative to$"):
        load_folder(tmp_path / "none", captions)
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/none.csv: captions file not found: pass an existing file"):
        load_folder(tmp_path, tmp_path / "none.csv")
    with pytest.raises(DatasetError) as info:
        load_folder(tmp_path, captions)
    assert str(info.value) == (f"{captions}: no usable samples (1 × empty caption): fix the files listed as "
                               f"skipped, or check that {tmp_path} is the folder the image paths are relative to")


def test_fixture_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="fmt='tsv': use 'csv' or 'jsonl'"):
        write_folder_fixture(tmp_path, fmt="tsv")


def test_image_paths_outside_the_root_and_special_files_are_skipped(tmp_path, monkeypatch):
    """Issue 15: an absolute path or ../ outside the dataset folder is not read; a FIFO is refused, never opened."""
    import os

    root, outside = tmp_path / "images", tmp_path / "elsewhere"
    root.mkdir(), outside.mkdir()
    for folder in (root, outside):
        Image.new("RGB", (8, 8), "red").save(folder / "ok.png")
    os.mkfifo(root / "pipe.png")
    (root / "link.png").symlink_to(outside / "ok.png")
    captions = tmp_path / "caps.csv"
    captions.write_text("image,caption\nok.png,a red square\n"
                        f"{outside / 'ok.png'},absolute path\n../elsewhere/ok.png,dot dot\npipe.png,a fifo\nlink.png,a link out\n")
    loaded = load_folder(root, captions)
    assert len(loaded) == 1
    reasons = dict(zip(loaded.skipped["sample_id"], loaded.skipped["reason"]))
    assert sorted(reasons.values()) == sorted(["outside the dataset folder: keep image paths relative to it, or list the "
                                               "other folder in FUSIONAUDIT_DATA_ROOTS"] * 3
                                              + ["not a regular file (a pipe, socket or device): only image files are read"])
    monkeypatch.setenv("FUSIONAUDIT_DATA_ROOTS", str(outside))
    assert len(load_folder(root, captions)) == 4  # an allow-listed folder is readable
