import json
import shutil
from collections import Counter

import pytest

from tasks.data.coco import image_categories, load_coco
from tasks.data.fixtures import write_coco_fixture
from tasks.data.loading import TRUNCATED, DatasetError


@pytest.fixture
def coco(tmp_path):
    return write_coco_fixture(tmp_path / "coco", n_images=24, categories=4, corrupt=0, seed=0)


def _load(fx, n, seed=0, stratified=True, **kw):
    return load_coco(fx.captions, fx.images, samples=n, seed=seed, instances=fx.instances if stratified else None, **kw)


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_category_is_the_largest_area_annotation(coco):
    # The fixture lists a smaller object of another category first for 2 images in 3.
    assert image_categories(coco.instances) == coco.categories
    assert len(set(coco.categories.values())) == 4


@pytest.mark.parametrize("n", [4, 7, 10, 24])
def test_stratified_counts_differ_by_at_most_one(coco, n):
    data = _load(coco, n)
    counts = Counter(s.attributes["category"] for s in data.samples)
    assert len(data) == n and len(counts) == min(n, 4)
    assert max(counts.values()) - min(counts.values()) <= 1
    for s in data.samples:
        image_id = s.attributes["image_id"]
        assert s.sample_id == f"coco-{image_id}" and s.attributes["category"] == coco.categories[image_id]
        assert s.caption == coco.first_captions[image_id]  # the first caption, not the second
        assert s.image.mode == "RGB" and s.image.size == (64, 64)
    assert data.kind == "coco" and data.root == str(coco.images) and data.skipped.empty


def test_a_corrupt_image_is_replaced_within_its_category(tmp_path):
    fx = write_coco_fixture(tmp_path, n_images=24, categories=4, corrupt=3, seed=2)
    data = _load(fx, 24)
    assert len(data) == 21
    rows = {tuple(r) for r in data.skipped[["source", "sample_id", "reason"]].itertuples(index=False)}
    assert rows == {(str(path), f"coco-{image_id}", TRUNCATED) for image_id, path in fx.corrupt.items()}
    # With enough good images left in every category, balance survives the skips.
    balanced = _load(fx, 12)
    assert set(Counter(s.attributes["category"] for s in balanced.samples).values()) == {3}


def test_sampling_and_hash_are_deterministic(coco):
    a, b = _load(coco, 8, seed=5), _load(coco, 8, seed=5)
    assert [s.sample_id for s in a.samples] == [s.sample_id for s in b.samples]
    assert a.content_hash == b.content_hash
    other = _load(coco, 8, seed=6)
    assert {s.sample_id for s in other.samples} != {s.sample_id for s in a.samples}
    assert other.content_hash != a.content_hash


def test_unstratified_sampling_is_seeded(coco):
    a, b = _load(coco, 6, seed=1, stratified=False), _load(coco, 6, seed=1, stratified=False)
    assert [s.sample_id for s in a.samples] == [s.sample_id for s in b.samples] and len(a) == 6
    assert all("category" not in s.attributes for s in a.samples)
    assert [s.sample_id for s in _load(coco, 6, seed=2, stratified=False).samples] != [s.sample_id for s in a.samples]
    assert len(_load(coco, 100, stratified=False)) == 24  # asking for more gives all there is


def test_hash_changes_when_a_used_image_changes_only(coco):
    data = _load(coco, 6)
    used = {s.attributes["file_name"] for s in data.samples}
    files = sorted(coco.images.iterdir())
    unused = next(p for p in files if p.name not in used)
    target = next(p for p in files if p.name in used)
    other_jpeg = unused.read_bytes()
    unused.write_bytes(target.read_bytes())
    assert _load(coco, 6).content_hash == data.content_hash  # an unused file changed: same data
    target.write_bytes(other_jpeg)  # another valid image in a used file's place
    changed = _load(coco, 6)
    assert [s.sample_id for s in changed.samples] == [s.sample_id for s in data.samples]
    assert changed.content_hash != data.content_hash


def test_hash_survives_moving_the_dataset(coco, tmp_path):
    moved = shutil.copytree(coco.root, tmp_path / "elsewhere")
    data = load_coco(moved / "annotations/captions_fixture.json", moved / "images", 8,
                     instances=moved / "annotations/instances_fixture.json")
    assert data.content_hash == _load(coco, 8).content_hash


