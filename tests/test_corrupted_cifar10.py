"""Corrupted CIFAR-10 (LfF's protocol) on real CIFAR-10 images: exact assignment counts,
the severity offset, what each corruption group does, the cache, and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from debiaskit.data.corruptions import corrupt
from debiaskit.data.protocols import build_data, corrupted_cifar10
from debiaskit.data.protocols.assignment import block_assignment
from debiaskit.data.image_source import two_split_source
from debiaskit.errors import ConfigError
from parity import require_data


@pytest.fixture(scope="module")
def cifar(data_dir):
    from debiaskit.data.sources import load_source
    require_data("cifar10.npz")
    return load_source("cifar10", data_dir)


@pytest.fixture(scope="module")
def small(cifar):
    """The first 600 training and 400 test images of the real CIFAR-10, as a source."""
    arrays = {"x_train": cifar.x_train[:600], "y_train": cifar.y_train[:600],
              "x_test": cifar.x_test[:400], "y_test": cifar.y_test[:400]}
    return two_split_source("cifar10", arrays, "test:first-600", "small-cifar-0001",
                            test_extras={"lossless": cifar.split("test").extras["lossless"][:400]})


def test_lff_assignment_counts_on_the_real_training_set(cifar):
    # LfF 99 % aligned: per class of 5,000, blocks at round(5000 * cumsum) -> 4,950 aligned and
    # 50 conflicting spread 6/5/6/5/... over the other corruptions in index order.
    b = block_assignment(cifar.y_train, 0.99, 10)
    counts = np.zeros((10, 10), dtype=int)
    np.add.at(counts, (cifar.y_train, b), 1)
    assert counts[0].tolist() == [4950, 6, 5, 6, 5, 6, 5, 6, 5, 6]
    assert counts[9].tolist() == [6, 5, 6, 5, 6, 5, 6, 5, 6, 4950]
    assert np.trace(counts) == 49500 and counts.sum() == 50000
    # contiguous blocks in dataset order: class 0's first 4,950 images are aligned
    first = np.flatnonzero(cifar.y_train == 0)
    assert (b[first[:4950]] == 0).all() and (b[first[4950:4956]] == 1).all()
    # test split: uniform, 100 per (class, corruption) cell of the 1,000 per class
    bt = block_assignment(cifar.y_test, 0.1, 10)
    cells = np.zeros((10, 10), dtype=int)
    np.add.at(cells, (cifar.y_test, bt), 1)
    assert (cells == 100).all()


def test_groups_get_their_corruption_at_hendrycks_severity(small, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path))
    data = corrupted_cifar10.build(small, conflict_ratio=0.5, type="type1", severity=4)
    x = data.train.x.numpy().transpose(0, 2, 3, 1)
    b = data.train.b.numpy()
    clean = small.x_train
    assert data.train.b.tolist() == block_assignment(small.y_train, 0.5, 10).tolist()
    # type1 index 9 is "original": untouched; index 4 (gaussian_blur) is deterministic and
    # LfF severity 4 = Hendrycks 5
    assert np.array_equal(x[b == 9], clean[b == 9])
    blur = b == 4
    assert np.array_equal(x[blur], corrupt(np.ascontiguousarray(clean[blur]), "gaussian_blur",
                                           5, 0))
    assert not np.array_equal(x[blur], corrupt(np.ascontiguousarray(clean[blur]),
                                               "gaussian_blur", 4, 0))
    # every other group changed its images
    for v in range(9):
        assert np.abs(x[b == v].astype(int) - clean[b == v]).mean() > 1.0, v
    assert data.params["hendrycks_severity"] == 5


def test_second_build_is_a_load_with_identical_bytes(small, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path))
    first = corrupted_cifar10.build(small, conflict_ratio=0.1, seed=3)
    calls = []
    original = corrupted_cifar10.corrupt_groups
    monkeypatch.setattr(corrupted_cifar10, "corrupt_groups",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    second = corrupted_cifar10.build(small, conflict_ratio=0.1, seed=3)
    assert calls == []
    assert torch.equal(first.train.x, second.train.x)
    assert torch.equal(first.evals["test"].x, second.evals["test"].x)
    # another seed moves the random corruptions (snow, group 0) but not brightness (group 3)
    other = corrupted_cifar10.build(small, conflict_ratio=0.1, seed=4)
    assert len(calls) == 2  # train and test generated anew
    b = first.train.b
    assert not torch.equal(first.train.x[b == 0], other.train.x[b == 0])
    assert torch.equal(first.train.x[b == 3], other.train.x[b == 3])


def test_interrupted_generation_leaves_no_cache_entry(small, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path))
    seen = []

    def failing(images, name, severity, rng):
        seen.append(name)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return corrupt(images, name, severity, rng)

    monkeypatch.setattr("debiaskit.data.corruptions.corrupt", failing)
    with pytest.raises(KeyboardInterrupt):
        corrupted_cifar10.build(small, conflict_ratio=0.1)
    left = [p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert left == []


def test_test_splits_and_conditioned(small, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path))
    data = corrupted_cifar10.build(small, test_set="lossless", conditioned=True)
    lossless = small.split("test").extras["lossless"]
    assert len(data.evals["test"]) == int(lossless.sum())
    cond = data.evals["conditioned"]
    assert cond.b is None
    assert np.array_equal(cond.x.numpy().transpose(0, 2, 3, 1), small.x_test[lossless])
    assert f"the {int(lossless.sum()):,} exact" in data.evals["test"].meta["test_images"]


def test_image_size_resizes_after_corrupting_and_caches(small, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path))
    full = corrupted_cifar10.build(small, conflict_ratio=0.1, conditioned=True)
    half = corrupted_cifar10.build(small, conflict_ratio=0.1, conditioned=True, image_size=16)
    assert tuple(half.train.x.shape[1:]) == (3, 16, 16) and half.params["image_size"] == 16
    assert torch.equal(half.train.b, full.train.b) and torch.equal(half.train.y, full.train.y)
    # corrupted at 32 px, then resized: each 16-px image is the PIL-bicubic resize of the 32-px one
    from PIL import Image
    for i in (0, 123, 599):
        big = full.train.x[i].permute(1, 2, 0).numpy()
        want = np.asarray(Image.fromarray(big).resize((16, 16), Image.Resampling.BICUBIC))
        assert np.array_equal(half.train.x[i].permute(1, 2, 0).numpy(), want)
    # a downscale averages: per-image means stay within a grey level or two
    diff = (full.train.x.float().mean((1, 2, 3)) - half.train.x.float().mean((1, 2, 3))).abs()
    assert diff.max() < 3.0
    assert tuple(half.evals["conditioned"].x.shape[1:]) == (3, 16, 16)
    # a second build is a load: neither corruption nor resizing runs again
    calls = []
    monkeypatch.setattr(corrupted_cifar10, "resize_images", lambda *a: calls.append(1))
    monkeypatch.setattr(corrupted_cifar10, "corrupt_groups", lambda *a, **k: calls.append(1))
    again = corrupted_cifar10.build(small, conflict_ratio=0.1, conditioned=True, image_size=16)
    assert calls == [] and torch.equal(again.train.x, half.train.x)


@pytest.mark.parametrize("params, words", [
    ({"severity": 5}, "severity 5 is out of range"),
    ({"severity": 0}, "severity 0 is out of range"),
    ({"type": "type2"}, "type2"),
    ({"conflict_ratio": 0.95}, "conflict ratio 0.95 is out of range"),
    ({"test_set": "clean"}, "test_set"),
    ({"image_size": 4}, "image_size 4 is out of range"),
])
def test_bad_parameters_are_one_line_errors(small, params, words):
    with pytest.raises(ConfigError) as err:
        corrupted_cifar10.build(small, **params)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_cli_bad_parameter_exit_2_writes_nothing(data_dir, tmp_path):
    import os
    require_data("cifar10.npz")  # the source is read before the parameters are checked
    env = {**os.environ, "DEBIASKIT_DATA": data_dir, "DEBIASKIT_CACHE": str(tmp_path / "c")}
    done = subprocess.run([sys.executable, "-m", "debiaskit", "data", "info", "corrupted_cifar10",
                           "--data", "severity=5"], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "severity 5 is out of range" in done.stderr
    assert not (tmp_path / "c").exists()


def test_build_data_passes_the_data_directory(data_dir):
    require_data("cifar10.npz")
    with pytest.raises(ConfigError, match="LfF's severity 1-4"):
        build_data("corrupted_cifar10", data_dir, severity=9)
