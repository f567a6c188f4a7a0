"""The test suite's rule for real data (tests/parity/__init__.py, ``require_data``): a sound
file is handed back; a missing or unreadable one skips the test, except under ``CI=true``,
where it fails it (CI must never skip the real-data tests silently)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from parity import REAL_ARCHIVES, data_unavailable, require_data

ROOT = Path(__file__).resolve().parents[1]


def _outcome(ci: str | None, name: str, directory: Path):
    """(kind, message) of ``require_data(name, directory)`` with ``CI`` set to ``ci``
    (unset for None): kind is "fail", "skip" or "ok"."""
    mp = pytest.MonkeyPatch()
    try:
        if ci is None:
            mp.delenv("CI", raising=False)
        else:
            mp.setenv("CI", ci)
        try:
            require_data(name, directory)
        except pytest.fail.Exception as err:
            return "fail", err.msg
        except pytest.skip.Exception as err:
            return "skip", err.msg
        return "ok", None
    finally:
        mp.undo()


def _sound_mnist(directory: Path, listed: bool = True) -> Path:
    """A small archive with mnist.npz's arrays (and, if ``listed``, its sha256 in
    SHA256SUMS)."""
    path = directory / "mnist.npz"
    np.savez_compressed(path, x_train=np.zeros((3, 28, 28), np.uint8),
                        y_train=np.zeros(3, np.int64), x_test=np.zeros((2, 28, 28), np.uint8),
                        y_test=np.zeros(2, np.int64))
    if listed:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (directory / "SHA256SUMS").write_text(f"{digest}  mnist.npz\n")
    return path


def _write_bad(directory: Path, how: str) -> str:
    """Spoil mnist.npz in ``directory`` in one of several ways; returns words the reason
    must hold."""
    path = directory / "mnist.npz"
    if how == "missing":
        return "mnist.npz not found in"
    if how == "not_a_zip":
        path.write_bytes(b"this is not an npz archive\n" * 40)
        return "is not an npz archive (not a whole zip file"
    if how == "truncated":
        whole = _sound_mnist(directory, listed=False).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        return "is not an npz archive (not a whole zip file"
    if how == "wrong_keys":
        np.savez_compressed(path, images=np.zeros((3, 28, 28), np.uint8),
                            y_train=np.zeros(3, np.int64))
        return "lacks the array(s) x_train, x_test, y_test (it holds images, y_train)"
    if how == "one_array":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros((3, 28, 28), np.uint8))
        return "is not an npz archive (it is a single .npy array)"
    if how == "bad_member":  # a zip file whose member is not a .npy array
        with zipfile.ZipFile(path, "w") as archive:
            for key in REAL_ARCHIVES["mnist.npz"]:
                archive.writestr(f"{key}.npy", b"not an array")
        return "cannot be read as an npz archive (x_train.npy: ValueError:"
    if how == "pickles":
        np.savez(path, x_train=np.array([{}], dtype=object), y_train=np.zeros(3, np.int64),
                 x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2, np.int64))
        return "cannot be read as an npz archive (x_train.npy: ValueError: it holds Python"
    if how == "altered":
        _sound_mnist(directory)
        with open(path, "ab") as fh:
            fh.write(b"\0")
        return "is corrupt or altered"
    raise ValueError(how)


BAD = ["missing", "not_a_zip", "truncated", "wrong_keys", "one_array", "bad_member",
       "pickles", "altered"]


@pytest.mark.parametrize("how", BAD)
def test_missing_or_malformed_data_fails_under_ci_and_skips_elsewhere(tmp_path, how):
    words = _write_bad(tmp_path, how)
    kind, message = _outcome("true", "mnist.npz", tmp_path)
    assert kind == "fail", (how, kind, message)
    assert message.startswith("CI=true needs the real data: real mnist.npz")
    assert words in message and str(tmp_path) in message and "\n" not in message
    for ci in (None, "", "false", "1"):  # only CI=true fails
        kind, reason = _outcome(ci, "mnist.npz", tmp_path)
        assert kind == "skip", (how, ci, kind, reason)
        assert words in reason and "DEBIASKIT_DATA" in reason and "\n" not in reason


@pytest.mark.parametrize("ci", ["true", None])
@pytest.mark.parametrize("listed", [True, False])
def test_a_sound_file_is_returned(tmp_path, ci, listed):
    path = _sound_mnist(tmp_path, listed)
    mp = pytest.MonkeyPatch()
    try:
        mp.delenv("CI", raising=False) if ci is None else mp.setenv("CI", ci)
        assert require_data("mnist.npz", tmp_path) == path
        assert require_data("mnist.npz", str(tmp_path)) == path
    finally:
        mp.undo()


def test_a_repaired_file_is_checked_again(tmp_path, monkeypatch):
    # the verdict is remembered per file version (size and mtime), not per name
    monkeypatch.setenv("CI", "true")
    _write_bad(tmp_path, "not_a_zip")
    with pytest.raises(pytest.fail.Exception):
        require_data("mnist.npz", tmp_path)
    (tmp_path / "mnist.npz").unlink()
    path = _sound_mnist(tmp_path)
    assert require_data("mnist.npz", tmp_path) == path


def test_data_unavailable(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="^CI=true needs the real data: a b$"):
        data_unavailable("a\n  b")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="^a b$"):
        data_unavailable("a\n  b")


def test_the_real_archives_are_sound(data_dir):
    # the real data directory passes the same checks (data_dir already required mnist.npz)
    for name in REAL_ARCHIVES:
        assert require_data(name) == Path(data_dir) / name


@pytest.mark.slow
@pytest.mark.parametrize("ci", ["true", None])
def test_a_pytest_run_without_the_data_fails_under_ci(tmp_path, ci):
    # end to end: mnist.npz missing (the session fixture data_dir) and a malformed
    # cifar10.npz (a require_data call in a module fixture): the run fails (exit 1) under
    # CI=true, and elsewhere skips with its reasons shown (-rs)
    (tmp_path / "cifar10.npz").write_bytes(b"not an archive")
    env = {**os.environ, "DEBIASKIT_DATA": str(tmp_path)}
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    nodes = ["tests/test_infill.py::test_within_image_shuffle_keeps_a_uniform_background_colour",
             "tests/test_protocols_color.py::test_cifar10s_selection_ignores_global_random_state"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           *nodes], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    reasons = [f"real mnist.npz not found in {tmp_path}; set DEBIASKIT_DATA",
               f"real cifar10.npz in {tmp_path} is not an npz archive"]
    if ci == "true":
        assert proc.returncode == 1, out
        assert "2 errors" in out, out
        assert all(f"CI=true needs the real data: {r}" in out for r in reasons), out
    else:
        assert proc.returncode == 0, out
        assert "2 skipped" in out and out.count("SKIPPED [1] ") == 2, out
        assert all(r in out for r in reasons), out