def test_bad_captions_and_missing_images_are_skipped_and_listed(coco):
    ids = sorted(coco.categories)

    def damage(d):
        first = {}
        for ann in d["annotations"]:
            first.setdefault(ann["image_id"], ann)
        first[ids[0]]["caption"] = "   "
        first[ids[1]]["caption"] = "word " * 70
    _edit(coco.captions, damage)
    (coco.images / f"{ids[2]:012d}.jpg").unlink()
    data = _load(coco, 24)
    rows = {r["sample_id"]: r for r in data.skipped.to_dict("records")}
    assert rows[f"coco-{ids[0]}"]["reason"] == "empty caption"
    assert rows[f"coco-{ids[0]}"]["source"].startswith(f"{coco.captions} (annotation id ")
    assert rows[f"coco-{ids[1]}"]["reason"] == "over-long caption (70 words > 64)"
    assert rows[f"coco-{ids[2]}"] == {"source": str(coco.images / f"{ids[2]:012d}.jpg"),
                                      "sample_id": f"coco-{ids[2]}", "reason": "missing image file"}
    assert len(data) == 21 and len(rows) == 3
    assert len(_load(coco, 24, max_words=100)) == 22  # the limit is a parameter


def test_all_images_bad_is_a_dataset_error(tmp_path):
    fx = write_coco_fixture(tmp_path, n_images=5, categories=2, corrupt=5)
    with pytest.raises(DatasetError) as info:
        _load(fx, 3)
    assert str(info.value).startswith(f"{fx.captions}: no usable samples (5 × {TRUNCATED}): check that {fx.images}")


def test_missing_files_name_the_path_and_fix(coco, tmp_path):
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/none.json: COCO captions file not found: pass the "
                                           r"captions JSON, e\.g\. annotations/captions_val2017\.json"):
        load_coco(tmp_path / "none.json", coco.images, 4)
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/val2017: COCO image folder not found: pass the folder "
                                           r"that holds the images captions_fixture\.json names"):
        load_coco(coco.captions, tmp_path / "val2017", 4)
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/i.json: COCO instances file not found"):
        load_coco(coco.captions, coco.images, 4, instances=tmp_path / "i.json")
    with pytest.raises(ValueError, match="samples=0: ask for at least one sample"):
        load_coco(coco.captions, coco.images, 0)


def test_malformed_json_names_file_and_position(coco):
    coco.captions.write_text('{"images": [1, 2,, 3]}')
    with pytest.raises(DatasetError) as info:
        load_coco(coco.captions, coco.images, 4)
    assert str(info.value) == (f"{coco.captions}: not valid JSON (Expecting value at line 1, column 18): "
                               "re-download the annotations or fix the file")


def test_non_utf8_json_is_named(coco):
    coco.captions.write_bytes('{"info": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"not UTF-8 text \(byte 0xe9 at offset 13\): save the file as UTF-8"):
        load_coco(coco.captions, coco.images, 4)


@pytest.mark.parametrize("which, change, message", [
    ("captions", lambda d: d.pop("annotations"),
     "missing key 'annotations': a COCO captions file holds 'images' (id, file_name) and 'annotations' "
     "(image_id, caption): pass annotations/captions_<split>.json"),
    ("captions", lambda d: d["images"][3].pop("file_name"), "images[3] has no key 'file_name'"),
    ("captions", lambda d: d["annotations"][0].pop("caption"), "annotations[0] has no key 'caption'"),
    ("captions", lambda d: d.update(images={"id": 1}), "'images' is a dict, not a list"),
    ("captions", lambda d: d["annotations"][2].update(image_id=999),
     "annotations[2] captions image_id 999, which 'images' does not list"),
    ("instances", lambda d: d.pop("categories"),
     "missing key 'categories': a COCO instances file holds 'annotations' (image_id, category_id, area) and "
     "'categories' (id, name): pass annotations/instances_<split>.json"),
    ("instances", lambda d: d["annotations"][1].pop("area"), "annotations[1] has no key 'area'"),
    ("instances", lambda d: d["annotations"][0].update(category_id=77),
     "annotations[0] names category_id 77, which 'categories' does not list"),
])
def test_missing_keys_name_file_and_key(coco, which, change, message):
    path = coco.captions if which == "captions" else coco.instances
    _edit(path, change)
    with pytest.raises(DatasetError) as info:
        _load(coco, 4)
    assert str(info.value).startswith(f"{path}: {message}")


def test_fixture_is_reproducible(tmp_path):
    a = write_coco_fixture(tmp_path / "a", seed=3, corrupt=2)
    b = write_coco_fixture(tmp_path / "b", seed=3, corrupt=2)
    assert a.captions.read_bytes() == b.captions.read_bytes()
    assert sorted(a.corrupt) == sorted(b.corrupt) and len(a.corrupt) == 2
    assert [p.read_bytes() for p in sorted(a.images.iterdir())] == [p.read_bytes() for p in sorted(b.images.iterdir())]
    with pytest.raises(ValueError, match="categories=17: use 1..16"):
        write_coco_fixture(tmp_path / "c", categories=17)
