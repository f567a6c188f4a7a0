"""Shared fixtures: the real data directory (DEBIASKIT_DATA, else the sibling ../shared/data);
``auto`` devices on the CPU (DEBIASKIT_DEVICE=cpu unless set); ``cuda`` tests skipped
without a CUDA GPU.

Real data a test needs goes through :func:`parity.require_data`: a missing or unreadable
file skips the test, except under ``CI=true``, where it fails it."""

from __future__ import annotations

import os

import pytest

from parity import DATA_DIR, require_data  # one rule for the data (tests/ is on sys.path)

# Runs that leave their device at auto compute on the CPU here, also in subprocesses, so
# that exact numbers do not depend on a GPU's kernels; the cuda tests name their device.
os.environ.setdefault("DEBIASKIT_DEVICE", "cpu")


def pytest_collection_modifyitems(items):
    """Mark every test that takes the real data (the ``data_dir`` fixture, directly or
    through another fixture) with ``data``; skip every ``cuda`` test where torch sees no
    CUDA GPU."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
    cuda_tests = [item for item in items if item.get_closest_marker("cuda")]
    if cuda_tests:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is "
                                           "False)")
            for item in cuda_tests:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _derived_cache(tmp_path_factory):
    """Derived datasets (corrupted CIFAR-10 ...) go to a temporary cache, never into the
    shared data directory, unless DEBIASKIT_CACHE names one."""
    os.environ.setdefault("DEBIASKIT_CACHE", str(tmp_path_factory.mktemp("derived-cache")))


@pytest.fixture(scope="session", autouse=True)
def _precision_auto_fp32():
    """``--precision auto`` (the default) resolves to float32 in the tests, on every machine:
    the hand-computed and recorded numbers they compare with are float32's. The tests of
    auto itself unset the variable."""
    os.environ.setdefault("DEBIASKIT_PRECISION_AUTO", "fp32")


@pytest.fixture(autouse=True)
def _precision_choices_file(tmp_path, monkeypatch):
    """auto's remembered choices go to the test's own file, never the user's."""
    monkeypatch.setenv("DEBIASKIT_PRECISION_CACHE", str(tmp_path / "precision-auto.json"))


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The real data directory, holding a sound mnist.npz (see :func:`require_data`);
    tests that also read another archive call ``require_data(name)`` themselves."""
    require_data("mnist.npz")
    return str(DATA_DIR)


@pytest.fixture(scope="session")
def mnist(data_dir):
    from debiaskit.data.sources import load_source
    return load_source("mnist", data_dir)


@pytest.fixture
def train_fails_cleanly(data_dir, tmp_path):
    """Check that ``debiaskit train ARGS`` (1 epoch, 500 images) fails with exit code 2 and
    one line of stderr holding ``words``, and writes no run directory."""
    import subprocess
    import sys

    def check(args, words):
        out = tmp_path / "run"
        proc = subprocess.run(
            [sys.executable, "-m", "debiaskit", "train", *args, "--epochs", "1",
             "--train-subset", "500", "--data-dir", data_dir, "--out", str(out)],
            capture_output=True, text=True,
            env={**os.environ, "DEBIASKIT_CACHE": str(tmp_path / "cache")})
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists()

    return check


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests (their numbers were recorded so)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
