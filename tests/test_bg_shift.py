"""The synthetic background-shift set (CF/F's IN-9 mould) on real MNIST and CIFAR-10:
exact counts, exact foregrounds and masks, the IN-9 test-set rules, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from debiaskit.data import infill
from debiaskit.data.protocols import build_data
from debiaskit.data.sources import load_source
from debiaskit.errors import ConfigError
from parity import require_data


@pytest.fixture(scope="module")
def small(data_dir):
    require_data("cifar10.npz")
    return build_data("bg_shift", data_dir=data_dir, train_per_class=200, test_per_class=40)


@pytest.mark.slow
def test_training_counts_are_exact(small):
    train = small.train
    counts = torch.zeros(10, 10, dtype=torch.long)
    counts.index_put_((train.y, train.b), torch.ones(len(train.y), dtype=torch.long),
                      accumulate=True)
    assert counts.diagonal().tolist() == [190] * 10  # int(200 * 0.95)
    assert (counts.sum(1) == 200).all() and int(train.aligned.sum()) == 1900
    off = counts.clone().fill_diagonal_(0)
    assert off.max() <= 2 and (off > 0).sum(1).min() >= 5  # the 10 others spread out


def test_foreground_pixels_are_exactly_the_mask(small):
    for ds in (small.train, *small.evals.values()):
        x, mask = ds.x.permute(0, 2, 3, 1), ds.mask
        assert mask.any((1, 2)).all()  # every image has a digit
        for i in range(0, len(ds), 97):
            fg = x[i][mask[i]]
            assert (fg == fg[0]).all()  # one colour per digit
            assert fg[0].max() == 255 and fg[0].min() == 0  # fully saturated, full value


def _background_class(image, mask, cifar_x, cifar_y) -> int:
    """The class of the CIFAR image whose pixels outside ``mask`` equal ``image``'s."""
    keep = ~mask
    hits = [k for k in range(len(cifar_x))
            if np.array_equal(cifar_x[k][keep], image[keep])]
    assert len(hits) == 1
    return int(cifar_y[hits[0]]), hits[0]


@pytest.mark.slow
def test_test_sets_follow_in9_rules_on_one_set_of_foregrounds(small, data_dir):
    cifar = load_source("cifar10", data_dir).split("test")
    ev = small.evals
    assert list(ev) == ["original", "mixed_same", "mixed_rand", "mixed_next"]
    y = ev["original"].y
    assert (y.bincount() == 40).all()
    for name in ev:
        assert torch.equal(ev[name].y, y) and torch.equal(ev[name].mask, ev["original"].mask)
        inside = ev[name].mask[:, None].expand_as(ev[name].x)
        assert torch.equal(ev[name].x[inside], ev["original"].x[inside])
    assert torch.equal(ev["original"].b, y) and torch.equal(ev["mixed_same"].b, y)
    assert torch.equal(ev["mixed_next"].b, (y + 1) % 10)
    rand = ev["mixed_rand"].b
    assert (rand != y).all() and len(rand.unique()) == 10
    for i in (0, 57, 399):  # the backgrounds are real CIFAR-10 test images of that class
        mask = ev["original"].mask[i].numpy()
        found = {}
        for name in ev:
            image = ev[name].x[i].permute(1, 2, 0).numpy()
            found[name] = _background_class(image, mask, cifar.x, cifar.y)
            assert found[name][0] == int(ev[name].b[i])
        assert found["original"][1] != found["mixed_same"][1]  # another image, same class


def test_seeded_and_reproducible(small, data_dir):
    again = build_data("bg_shift", data_dir=data_dir, train_per_class=200, test_per_class=40)
    other = build_data("bg_shift", data_dir=data_dir, train_per_class=200, test_per_class=40,
                       seed=1)
    assert again.train.checksum() == small.train.checksum()
    assert other.train.checksum() != small.train.checksum()
    at99 = build_data("bg_shift", data_dir=data_dir, train_per_class=200, test_per_class=40,
                      conflict_ratio=0.01)
    assert int(at99.train.aligned.sum()) == 1980


def test_mask_boxes_on_a_hand_made_mask():
    mask = torch.zeros(2, 5, 6, dtype=torch.bool)
    mask[0, 1, 2] = mask[0, 3, 4] = True  # two pixels: the box is rows 1-3, columns 2-4
    box = infill.mask_boxes(mask)
    want = torch.zeros(5, 6, dtype=torch.bool)
    want[1:4, 2:5] = True
    assert torch.equal(box[0], want)
    assert not box[1].any()  # an empty mask has no box


