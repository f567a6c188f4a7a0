"""shortcut_mnist on real MNIST (and CIFAR-10 for its scenes): exact counts per (class,
bias), each kind's shortcut where its bias value says (colour, mark pixels, the grating's
frequency, the background photograph's class), and bad parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from debiaskit.data.protocols import build_data, protocol_params
from debiaskit.data.sources import load_source
from debiaskit.errors import ConfigError
from parity import require_data

# train_per_class=100 at conflict_ratio=0.09: int(100 * 0.91) = 91 aligned per class and 9
# conflicting, one for each other bias value; test_per_class=30 at 10 % aligned: 3 aligned,
# then chunks of ceil(27 / 9) = 3, so every (class, bias) cell holds exactly 3
SMALL = {"train_per_class": 100, "test_per_class": 30, "conflict_ratio": 0.09}
#: the mark's top-left corner per bias value (the card: clockwise from the top-left)
CORNERS = [(1, 1), (1, 9), (1, 16), (1, 24), (12, 24), (24, 24), (24, 16), (24, 9), (24, 1),
           (12, 1)]
#: the grating's (row, column) frequency per bias value, cycles per 28 pixels
FREQUENCIES = [(0, 6), (2, 6), (4, 5), (5, 4), (6, 2), (6, 0), (6, -2), (5, -4), (4, -5),
               (2, -6)]
KINDS = ["colour", "mark", "texture", pytest.param("scene", marks=pytest.mark.slow)]


def small(data_dir, kind, **more):
    if kind == "scene":
        require_data("cifar10.npz")
    return build_data("shortcut_mnist", data_dir=data_dir, kind=kind, **{**SMALL, **more})


def digits(data_dir, ds):
    """The MNIST digits of ``ds`` (first ``per_class`` of every class, in dataset order)."""
    mnist = load_source("mnist", data_dir)
    x, y = (mnist.x_train, mnist.y_train) if ds.meta["split"] == "train" else \
        (mnist.x_test, mnist.y_test)
    per_class = ds.meta[f"{ds.meta['split']}_per_class"]
    pick = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)]))
    assert np.array_equal(y[pick], ds.y.numpy())
    return x[pick]


def test_registered_with_its_parameters():
    assert protocol_params("shortcut_mnist") == (
        "kind", "conflict_ratio", "train_per_class", "test_per_class", "bg_pool", "phase",
        "seed")


@pytest.mark.parametrize("kind", KINDS)
def test_counts_per_class_and_bias_are_exact(data_dir, kind):
    bundle = small(data_dir, kind)
    train, test = bundle.train, bundle.evals["test"]
    assert list(bundle.evals) == ["test"]
    assert train.image_shape == test.image_shape == (3, 28, 28)
    expected = np.ones((10, 10), dtype=np.int64)
    np.fill_diagonal(expected, 91)
    assert np.array_equal(train.counts(), expected)
    assert np.array_equal(test.counts(), np.full((10, 10), 3))
    assert int(train.aligned.sum()) == 910 and int(test.aligned.sum()) == 30
    assert np.array_equal(train.mask.numpy(), digits(data_dir, train) > 0)


def test_every_kind_draws_the_same_bias_labels_and_default_is_two_percent(data_dir):
    labels = {kind: small(data_dir, kind).train.b for kind in ("colour", "mark", "texture")}
    assert torch.equal(labels["colour"], labels["mark"])
    assert torch.equal(labels["colour"], labels["texture"])
    full = build_data("shortcut_mnist", data_dir=data_dir, kind="mark")
    # int(0.98 * n) aligned per class of MNIST's 5923, 6742, 5958, 6131, 5842, 5421, 5918,
    # 6265, 5851 and 5949 training digits
    assert len(full.train) == 60_000 and int(full.train.aligned.sum()) == 58_795
    assert len(full.evals["test"]) == 10_000
    assert full.evals["test"].counts().diagonal().tolist() == [
        98, 113, 103, 101, 98, 89, 95, 102, 97, 100]  # int(0.1 * n) of each test class


def test_seeded(data_dir):
    a, b = small(data_dir, "texture", phase="random"), small(data_dir, "texture",
                                                            phase="random")
    assert a.train.checksum() == b.train.checksum()
    other = small(data_dir, "texture", phase="random", seed=1)
    assert not torch.equal(a.train.b, other.train.b)


def test_colour_is_the_bias_values_colour(data_dir):
    from debiaskit.data.protocols.colored_mnist import MEAN_COLORS
    for ds in small(data_dir, "colour").train, small(data_dir, "colour").evals["test"]:
        gray = digits(data_dir, ds)
        x = ds.x.numpy()
        assert (x.transpose(1, 0, 2, 3)[:, gray == 0] == 0).all()  # black background
        for i in range(len(ds)):
            stroke = gray[i] >= 200  # colour = floor(g * c): c within 1/200 of x / g here
            colour = x[i][:, stroke].sum(1) / gray[i][stroke].sum()
            nearest = np.argmin(((MEAN_COLORS - colour) ** 2).sum(1))
            assert nearest == int(ds.b[i]) and np.abs(colour - MEAN_COLORS[nearest]).max() < 0.03


def test_the_mark_is_at_its_bias_values_place(data_dir):
    for ds in small(data_dir, "mark").train, small(data_dir, "mark").evals["test"]:
        gray = digits(data_dir, ds)
        x = ds.x.numpy()
        assert (x == x[:, :1]).all()  # grey: three equal channels
        for i in range(len(ds)):
            expected = gray[i].copy()
            top, left = CORNERS[int(ds.b[i])]
            expected[top:top + 3, left:left + 3] = 255
            assert np.array_equal(x[i, 0], expected), i  # the digit and one 3 x 3 square


def _peak(image: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """The strongest frequency of the background (digit pixels set to the background's
    mean), as signed cycles per image (rows, columns), sign chosen like FREQUENCIES."""
    background = image.astype(np.float64)
    background[mask] = background[~mask].mean()
    spectrum = np.abs(np.fft.fft2(background - background.mean()))
    r, c = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    r, c = (r if r <= 14 else r - 28), (c if c <= 14 else c - 28)
    return (-r, -c) if r < 0 or (r == 0 and c < 0) else (r, c)


@pytest.mark.parametrize("phase", ["fixed", "random"])
def test_the_texture_is_the_bias_values_frequency(data_dir, phase):
    bundle = small(data_dir, "texture", phase=phase)
    for ds in bundle.train, bundle.evals["test"]:
        gray = digits(data_dir, ds)
        x = ds.x.numpy()
        assert (x == x[:, :1]).all()
        assert (x[:, 0][gray == 255] == 255).all()  # the white digit on top
        assert x[:, 0][gray == 0].max() <= 96  # the grating: 0 to 96
        peaks = [_peak(x[i, 0], gray[i] > 0) for i in range(len(ds))]
        assert peaks == [FREQUENCIES[int(v)] for v in ds.b]
    # fixed: every grating of a bias value the same pattern; random: phases differ
    train, gray = bundle.train, digits(data_dir, bundle.train)
    first = [int(np.flatnonzero(train.b.numpy() == 0)[k]) for k in (0, 1)]
    both = (gray[first[0]] == 0) & (gray[first[1]] == 0)
    same = np.array_equal(train.x[first[0], 0].numpy()[both], train.x[first[1], 0].numpy()[both])
    assert same == (phase == "fixed")


@pytest.mark.slow
def test_the_scene_is_a_photograph_of_the_bias_values_class(data_dir):
    from PIL import Image
    bundle = small(data_dir, "scene")
    cifar = load_source("cifar10", data_dir)
    photos = np.stack([np.asarray(Image.fromarray(p).resize((28, 28), Image.Resampling.BICUBIC))
                       for p in cifar.x_train])
    # photographs by their four corner pixels, where MNIST digits have no ink
    corners = (np.array([0, 0, 27, 27]), np.array([0, 27, 0, 27]))
    by_corners = {}
    for k, p in enumerate(photos):
        by_corners.setdefault(p[corners].tobytes(), []).append(k)
    used = {}
    for ds in bundle.train, bundle.evals["test"]:
        gray = digits(data_dir, ds)
        x = ds.x.numpy().transpose(0, 2, 3, 1)
        assert (x[gray == 255] == 255).all()
        assert (gray[:, corners[0], corners[1]] == 0).all()
        for i in range(len(ds)):
            bg = gray[i] == 0
            hits = [k for k in by_corners.get(x[i][corners].tobytes(), [])
                    if np.array_equal(photos[k][bg], x[i][bg])]
            assert len(hits) >= 1 and {int(cifar.y_train[k]) for k in hits} == {int(ds.b[i])}
            used.setdefault(ds.meta["split"], set()).add(hits[0])
    # bg_pool 10: at most ten photographs per class, the test set's from the same pool
    assert len(used["train"]) <= 100 and used["test"] <= used["train"]
    per_class = np.bincount(cifar.y_train[sorted(used["train"])], minlength=10)
    assert per_class.max() <= 10


@pytest.mark.parametrize("params, words", [
    ({"kind": "color"}, "kind='color' is not a shortcut kind; choose one of colour, mark"),
    ({"kind": "texture", "phase": "moving"}, "phase='moving' is not a grating phase"),
    ({"kind": "mark", "train_per_class": 5422}, "fewer than train_per_class=5422"),
    ({"kind": "mark", "test_per_class": 0}, "test_per_class=0 must be an integer >= 1"),
    ({"kind": "scene", "bg_pool": -1}, "bg_pool=-1 must be an integer >= 0"),
    ({"kind": "mark", "conflict_ratio": 0.95}, "conflict ratio 0.95 is out of range"),
    ({"kind": "mark", "colour": "red"}, "takes no parameter colour"),
])
def test_bad_parameters_are_one_line_errors(data_dir, params, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
        build_data("shortcut_mnist", data_dir=data_dir, **params)
    assert "\n" not in str(err.value)
