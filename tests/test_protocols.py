"""The published protocols: exact counts per (class, bias), exact colours, determinism."""

import numpy as np
import pytest
import torch

from debiaskit.data.protocols import bg_colored_mnist, build_data, colored_mnist
from debiaskit.data.protocols.assignment import (block_assignment, check_conflict_ratio,
                                                 shuffled_assignment)
from debiaskit.errors import ConfigError


@pytest.fixture(scope="module")
def lff99(mnist):
    return colored_mnist.build(mnist, conflict_ratio=0.01, severity=4, seed=0)


def test_block_assignment_hand_computed():
    # 20 samples of class 1 among 3 bias values, 80 % aligned: shares .1 .8 .1 ->
    # cumulative edges round(2, 18, 20) -> bias 0 x2, bias 1 x16, bias 2 x2, in order.
    y = np.ones(20, dtype=np.int64)
    b = block_assignment(y, 0.8, 3)
    assert b.tolist() == [0] * 2 + [1] * 16 + [2] * 2


@pytest.mark.slow
def test_lff_counts_are_exact(lff99, mnist):
    counts = lff99.train.counts()
    per_class = np.bincount(mnist.y_train, minlength=10)
    assert (counts.sum(1) == per_class).all()
    # class 0: 5923 samples; the aligned block ends at round(0.99 * 5923) = 5864
    assert counts[0, 0] == 5864
    # class 1: 6742 samples; bias-0 block first: round(0.01 / 9 * 6742) = 7, then the
    # aligned block up to round((0.01 / 9 + 0.99) * 6742) = 6682 -> 6675 aligned
    assert counts[1, 0] == 7 and counts[1, 1] == 6675
    assert counts.trace() == int(lff99.train.aligned.sum())
    assert abs(1 - counts.trace() / counts.sum() - 0.01) < 1e-3


def test_lff_blocks_follow_dataset_order(lff99, mnist):
    for c in range(10):
        b = lff99.train.b[torch.from_numpy(mnist.y_train == c)]
        assert (b[1:] >= b[:-1]).all(), "bias values must rise in dataset order"


def test_lff_test_split_is_uniform(lff99):
    counts = lff99.evals["test"].counts()
    per_class = counts.sum(1, keepdims=True)
    assert np.abs(counts - per_class / 10).max() <= 1
    assert set(lff99.evals) == {"test"}


@pytest.mark.slow
def test_lff_exact_colours_without_noise(mnist):
    data = colored_mnist.build(mnist, conflict_ratio=0.05, sigma=0.0)
    x, b = data.train.x[:500].numpy(), data.train.b[:500].numpy()
    gray = mnist.x_train[:500].astype(np.float32)
    expected = np.floor(gray[:, None] * colored_mnist.MEAN_COLORS[b][:, :, None, None])
    assert (x == expected.astype(np.uint8)).all()
    assert (x.transpose(0, 2, 3, 1)[mnist.x_train[:500] == 0] == 0).all()  # background stays black


@pytest.mark.slow
def test_lff_colour_noise_has_sigma(mnist):
    data = colored_mnist.build(mnist, conflict_ratio=0.05, severity=1)  # sigma 0.05
    x = data.train.x.float().numpy()
    bright = mnist.x_train == 255
    has = bright.any((1, 2))
    # colour of each image read off its full-intensity pixels
    colour = (x[has] * bright[has][:, None]).sum((2, 3)) / bright[has].sum((1, 2))[:, None] / 255
    mean = colored_mnist.MEAN_COLORS[data.train.b.numpy()[has]]
    unclipped = (mean > 0.2) & (mean < 0.8)  # far from the clamp at 0 and 1
    dev = (colour - mean)[unclipped]
    assert 0.045 < dev.std() < 0.055


@pytest.mark.slow
def test_lff_seed_moves_noise_not_assignment(mnist, lff99):
    other = colored_mnist.build(mnist, conflict_ratio=0.01, severity=4, seed=1)
    again = colored_mnist.build(mnist, conflict_ratio=0.01, severity=4, seed=0)
    assert torch.equal(other.train.b, lff99.train.b)
    assert other.train.checksum() != lff99.train.checksum()
    assert again.train.checksum() == lff99.train.checksum()


