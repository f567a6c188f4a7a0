"""Readers of published layouts (Waterbirds, IN-9, CelebA), each on a tiny copy of its
layout that the test writes: exact labels, attributes, splits and masks, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from debiaskit.data.protocols import build_data
from debiaskit.errors import ConfigError, DataError


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(seed, size=16):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _waterbirds(root):
    folder = root / "waterbird_complete95_forest2water2"
    rows = ["img_id,img_filename,y,split,place,place_filename"]
    # (y, split, place): train 3 aligned + 1 conflicting, val 2, test 2 original + 2 flip
    spec = [(0, 0, 0), (1, 0, 1), (1, 0, 1), (0, 0, 1), (0, 1, 0), (1, 1, 0),
            (0, 2, 0), (1, 2, 1), (1, 2, 0), (0, 2, 1)]
    for i, (y, split, place) in enumerate(spec):
        name = f"{'001.Albatross' if y else '002.Sparrow'}/bird_{i}.jpg"
        _save(folder / name, _image(i))
        seg = np.zeros((16, 16), dtype=np.uint8)
        seg[4:12, 4 + i % 3:10] = 255
        seg[0, 0] = 100  # below the majority threshold: background
        _save((folder / "segmentations" / name).with_suffix(".png"), seg)
        rows.append(f"{i + 1},{name},{y},{split},{place},places/x.jpg")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder, spec


def test_waterbirds_layout(tmp_path):
    folder, spec = _waterbirds(tmp_path)
    bundle = build_data("waterbirds", data_dir=str(tmp_path), image_size=16)
    train = bundle.train
    assert train.y.tolist() == [0, 1, 1, 0] and train.b.tolist() == [0, 1, 1, 1]
    assert train.aligned.tolist() == [True, True, True, False]
    assert list(bundle.evals) == ["val", "original", "flip"]
    assert bundle.evals["original"].y.tolist() == [0, 1]
    assert bundle.evals["flip"].y.tolist() == [1, 0] and bundle.evals["flip"].b.tolist() == [0, 1]
    assert train.mask is not None and train.mask[0].sum() == 8 * 6 and not train.mask[0, 0, 0]
    assert np.array_equal(train.x[0].permute(1, 2, 0).numpy(),
                          np.asarray(Image.open(folder / "002.Sparrow/bird_0.jpg").convert("RGB")))
    (folder / "metadata.csv").write_text(
        "img_filename,y,split,place\n002.Sparrow/bird_0.jpg,0,7,0\n")
    with pytest.raises(DataError, match="split must be 0/1/2"):
        build_data("waterbirds", data_dir=str(tmp_path), image_size=16)


def _in9(root, with_npy=True):
    folder = root / "bg_challenge"
    classes = ("00_dog", "01_bird")
    for c, cls in enumerate(classes):
        for i in range(2):
            name = f"n0{c}_{i}.JPEG"
            # smooth and bright (JPEG keeps it close), the foreground box blacked out
            ramp = np.linspace(120, 230, 16, dtype=np.uint8)
            original = np.stack([np.add.outer(ramp, np.zeros(16, np.uint8)),
                                 np.add.outer(np.zeros(16, np.uint8), ramp),
                                 np.full((16, 16), 150 + 20 * c + i, np.uint8)], -1)
            no_fg = original.copy()
            no_fg[2:6, 3:9] = 0  # the foreground removed
            for split in ("train", "val"):
                _save(folder / "original" / split / cls / name, original)
                _save(folder / "no_fg" / split / cls / name, no_fg)
            for variant in ("mixed_same", "mixed_rand", "mixed_next"):
                _save(folder / variant / "val" / cls / name, _image(100 + 10 * c + i))
            if with_npy:
                mask = np.zeros((16, 16), dtype=bool)
                mask[2:6, 3:9] = True
                (folder / "fg_mask" / "val" / cls).mkdir(parents=True, exist_ok=True)
                np.save(folder / "fg_mask" / "val" / cls / f"n0{c}_{i}.npy", mask)
    return folder


def test_in9_layout(tmp_path):
    _in9(tmp_path)
    bundle = build_data("in9", data_dir=str(tmp_path), image_size=16)
    assert bundle.train.y.tolist() == [0, 0, 1, 1] and bundle.train.num_classes == 2
    assert list(bundle.evals) == ["original", "mixed_same", "mixed_rand", "mixed_next", "no_fg"]
    box = torch.zeros(16, 16, dtype=torch.bool)
    box[2:6, 3:9] = True
    assert torch.equal(bundle.evals["original"].mask[0], box)  # from fg_mask .npy
    # train has no fg_mask arrays: its masks are where no_fg differs from the original
    diff = bundle.train.mask[0]
    assert diff[~box].float().mean() < 0.05 and diff[box].float().mean() > 0.9
    assert bundle.evals["mixed_next"].mask is None


def test_celeba_layout(tmp_path):
    folder = tmp_path / "celeba"
    names = ["Male", "Blond_Hair", "Smiling"]
    rows = [("a.jpg", 1, -1, 1), ("b.jpg", -1, 1, 1), ("c.jpg", -1, 1, -1),
            ("d.jpg", 1, 1, -1), ("e.jpg", -1, -1, 1), ("f.jpg", 1, -1, -1)]
    for i, row in enumerate(rows):
        _save(folder / "img_align_celeba" / row[0], _image(i, 20))
    lines = [str(len(rows)), " ".join(names)] + [" ".join(map(str, r)) for r in rows]
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = ["a.jpg 0", "b.jpg 0", "c.jpg 0", "d.jpg 0", "e.jpg 1", "f.jpg 2"]
    (folder / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    bundle = build_data("celeba", data_dir=str(tmp_path), image_size=8)
    train = bundle.train
    assert train.y.tolist() == [0, 1, 1, 1] and train.b.tolist() == [1, 0, 0, 1]
    # aligned bias = each class's majority: not blond -> male, blond -> female
    assert train.aligned_bias.tolist() == [1, 0]
    assert train.aligned.tolist() == [True, True, True, False]
    assert train.x.shape == (4, 3, 8, 8) and list(bundle.evals) == ["valid", "test"]
    with pytest.raises(DataError, match="no attribute 'Bald'"):
        build_data("celeba", data_dir=str(tmp_path), target="Bald")
    with pytest.raises(ConfigError, match="bias 'Blond_Hair'"):
        build_data("celeba", data_dir=str(tmp_path), bias="Blond_Hair")


def test_missing_layouts_are_one_line_errors(tmp_path):
    for name, words in (("waterbirds", "no Waterbirds"), ("in9", "no IN-9"),
                        ("celeba", "no CelebA")):
        with pytest.raises(DataError, match=words):
            build_data(name, data_dir=str(tmp_path))
        with pytest.raises(ConfigError, match="image_size 4 is out of range"):
            build_data(name, data_dir=str(tmp_path), image_size=4)
