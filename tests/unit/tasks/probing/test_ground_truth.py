"""Ground truth: exact boxes for the synthetic shapes, a screening set with free positions, COCO's real boxes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.data.loading import DatasetError
from tasks.data.synthetic import draw_shape, make_synthetic
from tasks.probing.ground_truth import coco_boxes, position_class, screening_set, split


def _painted_box(image) -> tuple[float, ...]:
    """The box of the non-background pixels, as fractions of the side."""
    arr = np.asarray(image.convert("RGB")).astype(int)
    ys, xs = np.nonzero((arr != arr[0, 0]).any(-1))
    size = arr.shape[0]
    return xs.min() / size, ys.min() / size, (xs.max() + 1) / size, (ys.max() + 1) / size


def test_synthetic_samples_carry_the_exact_box_of_what_is_drawn():
    for s in make_synthetic(24, seed=3, image_size=64):
        painted = _painted_box(s.image)
        assert np.allclose(painted, s.box, atol=2 / 64), (s.sample_id, painted, s.box)


def test_screening_boxes_match_the_pixels_and_empty_images_have_none():
    data = screening_set(60, seed=1, image_size=64, empty_fraction=0.25)
    assert data.content_hash == screening_set(60, seed=1, image_size=64, empty_fraction=0.25).content_hash
    empty = [s for s in data.samples if not s.present]
    assert 5 <= len(empty) <= 25 and all(s.position == -1 for s in empty)
    for s in data.samples:
        if s.present:
            assert np.allclose(_painted_box(s.image), s.box, atol=2 / 64)


def test_screening_position_is_independent_of_shape_and_colour():
    data = screening_set(900, seed=0, image_size=32, empty_fraction=0.0)
    positions = data.positions()
    assert set(positions) == set(range(9))  # every 3 × 3 cell is used
    shapes = np.array([s.caption.split()[-1] for s in data.samples])
    # the centre's distribution is the same for every shape (chi-square of shape × cell)
    from scipy.stats import chi2_contingency
    table = np.array([[np.sum((shapes == sh) & (positions == c)) for c in range(9)] for sh in np.unique(shapes)])
    assert chi2_contingency(table).pvalue > 0.01


def test_position_class_and_split():
    assert position_class((0.0, 0.0, 0.2, 0.2)) == 0 and position_class((0.8, 0.8, 1.0, 1.0)) == 8
    assert position_class(None) == -1
    train, test = split(50, 0.4, seed=2)
    assert len(test) == 20 and not set(train) & set(test) and len(train) + len(test) == 50


def _write_coco(tmp_path, n: int = 6):
    """A tiny COCO split whose instance boxes are the drawn shapes' boxes; one image has no instance."""
    images = tmp_path / "images"
    images.mkdir()
    rows, anns, truth = [], [], {}
    for i in range(n):
        cx, cy, r = 12 + 6 * i, 20 + 3 * i, 6 + i
        image = draw_shape(64, "square", "red", cx, cy, r)
        image.save(images / f"{i:012d}.png")
        rows.append({"id": i, "file_name": f"{i:012d}.png", "width": 64, "height": 64})
        if i == n - 1:
            truth[i] = None
            continue
        anns.append({"id": 100 + i, "image_id": i, "category_id": 1, "iscrowd": 0,
                     "bbox": [cx - r, cy - r, 2 * r, 2 * r], "area": 4 * r * r})
        anns.append({"id": 200 + i, "image_id": i, "category_id": 1, "iscrowd": 0,  # a smaller one: not the target
                     "bbox": [0, 0, 3, 3], "area": 9})
        truth[i] = ((cx - r) / 64, (cy - r) / 64, (cx + r) / 64, (cy + r) / 64)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": rows, "annotations": anns, "categories": [{"id": 1, "name": "square"}]}))
    return path, images, truth


def test_coco_instances_supply_the_largest_objects_box(tmp_path):
    instances, images, truth = _write_coco(tmp_path)
    data = coco_boxes(instances, images, n=6, seed=0)
    assert data.kind == "coco" and len(data.samples) == 6
    for s in data.samples:
        expected = truth[int(s.sample_id.split("-")[1])]
        assert (s.box is None) == (expected is None)
        if expected:
            assert np.allclose(s.box, expected) and np.allclose(_painted_box(s.image), expected, atol=2 / 64)


def test_coco_bad_input_names_the_file(tmp_path):
    instances, images, _ = _write_coco(tmp_path)
    with pytest.raises(DatasetError, match="only 6 readable images for 9 samples"):
        coco_boxes(instances, images, n=9)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="not a COCO instances file"):
        coco_boxes(broken, images, n=1)
