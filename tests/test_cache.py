"""The derived-dataset cache: built once, loaded after, rebuilt when altered, never half
written, one build under concurrent requests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from debiaskit.data import cache as cache_mod
from debiaskit.data.cache import DerivedCache, cache_dir
from debiaskit.errors import DataError

from checks import one_line  # tests/ is on sys.path

# ----------------------------------------------------------------------------------------
# Derived-dataset cache
# ----------------------------------------------------------------------------------------

def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8),
            "y": rng.integers(0, 10, 5).astype(np.int64),
            "m": rng.random((5, 4, 4)) < 0.5, "f": rng.random(3).astype(np.float32)}


class _Builder:
    def __init__(self, seed=0):
        self.calls, self.seed = 0, seed

    def __call__(self):
        self.calls += 1
        return _arrays(self.seed)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _entry_files(folder):
    """Files other than lock files (a lock file is kept on purpose: removing it would race)."""
    return [f for f in _files(folder) if not f.endswith(".lock")]


def test_cache_builds_once_then_loads(tmp_path):
    cache = DerivedCache(tmp_path / "c")
    build = _Builder()
    params = {"severity": 3, "source": "abc", "ratio": 0.05}
    first = cache.get("corrupt", params, build)
    second = cache.get("corrupt", params, build)
    third = DerivedCache(tmp_path / "c").get("corrupt", dict(reversed(params.items())), build)
    assert build.calls == 1
    for got in (second, third):
        assert set(got) == set(first)
        for k in first:
            assert got[k].dtype == first[k].dtype and np.array_equal(got[k], first[k])
    files = _entry_files(tmp_path / "c")
    assert len(files) == 2 and {f.rsplit(".", 1)[1] for f in files} == {"npz", "json"}
    assert all(f.startswith("corrupt/") for f in files)
    record = json.loads((tmp_path / "c" / [f for f in files if f.endswith("json")][0]).read_text())
    assert record["params"] == params and record["arrays"]["x"] == ["uint8", [5, 4, 4, 3]]

    other = _Builder(seed=1)
    got = cache.get("corrupt", {**params, "severity": 4}, other)
    assert other.calls == 1 and not np.array_equal(got["x"], first["x"])
    got = cache.get("recolour", params, other)  # same params, another kind
    assert other.calls == 2
    assert len(_entry_files(tmp_path / "c")) == 6
    assert cache.get("corrupt", params, build)["x"].tobytes() == first["x"].tobytes()
    assert build.calls == 1


def test_cache_altered_entry_is_rebuilt_with_a_warning(tmp_path):
    cache = DerivedCache(tmp_path)
    build = _Builder()
    cache.get("k", {"a": 1}, build)
    data, meta = cache.paths("k", {"a": 1})
    blob = bytearray(data.read_bytes())
    blob[-30] ^= 0xFF
    data.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="checksum"):
        got = cache.get("k", {"a": 1}, build)
    assert build.calls == 2
    assert np.array_equal(got["x"], _arrays()["x"])
    # the rebuilt entry is valid again: a plain load, no warning, no build
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cache.get("k", {"a": 1}, build)
    assert build.calls == 2 and np.array_equal(again["f"], _arrays()["f"])
    # a truncated archive too
    data.write_bytes(data.read_bytes()[:100])
    with pytest.warns(UserWarning):
        cache.get("k", {"a": 1}, build)
    assert build.calls == 3


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_cache_build_interrupted_leaves_nothing(tmp_path, interrupt):
    cache = DerivedCache(tmp_path)

    def build():
        raise interrupt("midway")

    with pytest.raises(interrupt):
        cache.get("k", {"a": 1}, build)
    assert _entry_files(tmp_path) == []
    assert cache.load("k", {"a": 1}) is None
    ok = _Builder()
    cache.get("k", {"a": 1}, ok)
    assert ok.calls == 1 and len(_entry_files(tmp_path)) == 2


class _Explodes:
    """Converting it to an array is interrupted (as by Ctrl-C while the archive is written)."""

    def __array__(self, *args, **kwargs):
        raise KeyboardInterrupt


def test_cache_write_interrupted_leaves_nothing(tmp_path):
    cache = DerivedCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # midway through the .npz: one array written
        cache.get("k", {"a": 1}, lambda: {"x": np.zeros((64, 64)), "z": _Explodes()})
    assert _entry_files(tmp_path) == []


def test_cache_interrupted_between_archive_and_record_leaves_nothing(tmp_path, monkeypatch):
    cache = DerivedCache(tmp_path)
    real = cache_mod.sha256_file

    def interrupted(path):  # Ctrl-C while the new archive is hashed for its record
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "sha256_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.get("k", {"a": 1}, _Builder())
    monkeypatch.setattr(cache_mod, "sha256_file", real)
    assert _entry_files(tmp_path) == []
    build = _Builder()
    cache.get("k", {"a": 1}, build)
    assert build.calls == 1 and len(_entry_files(tmp_path)) == 2


def test_cache_concurrent_builds_of_one_entry_build_once(tmp_path):
    """A second get while the first is building waits on the entry's lock, then loads."""
    import threading

    building, go = threading.Event(), threading.Event()
    calls = []

    def slow_build():
        calls.append("a")
        building.set()
        go.wait(10)
        return _arrays()

    def other_build():
        calls.append("b")
        return _arrays(seed=1)

    results = {}
    first = threading.Thread(target=lambda: results.update(
        a=DerivedCache(tmp_path).get("k", {"a": 1}, slow_build)))
    second = threading.Thread(target=lambda: results.update(
        b=DerivedCache(tmp_path).get("k", {"a": 1}, other_build)))
    first.start()
    assert building.wait(10)
    second.start()
    second.join(0.3)  # gives the second get time to reach the lock (not an assertion)
    go.set()
    first.join(10)
    second.join(10)
    assert calls == ["a"]
    assert np.array_equal(results["b"]["x"], results["a"]["x"])


def test_cache_dir_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == (tmp_path / "mine").resolve()
    assert DerivedCache().root == (tmp_path / "mine").resolve()
    DerivedCache().get("k", {}, _Builder())
    assert len(_entry_files(tmp_path / "mine")) == 2
    monkeypatch.delenv("DEBIASKIT_CACHE")
    (tmp_path / "data").mkdir()
    assert cache_dir(tmp_path / "data") == (tmp_path / "data").resolve() / "derived"


def test_cache_unwritable_dir_isone_line(monkeypatch, tmp_path):
    (tmp_path / "a_file").write_text("x")
    blocked = tmp_path / "a_file" / "cache"  # mkdir under a regular file fails, even as root
    monkeypatch.setenv("DEBIASKIT_CACHE", str(blocked))
    build = _Builder()
    with pytest.raises(DataError) as info:
        DerivedCache().get("k", {"a": 1}, build)
    text = one_line(info.value)
    assert "DEBIASKIT_CACHE" in text and "a_file" in text
    assert build.calls == 0