@pytest.mark.parametrize("params, words", [
    ({"fg_min": 20, "fg_max": 12}, "fg_min"), ({"train_per_class": 0}, "train_per_class"),
    ({"test_per_class": 5000}, "test_per_class"), ({"conflict_ratio": 1.5}, "conflict"),
])
def test_bad_parameters(data_dir, params, words):
    with pytest.raises(ConfigError, match=words):
        build_data("bg_shift", data_dir=data_dir, **params)


def test_smaller_images_and_faint_digits(data_dir):
    # image_size: backgrounds resized with PIL bicubic, digits placed inside the smaller
    # image; fg_opacity: a digit pixel is the rounded mix of its colour and the background
    require_data("cifar10.npz")
    from debiaskit.data.protocols.resize import resize_images

    opts = dict(data_dir=data_dir, train_per_class=20, test_per_class=5, image_size=16,
                fg_min=8, fg_max=12)
    solid = build_data("bg_shift", **opts)
    faint = build_data("bg_shift", fg_opacity=0.25, **opts)
    assert solid.train.x.shape == (200, 3, 16, 16) and solid.train.mask.shape == (200, 16, 16)
    sides = solid.train.mask.any(1).sum(1)  # rows touched by each digit
    assert sides.max() <= 12 and torch.equal(solid.train.mask, faint.train.mask)
    assert faint.params["fg_opacity"] == 0.25 and "fg_opacity" not in solid.params
    # outside the digit both are the resized CIFAR photograph; find it for image 0
    cifar = load_source("cifar10", data_dir)
    x0, m0 = solid.train.x[0].permute(1, 2, 0).numpy(), solid.train.mask[0].numpy()
    small = resize_images(cifar.x_train[cifar.y_train == int(solid.train.b[0])], 16)
    hit = [bg for bg in small if np.array_equal(bg[~m0], x0[~m0])]
    assert len(hit) == 1
    colour = x0[m0][0].astype(np.float64)
    want = np.rint(0.25 * colour + 0.75 * hit[0][m0].astype(np.float64))
    assert np.array_equal(faint.train.x[0].permute(1, 2, 0).numpy()[m0], want.astype(np.uint8))


@pytest.mark.parametrize("params, words", [
    ({"image_size": 64}, "image_size=64 is larger than CIFAR-10's 32"),
    ({"fg_opacity": 0.0}, "fg_opacity=0.0 must be a number in (0, 1]"),
    ({"image_size": 16}, "fg_max=24 must be an integer in [4, 16]"),
])
def test_bad_size_or_opacity_is_refused(data_dir, params, words):
    with pytest.raises(ConfigError) as err:
        build_data("bg_shift", data_dir=data_dir, train_per_class=5, test_per_class=5,
                   **params)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_a_background_pool_serves_training_and_test_sets_alike(data_dir):
    # bg_pool: every background, train and test, is one of that many CIFAR-10 training
    # photographs of its class; the test sets keep IN-9's rules within the pool
    require_data("cifar10.npz")
    data = build_data("bg_shift", data_dir=data_dir, train_per_class=10, test_per_class=3,
                      bg_pool=3)
    cifar = load_source("cifar10", data_dir)
    by_class = {k: np.flatnonzero(cifar.y_train == k) for k in range(10)}
    images = {k: cifar.x_train[v].reshape(len(v), -1, 3) for k, v in by_class.items()}
    used = {}
    for name, ds in (("train", data.train), *data.evals.items()):
        for i in range(len(ds)):
            image, keep = ds.x[i].permute(1, 2, 0).numpy(), ~ds.mask[i].numpy()
            k = int(ds.b[i])  # the bias must be the class of the pooled photograph
            flat, where = image.reshape(-1, 3), np.flatnonzero(keep.ravel())
            # a few background pixels narrow the search, then every one must match
            cand = np.flatnonzero((images[k][:, where[:24]] == flat[where[:24]]).all((1, 2)))
            same = [c for c in cand if (images[k][c, where] == flat[where]).all()]
            assert len(same) == 1
            used.setdefault(k, set()).add(int(by_class[k][same[0]]))
            if name == "mixed_same":
                original = data.evals["original"].x[i].permute(1, 2, 0).numpy()
                assert not np.array_equal(original[~ds.mask[i].numpy()],
                                          image[~ds.mask[i].numpy()])
    assert sorted(used) == list(range(10)) and all(len(v) == 3 for v in used.values())
    with pytest.raises(ConfigError, match="bg_pool=1 must be 0"):
        build_data("bg_shift", data_dir=data_dir, train_per_class=5, test_per_class=5,
                   bg_pool=1)