def test_masks_are_the_digit(lff99, mnist):
    assert torch.equal(lff99.train.mask, torch.from_numpy(mnist.x_train > 0))


@pytest.mark.slow
def test_background_protocol_counts_and_pixels(mnist):
    data = bg_colored_mnist.build(mnist, conflict_ratio=0.01, seed=3)
    counts = data.train.counts()
    per_class = np.bincount(mnist.y_train, minlength=10)
    assert (np.diag(counts) == (per_class * 0.99).astype(int)).all()
    x, b, gray = data.train.x.numpy(), data.train.b.numpy(), mnist.x_train
    fg = gray != 0
    assert (x.transpose(0, 2, 3, 1)[fg] == 255).all()  # binarised white digit
    bg_pixels = x.transpose(0, 2, 3, 1)[~fg]
    assert (bg_pixels == np.repeat(bg_colored_mnist.COLOR_MAP[b], (~fg).sum((1, 2)), 0)).all()
    unbiased = data.evals["unbiased"].counts()
    assert abs(np.trace(unbiased) / unbiased.sum() - 0.1) < 0.01
    cond = data.evals["conditioned"]
    assert cond.b is None and (cond.x[:, 0] == torch.from_numpy(mnist.x_test.copy())).all()


def test_full_bias_has_no_conflicting_samples(mnist):
    data = bg_colored_mnist.build(mnist, conflict_ratio=0.0)
    assert bool(data.train.aligned.all())


@pytest.mark.parametrize("params", [{"conflict_ratio": 0.95}, {"conflict_ratio": -0.1},
                                    {"severity": 7}, {"sigma": 2.0}, {"colour": 1}])
def test_bad_parameters_are_refused(data_dir, params):
    with pytest.raises(ConfigError):
        build_data("colored_mnist", data_dir, **params)


def test_unknown_dataset(data_dir):
    with pytest.raises(ConfigError, match="colored_mnist"):
        build_data("colored_mnits", data_dir)


def test_summary_table(lff99):
    text = lff99.train.summary().splitlines()
    n_aligned = int(lff99.train.counts().trace())
    assert text[1].startswith(f"aligned {n_aligned} (")
    assert text[3].split()[:2] == ["0", "5864"]  # row of class 0 starts with its aligned cell


def test_lff_mean_colours_are_the_float32_values_of_colors_th():
    """MEAN_COLORS are LfF's data/resource/colors.th bit for bit (sha256 of the (10, 3)
    little-endian float32 array), not a 6-decimal rounding (parity fixture data-lff-cmnist:
    the rounding changed about 0.7 % of the images by one level)."""
    import hashlib
    colours = np.ascontiguousarray(colored_mnist.MEAN_COLORS, dtype="<f4")
    assert colours.shape == (10, 3) and colored_mnist.MEAN_COLORS.dtype == np.float32
    assert hashlib.sha256(colours.tobytes()).hexdigest() == (
        "9529cab5a137035a3f859ae6752bd3ffa80d8d73b7f8eb78b1c6806a99a58aa3")
    assert colours[0, 0] != np.float32(0.983682)


def test_conflict_ratio_range_ends_at_independence():
    # 1 - 1/K is the largest share of conflicting samples (bias independent of the class)
    assert check_conflict_ratio(0.9, 10) == 0.9 and check_conflict_ratio(0.5, 2) == 0.5
    assert check_conflict_ratio(0, 10) == 0.0
    for bad, k in ((0.91, 10), (0.51, 2), (-0.01, 10)):
        with pytest.raises(ConfigError, match="out of range"):
            check_conflict_ratio(bad, k)


def test_shuffled_assignment_cuts_the_rest_into_chunks_of_ceil_rest_over_k_minus_1():
    # 3 classes of 10, half aligned: 5 own-value samples, the other 5 cut into chunks of
    # ceil(5 / 2) = 3 and 2 for the two other values (in a shuffled order)
    y = np.repeat(np.arange(3), 10)
    b = shuffled_assignment(y, 0.5, 3, np.random.default_rng(0))
    for c in range(3):
        counts = np.bincount(b[y == c], minlength=3)
        assert counts[c] == 5
        assert sorted(np.delete(counts, c).tolist()) == [2, 3]
    # fully aligned: nothing left to cut
    assert (shuffled_assignment(y, 1.0, 3, np.random.default_rng(0)) == y).all()
