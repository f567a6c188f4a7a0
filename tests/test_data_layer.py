"""The data layer: folder sources, the derived-dataset cache, the loader
and the batched augmentations, checked on small synthetic data written by the tests."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from debiaskit.data import cache as cache_mod
from debiaskit.data.augment import Compose, RandomAffine, RandomCropFlip, RandomResizedCrop
from debiaskit.data.cache import DerivedCache, cache_dir
from debiaskit.data.dataset import BiasedDataset
from debiaskit.data.loader import InMemoryLoader
from debiaskit.data.sources import load_folder
from debiaskit.errors import DataError

# ----------------------------------------------------------------------------------------
# Folder source
# ----------------------------------------------------------------------------------------

CLASSES = ("cat", "dog", "bird")  # deliberately not sorted: classes.txt order must win
PLACES = ("water", "land", "desert")


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


def _write_folder(root, n=12, size=(8, 6), sizes=None, seed=0, extra_rows=()):
    """A folder of ``n`` PNG images (H, W = ``size``, or per-image ``sizes``), masks,
    metadata.csv and classes.txt; returns what the reader should give back."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rows, truth = [], []
    for i in range(n):
        h, w = sizes[i % len(sizes)] if sizes else size
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.random((h, w)) < 0.4
        name = f"img/{i:02d}.png"
        Image.fromarray(image).save(root / name)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / f"masks/{i:02d}.png")
        label = i % 3
        split = "test" if i % 3 == 1 and i > 0 else "train"  # interleaved splits
        # the class by name, except every fourth row by index
        y = str(label) if i % 4 == 0 else CLASSES[label]
        bias = (i * 7) % 5
        place = PLACES[(i // 2) % 3]
        rows.append({"path": name, "y": y, "split": split, "mask": f"masks/{i:02d}.png",
                     "bias": str(bias), "place": place})
        truth.append(dict(image=image, mask=mask, y=label, split=split, bias=bias,
                          place=place, name=name))
    rows.extend(extra_rows)
    _write_csv(root / "metadata.csv", rows)
    return truth


def _write_csv(path, rows, fields=("path", "y", "split", "mask", "bias", "place")):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_folder_round_trip(tmp_path):
    truth = _write_folder(tmp_path / "set")
    src = load_folder(tmp_path / "set", progress=False)
    assert src.name == "set"
    assert src.classes == CLASSES
    assert list(src.splits) == ["train", "test"]  # order of first appearance
    sorted_places = tuple(sorted(PLACES))
    assert dict(src.attribute_values) == {"place": sorted_places}  # bias is integer: no names
    for split_name, split in src.splits.items():
        expected = [t for t in truth if t["split"] == split_name]
        assert len(split) == len(expected) > 0
        assert split.x.dtype == np.uint8 and split.x.shape == (len(expected), 8, 6, 3)
        assert np.array_equal(split.x, np.stack([t["image"] for t in expected]))
        assert split.y.dtype == np.int64
        assert split.y.tolist() == [t["y"] for t in expected]
        assert set(split.attributes) == {"bias", "place"}
        assert split.attributes["bias"].dtype == np.int64
        assert split.attributes["bias"].tolist() == [t["bias"] for t in expected]
        assert [sorted_places[v] for v in split.attributes["place"]] == \
            [t["place"] for t in expected]
        assert split.masks.dtype == np.bool_
        assert np.array_equal(split.masks, np.stack([t["mask"] for t in expected]))
        assert split.names.tolist() == [t["name"] for t in expected]
        assert not split.x.flags.writeable
    assert src.num_classes == 3


def test_folder_without_optional_columns(tmp_path):
    """Only path and y: everything goes to ``train``, no masks, no attributes; the class
    list is the sorted names when there is no classes.txt."""
    truth = _write_folder(tmp_path / "set", n=5)
    (tmp_path / "set" / "classes.txt").unlink()
    rows = [{"path": t["name"], "y": CLASSES[t["y"]]} for t in truth]
    _write_csv(tmp_path / "set" / "metadata.csv", rows, fields=("path", "y"))
    src = load_folder(tmp_path / "set", progress=False)
    assert src.classes == tuple(sorted(CLASSES))
    split = src.split("train")
    assert list(src.splits) == ["train"]
    assert split.masks is None and dict(split.attributes) == {}
    assert [src.classes[v] for v in split.y] == [CLASSES[t["y"]] for t in truth]
    assert np.array_equal(split.x, np.stack([t["image"] for t in truth]))


def test_folder_image_size_resizes_images_and_masks(tmp_path):
    sizes = [(8, 6), (13, 11), (5, 9)]
    truth = _write_folder(tmp_path / "set", sizes=sizes, n=9)
    with pytest.raises(DataError) as info:  # sizes differ: an image size is needed
        load_folder(tmp_path / "set", progress=False)
    assert "line 3" in _one_line(info.value) and "image size" in str(info.value)

    # blocky masks (large regions, so the resized image has pure pixels to compare) and
    # images whose pixels encode them: white foreground, black background
    for i, t in enumerate(truth):
        h, w = t["mask"].shape
        yy, xx = np.mgrid[:h, :w]
        t["mask"] = (xx < w // 2 + i % 2) ^ (yy >= h // 2)
        Image.fromarray(t["mask"].astype(np.uint8) * 255).save(
            tmp_path / "set" / "masks" / t["name"][4:])
        Image.fromarray(np.repeat(t["mask"][..., None] * np.uint8(255), 3, 2)).save(
            tmp_path / "set" / t["name"])
    out_h, out_w = 7, 10  # not square, so a swapped (H, W) shows
    src = load_folder(tmp_path / "set", image_size=(out_h, out_w), progress=False)
    checked = 0
    for split_name, split in src.splits.items():
        expected = [t for t in truth if t["split"] == split_name]
        assert split.x.shape == (len(expected), out_h, out_w, 3)
        assert split.masks.shape == (len(expected), out_h, out_w)
        assert split.masks.dtype == np.bool_
        for img, mask, t in zip(split.x, split.masks, expected):
            # the mask is the nearest-neighbour resize of the file's mask
            pil = Image.fromarray(t["mask"].astype(np.uint8) * 255)
            want = np.asarray(pil.resize((out_w, out_h), Image.Resampling.NEAREST)) > 0
            assert np.array_equal(mask, want)
            # and agrees with the (bilinearly resized) image wherever the image is
            # (almost) pure: the nearest source pixel always has a large weight in the
            # bilinear filter, so a near-white pixel has a foreground nearest pixel
            grey = img.astype(int)
            assert (grey.max(2) - grey.min(2)).max() == 0  # still grey
            white, black = grey[..., 0] >= 250, grey[..., 0] <= 5
            assert mask[white].all() and not mask[black].any()
            checked += int(white.sum() + black.sum())
    assert checked > 0.4 * 9 * out_h * out_w
    # a square int size works too
    assert load_folder(tmp_path / "set", image_size=4, progress=False).split("train").x.shape[1:] \
        == (4, 4, 3)


def test_folder_checksum(tmp_path):
    truth = _write_folder(tmp_path / "set")
    first = load_folder(tmp_path / "set", progress=False).checksum
    assert load_folder(tmp_path / "set", progress=False).checksum == first
    assert len(first) == 64
    # one pixel of one image, by one grey level
    image = truth[5]["image"].copy()
    image[3, 2, 1] ^= 1
    Image.fromarray(image).save(tmp_path / "set" / truth[5]["name"])
    changed = load_folder(tmp_path / "set", progress=False).checksum
    assert changed != first
    # one mask pixel
    mask = truth[2]["mask"].copy()
    mask[0, 0] = not mask[0, 0]
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "set" / "masks/02.png")
    assert load_folder(tmp_path / "set", progress=False).checksum not in (first, changed)


def _rows(truth):
    return [{"path": t["name"], "y": CLASSES[t["y"]], "split": t["split"],
             "mask": f"masks/{t['name'][4:]}", "bias": str(t["bias"]), "place": t["place"]}
            for t in truth]


@pytest.mark.parametrize("damage, needle", [
    ("missing_image", "not found"),
    ("text_png", "cannot read image"),
    ("bad_label", "not one of the 3 classes"),
    ("negative_label", "not one of the 3 classes"),
    ("empty_attribute", "attribute place is empty"),
    ("missing_mask", "mask"),
])
def test_folder_bad_row_names_the_line(tmp_path, damage, needle):
    truth = _write_folder(tmp_path / "set", n=6)
    rows = _rows(truth)
    bad = 4  # data row index 4 is CSV line 6 (the header is line 1)
    if damage == "missing_image":
        rows[bad]["path"] = "img/nope.png"
    elif damage == "text_png":
        (tmp_path / "set" / truth[bad]["name"]).write_text("this is not a PNG\n")
    elif damage == "bad_label":
        rows[bad]["y"] = "horse"
    elif damage == "negative_label":
        rows[bad]["y"] = "-1"
    elif damage == "empty_attribute":
        rows[bad]["place"] = "  "
    elif damage == "missing_mask":
        rows[bad]["mask"] = "masks/nope.png"
    _write_csv(tmp_path / "set" / "metadata.csv", rows)
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    text = _one_line(info.value)
    assert "metadata.csv line 6" in text and needle in text
    if damage in ("missing_image", "text_png", "missing_mask"):
        assert ("nope.png" if damage != "text_png" else truth[bad]["name"]) in text


def test_folder_label_outside_class_list_by_index(tmp_path):
    truth = _write_folder(tmp_path / "set", n=6)
    rows = _rows(truth)
    for row, t in zip(rows, truth):
        row["y"] = str(t["y"])  # by index
    rows[2]["y"] = "3"  # classes.txt lists 3 classes: 0..2
    _write_csv(tmp_path / "set" / "metadata.csv", rows)
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    assert "metadata.csv line 4" in _one_line(info.value)
    # an explicit class list wins over classes.txt
    src = load_folder(tmp_path / "set", classes=["a", "b", "c", "d"], progress=False)
    assert src.classes == ("a", "b", "c", "d") and 3 in src.split("train").y.tolist() + \
        src.split("test").y.tolist()


@pytest.mark.parametrize("header", [("y", "split"), ("path", "split"), ("split",)])
def test_folder_missing_columns(tmp_path, header):
    truth = _write_folder(tmp_path / "set", n=3)
    _write_csv(tmp_path / "set" / "metadata.csv", _rows(truth), fields=header)
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    text = _one_line(info.value)
    assert "metadata.csv" in text
    for column in ("path", "y"):
        if column not in header:
            assert f"{column}" in text.split("has no column", 1)[1].split("(")[0]


def test_folder_missing_folder_csv_and_empty_csv(tmp_path):
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "absent", progress=False)
    assert "absent" in _one_line(info.value)
    (tmp_path / "set").mkdir()
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    assert "metadata.csv" in _one_line(info.value)
    _write_csv(tmp_path / "set" / "metadata.csv", [])
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    assert "no images" in _one_line(info.value)


def test_folder_csv_written_by_a_spreadsheet(tmp_path):
    """Spreadsheets save UTF-8 CSVs with a byte-order mark; the header must still read."""
    truth = _write_folder(tmp_path / "set", n=3)
    path = tmp_path / "set" / "metadata.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    src = load_folder(tmp_path / "set", progress=False)
    assert sum(len(s) for s in src.splits.values()) == len(truth)


def test_folder_different_sizes_names_the_line(tmp_path):
    _write_folder(tmp_path / "set", n=6, sizes=[(8, 6)] * 3 + [(8, 7)] * 3)
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    text = _one_line(info.value)
    assert "metadata.csv line 5" in text and "7x8" in text and "6x8" in text


def test_folder_attribute_column_is_all_integers_or_all_names(tmp_path, capsys, monkeypatch):
    """Integers keep their numeric meaning (2 < 10, never renumbered in text order); names
    are numbered in sorted order; one name among integers (a typo) is a one-line error with
    the file, line and column, exit status 2 through the CLI, and nothing is written."""
    from debiaskit import cli

    monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    truth = _write_folder(tmp_path / "set", n=14)
    rows = _rows(truth)
    for i, row in enumerate(rows):
        row["bias"] = str(i % 12)  # 0 ... 11: "10" and "11" sort before "2" as text
    _write_csv(tmp_path / "set" / "metadata.csv", rows)
    src = load_folder(tmp_path / "set", progress=False)
    assert "bias" not in src.attribute_values
    got = {n: int(b) for s in src.splits.values() for n, b in zip(s.names, s.attributes["bias"])}
    assert got == {t["name"]: i % 12 for i, t in enumerate(truth)}
    assert [t["place"] for t in truth] != sorted(t["place"] for t in truth)
    assert src.attribute_values["place"] == tuple(sorted(PLACES))

    rows[9]["bias"] = "red"  # a typo among the integers: CSV line 11
    _write_csv(tmp_path / "set" / "metadata.csv", rows)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = cli.main(["data", "info", "folder", "--data", f"path={tmp_path / 'set'}"])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("debiaskit: error:"), out.err
    assert "metadata.csv line 11" in lines[0] and "column bias" in lines[0]
    assert "'red'" in lines[0] and "integers and names" in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    # the same when the typo is the column's first value (it is still the odd one out)
    rows[9]["bias"], rows[0]["bias"] = "9", "red"
    _write_csv(tmp_path / "set" / "metadata.csv", rows)
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    assert "metadata.csv line 2: attribute column bias" in _one_line(info.value)


def test_folder_through_the_cli(tmp_path, capsys, monkeypatch):
    from debiaskit import cli

    monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    truth = _write_folder(tmp_path / "set", n=6)
    assert cli.main(["data", "info", "folder", "--data", f"path={tmp_path / 'set'}"]) == 0
    out = capsys.readouterr()
    assert "folder/train" in out.out and "folder/test" in out.out and out.err == ""

    (tmp_path / "set" / truth[3]["name"]).write_text("not an image")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = cli.main(["data", "info", "folder", "--data", f"path={tmp_path / 'set'}"])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("debiaskit: error:")
    assert "metadata.csv line 5" in lines[0] and truth[3]["name"] in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_bar_folder(tmp_path):
    """BAR's own layout: class by file name (names hold spaces), sorted by (class, index),
    resized to 64 x 64."""
    from debiaskit.data.sources import bar

    rng = np.random.default_rng(0)
    files = {"train": ["racing_2.jpg", "climbing_10.png", "pole vaulting_3.png",
                       "climbing_9.png", "notes.txt"],
             "test": ["throwing_1.png", "diving_0.png"]}
    for split, names in files.items():
        (tmp_path / "BAR" / split).mkdir(parents=True)
        for name in names:
            if name.endswith(".txt"):
                (tmp_path / "BAR" / split / name).write_text("ignored")
                continue
            image = rng.integers(0, 256, (20 + len(name), 30, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "BAR" / split / name)
    src = bar.load(tmp_path)
    train = src.split("train")
    assert train.names.tolist() == ["climbing_9", "climbing_10", "pole vaulting_3", "racing_2"]
    assert [src.classes[v] for v in train.y] == ["climbing", "climbing", "pole vaulting", "racing"]
    assert train.x.shape == (4, 64, 64, 3) and train.x.dtype == np.uint8
    assert src.split("test").names.tolist() == ["diving_0", "throwing_1"]
    assert bar.load(tmp_path).checksum == src.checksum
    (tmp_path / "BAR" / "test" / "skating_1.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        bar.load(tmp_path)
    assert "skating_1" in _one_line(info.value)


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


def test_cache_unwritable_dir_is_one_line(monkeypatch, tmp_path):
    (tmp_path / "a_file").write_text("x")
    blocked = tmp_path / "a_file" / "cache"  # mkdir under a regular file fails, even as root
    monkeypatch.setenv("DEBIASKIT_CACHE", str(blocked))
    build = _Builder()
    with pytest.raises(DataError) as info:
        DerivedCache().get("k", {"a": 1}, build)
    text = _one_line(info.value)
    assert "DEBIASKIT_CACHE" in text and "a_file" in text
    assert build.calls == 0


# ----------------------------------------------------------------------------------------
# Augmentations move masks with images
# ----------------------------------------------------------------------------------------

def _blobs(n=16, h=24, w=20, seed=0):
    """Masks of random 2x2-pixel blocks plus a solid rectangle, and float images equal to
    the mask in every channel (foreground 1.0, background 0.0)."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(n, (h + 1) // 2, (w + 1) // 2, generator=g) < 0.4
    mask = blocks.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w].clone()
    mask[:, 3:9, 4:15] = True
    x = mask[:, None].float().expand(n, 3, h, w).contiguous()
    return x, mask


def _assert_nearest_aligned(x, mask):
    assert mask.dtype == torch.bool and mask.shape == (x.shape[0], *x.shape[2:])
    for c in range(x.shape[1]):
        assert torch.equal(x[:, c], mask.float())
    assert 0.05 < mask.float().mean() < 0.95  # something is there to misalign


NEAREST = {
    "crop_flip": lambda: RandomCropFlip(pad=4, flip=True),
    "crop": lambda: RandomCropFlip(pad=4, flip=False),
    "flip": lambda: RandomCropFlip(pad=0, flip=True),
    "affine": lambda: RandomAffine(),
    "crop_affine": lambda: Compose(RandomCropFlip(pad=4, flip=False), RandomAffine()),
}


@pytest.mark.parametrize("name", NEAREST)
def test_nearest_augmentations_keep_masks_aligned(name):
    x, mask = _blobs()
    aug = NEAREST[name]()
    out, out_mask = aug.apply(x, torch.Generator().manual_seed(3), mask)
    assert out.shape == x.shape
    _assert_nearest_aligned(out, out_mask)
    assert not torch.equal(out_mask, mask)  # something moved
    # the same seed, the same result; the mask does not change the random draws
    again, again_mask = aug.apply(x, torch.Generator().manual_seed(3), mask)
    assert torch.equal(again, out) and torch.equal(again_mask, out_mask)
    assert torch.equal(aug(x, torch.Generator().manual_seed(3)), out)
    # per-sample parameters: the same image in every row comes out in several ways
    same = x[:1].expand_as(x).contiguous()
    outs = aug(same, torch.Generator().manual_seed(4))
    assert len({o.numpy().tobytes() for o in outs}) >= (2 if name == "flip" else 4)


def _reference_crop_flip(x, mask, pad, flip, gen):
    """RandomCropFlip one sample at a time; the random draws in the order stored results
    depend on: all row offsets, all column offsets, then all flip coins."""
    n, _, h, w = x.shape
    if pad:
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    if flip:
        coin = torch.rand(n, generator=gen) < 0.5
    xs, ms = [], []
    for i in range(n):
        xi, mi = x[i], mask[i]
        if pad:
            xi = F.pad(xi, (pad,) * 4)[:, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
            mi = F.pad(mi, (pad,) * 4)[oy[i]:oy[i] + h, ox[i]:ox[i] + w]
        if flip and coin[i]:
            xi, mi = xi.flip(2), mi.flip(1)
        xs.append(xi)
        ms.append(mi)
    return torch.stack(xs), torch.stack(ms)


@pytest.mark.parametrize("pad, flip", [(4, True), (4, False), (0, True), (2, True)])
def test_crop_flip_matches_a_per_sample_reference(pad, flip):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 10, 12, generator=g)
    mask = torch.rand(16, 10, 12, generator=g) < 0.5
    out, out_mask = RandomCropFlip(pad, flip).apply(x, torch.Generator().manual_seed(9), mask)
    want, want_mask = _reference_crop_flip(x, mask, pad, flip, torch.Generator().manual_seed(9))
    assert torch.equal(out, want) and torch.equal(out_mask, want_mask)


def test_affine_draws_only_its_matrices():
    """RandomAffine consumes exactly the draws of ``matrices`` (angle, shear, scale)."""
    x, mask = _blobs(n=8)
    aug = RandomAffine()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    aug.apply(x, g1, mask)
    aug.matrices(8, g2)
    assert torch.equal(g1.get_state(), g2.get_state())
    # scale 1, no rotation, no shear: the identity
    out, m = RandomAffine(degrees=0.0, scale=(1.0, 1.0), shear=0.0).apply(x, g1, mask)
    assert torch.equal(out, x) and torch.equal(m, mask)


def _assert_bilinear_aligned(out, mask):
    """Images resampled bilinearly, masks nearest, at the same points: the nearest of the
    four bilinear neighbours has weight >= 1/4 (each offset <= 1/2), so where the mask is
    True the image (0/1 pixels) is >= 1/4, and where it is False the image is <= 3/4."""
    assert mask.dtype == torch.bool and mask.shape == (out.shape[0], *out.shape[2:])
    eps = 1e-5
    for c in range(out.shape[1]):
        assert (out[:, c][mask] >= 0.25 - eps).all()
        assert (out[:, c][~mask] <= 0.75 + eps).all()
    # and the check has teeth: most pixels are clearly foreground or background
    assert ((out[:, 0] > 0.999) | (out[:, 0] < 0.001)).float().mean() > 0.3
    assert 0.05 < mask.float().mean() < 0.95


@pytest.mark.parametrize("size, flip, scale", [
    (None, True, (0.08, 1.0)), (None, False, (0.5, 1.0)), (16, True, (0.3, 1.0)),
    ((40, 30), True, (0.08, 1.0)), (12, False, (0.9, 1.0)),
])
def test_resized_crop_keeps_masks_aligned(size, flip, scale):
    x, mask = _blobs()
    aug = RandomResizedCrop(size=size, scale=scale, flip=flip)
    out, out_mask = aug.apply(x, torch.Generator().manual_seed(2), mask)
    want = (24, 20) if size is None else ((size, size) if isinstance(size, int) else size)
    assert out.shape == (16, 3, *want)
    _assert_bilinear_aligned(out, out_mask)
    again, again_mask = aug.apply(x, torch.Generator().manual_seed(2), mask)
    assert torch.equal(again, out) and torch.equal(again_mask, out_mask)
    same = x[:1].expand_as(x).contiguous()
    outs = aug(same, torch.Generator().manual_seed(4))
    assert len({o.numpy().tobytes() for o in outs}) >= 8


def test_resized_crop_misaligned_mask_would_be_caught():
    """The bilinear alignment check fails for a mask shifted by one pixel."""
    x, mask = _blobs()
    out, out_mask = RandomResizedCrop(scale=(0.5, 1.0)).apply(
        x, torch.Generator().manual_seed(2), mask)
    with pytest.raises(AssertionError):
        _assert_bilinear_aligned(out, torch.roll(out_mask, 1, 2))


def test_resized_crop_whole_image_is_the_identity():
    x, mask = _blobs(h=20, w=20)
    aug = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    out, out_mask = aug.apply(x, torch.Generator().manual_seed(0), mask)
    assert torch.allclose(out, x, atol=1e-6) and torch.equal(out_mask, mask)
    flipped, flipped_mask = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0)).apply(
        x, torch.Generator().manual_seed(0), mask)
    was_flipped = [not torch.allclose(f, o, atol=1e-6) for f, o in zip(flipped, x)]
    assert 0 < sum(was_flipped) < 16
    for i, f in enumerate(was_flipped):
        assert torch.allclose(flipped[i], x[i].flip(2) if f else x[i], atol=1e-6)
        assert torch.equal(flipped_mask[i], mask[i].flip(1) if f else mask[i])


def test_resized_crop_samples_its_box():
    """A box of the output's size is copied pixel for pixel (bilinear at pixel centres),
    from where ``boxes`` put it, flipped where the coin says so."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 16, 16, generator=g)
    mask = torch.rand(16, 16, 16, generator=g) < 0.5
    aug = RandomResizedCrop(size=8, scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=True)
    out, out_mask = aug.apply(x, torch.Generator().manual_seed(7), mask)
    gen = torch.Generator().manual_seed(7)
    boxes = aug.boxes(16, 16, 16, gen)  # apply draws the boxes, then the flip coins
    coins = torch.rand(16, generator=gen, dtype=torch.float64) < 0.5
    assert 0 < int(coins.sum()) < 16 and len(set(map(tuple, boxes.tolist()))) > 4
    for i, (top, left, bh, bw) in enumerate(boxes.long().tolist()):
        assert bh == bw == 8
        crop, crop_mask = x[i, :, top:top + 8, left:left + 8], mask[i, top:top + 8, left:left + 8]
        if coins[i]:
            crop, crop_mask = crop.flip(2), crop_mask.flip(1)
        assert torch.allclose(out[i], crop, atol=1e-5)
        assert torch.equal(out_mask[i], crop_mask)


def test_compose_with_resized_crop_keeps_masks_aligned():
    x, mask = _blobs()
    aug = Compose(RandomCropFlip(pad=3), RandomResizedCrop(size=18, scale=(0.4, 1.0)))
    out, out_mask = aug.apply(x, torch.Generator().manual_seed(1), mask)
    assert out.shape == (16, 3, 18, 18)
    _assert_bilinear_aligned(out, out_mask)
    again, _ = aug.apply(x, torch.Generator().manual_seed(1), mask)
    assert torch.equal(again, out)


# ----------------------------------------------------------------------------------------
# RandomResizedCrop's box sampler
# ----------------------------------------------------------------------------------------

def test_boxes_whole_square_image():
    boxes = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0)).boxes(
        32, 17, 17, torch.Generator().manual_seed(0))
    assert boxes.dtype == torch.float64
    assert torch.equal(boxes, torch.tensor([[0.0, 0.0, 17.0, 17.0]]).expand(32, 4))


@pytest.mark.parametrize("h, w, scale, ratio", [
    (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),
    (20, 50, (0.08, 1.0), (3 / 4, 4 / 3)),
    (50, 20, (0.5, 1.0), (3 / 4, 4 / 3)),
    (9, 40, (0.9, 1.0), (0.5, 2.0)),      # often no try fits: the fallback
    (40, 9, (0.9, 1.0), (0.5, 2.0)),
    (7, 7, (0.01, 0.05), (1 / 3, 3.0)),
    (64, 48, (1.0, 1.0), (1.0, 1.0)),     # never fits: always the fallback
])
def test_boxes_lie_inside_the_image(h, w, scale, ratio):
    boxes = RandomResizedCrop(scale=scale, ratio=ratio).boxes(
        2000, h, w, torch.Generator().manual_seed(1))
    top, left, bh, bw = boxes.unbind(1)
    assert (boxes == boxes.round()).all()
    assert (bh >= 1).all() and (bw >= 1).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + bh <= h).all() and (left + bw <= w).all()
    # boxes are not all in one place
    if scale[0] < 0.5:
        assert len(set(map(tuple, boxes.tolist()))) > 20


def test_boxes_fallback_is_the_centre_crop_clamped_to_the_ratio():
    boxes = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0)).boxes(
        4, 64, 48, torch.Generator().manual_seed(0))
    # area 64*48 at ratio 1 needs a 55x55 box, taller than 48 wide: centre crop 48x48
    assert boxes.tolist() == [[8.0, 0.0, 48.0, 48.0]] * 4


def test_boxes_area_in_scale_range():
    """Every try fits here (the largest side is sqrt(4096 * 0.5 * 4/3) = 52 < 64), so every
    box is an accepted try: its area is the drawn share of the image up to the rounding of
    each side (at most 1/2 pixel each)."""
    h = w = 64
    scale, ratio = (0.25, 0.5), (3 / 4, 4 / 3)
    boxes = RandomResizedCrop(scale=scale, ratio=ratio).boxes(
        3000, h, w, torch.Generator().manual_seed(2))
    top, left, bh, bw = boxes.unbind(1)
    share = bh * bw / (h * w)
    side_sum = math.sqrt(h * w * scale[1]) * (math.sqrt(ratio[1]) + math.sqrt(1 / ratio[0]))
    slack = (0.5 * side_sum + 0.25) / (h * w)
    assert (share >= scale[0] - slack).all() and (share <= scale[1] + slack).all()
    aspect = bw / bh
    assert (aspect > ratio[0] * 0.9).all() and (aspect < ratio[1] * 1.1).all()
    # the shares cover the range, not just one end
    assert share.min() < scale[0] + 0.03 and share.max() > scale[1] - 0.03


def test_boxes_single_full_try_is_the_whole_image():
    """A single try at full scale and ratio 1 on a square image: exactly the whole image
    at every seed (the fallback can never be taken since the try always fits)."""
    aug = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0), tries=1)
    for seed in range(3):
        assert aug.boxes(5, 9, 9, torch.Generator().manual_seed(seed)).tolist() == \
            [[0.0, 0.0, 9.0, 9.0]] * 5


# ----------------------------------------------------------------------------------------
# Loader
# ----------------------------------------------------------------------------------------

def _dataset(n=37, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(n, h // 2, w // 2, generator=g) < 0.4
    mask = blocks.repeat_interleave(2, 1).repeat_interleave(2, 2)
    mask[:, 2:6, 2:8] = True
    x = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    return BiasedDataset(name="toy", x=x, y=torch.arange(n) % 4, num_classes=4,
                         b=torch.arange(n) % 3, num_bias=3, mask=mask)


def _mask_images(ds):
    """The same dataset with images that encode the mask (255 foreground, 0 background)."""
    x = (ds.mask[:, None].expand(-1, 3, -1, -1).to(torch.uint8) * 255).contiguous()
    return BiasedDataset(name=ds.name, x=x, y=ds.y, num_classes=ds.num_classes, b=ds.b,
                         num_bias=ds.num_bias, mask=ds.mask)


@pytest.mark.parametrize("shuffle", [True, False])
def test_loader_keeps_uint8_and_yields_float(shuffle):
    ds = _dataset()
    loader = InMemoryLoader(ds, batch_size=8, shuffle=shuffle, seed=3)
    assert loader.x.dtype == torch.uint8
    seen = []
    for batch in loader.epoch(0):
        assert batch.x.dtype == torch.float32
        assert batch.x.min() >= 0 and batch.x.max() <= 1
        assert torch.equal(batch.x, ds.x[batch.index].float() / 255)
        assert torch.equal(batch.y, ds.y[batch.index]) and torch.equal(batch.b, ds.b[batch.index])
        assert torch.equal(batch.mask, ds.mask[batch.index])
        seen.append(batch.index)
    assert sorted(torch.cat(seen).tolist()) == list(range(len(ds)))
    # converting batches never touches the stored images
    assert loader.x.dtype == torch.uint8 and torch.equal(loader.x, ds.x)


@pytest.mark.parametrize("augment", [None, "crop_flip", "crop_affine"])
def test_loader_resumed_epoch_is_the_same(augment):
    from debiaskit.data.augment import AUGMENTATIONS

    ds = _dataset()

    def loader():
        aug = AUGMENTATIONS[augment]() if augment else None
        return InMemoryLoader(ds, batch_size=8, seed=11, augment=aug)

    straight = loader()
    runs = [[(b.x, b.index, b.mask) for b in straight.epoch(e)] for e in range(3)]
    resumed = [(b.x, b.index, b.mask) for b in loader().epoch(2)]
    assert len(resumed) == len(runs[2]) == 5
    for (x1, i1, m1), (x2, i2, m2) in zip(runs[2], resumed):
        assert torch.equal(x1, x2) and torch.equal(i1, i2) and torch.equal(m1, m2)
    assert not torch.equal(runs[1][0][1], runs[2][0][1])  # epochs differ


@pytest.mark.parametrize("augment", ["crop_flip", "crop_affine", "resized_crop_flip"])
def test_loader_masks_follow_the_augmentation(augment):
    from debiaskit.data.augment import AUGMENTATIONS

    ds = _mask_images(_dataset())
    loader = InMemoryLoader(ds, batch_size=16, seed=5, augment=AUGMENTATIONS[augment]())
    moved = False
    for batch in loader.epoch(1):
        if augment == "resized_crop_flip":
            _assert_bilinear_aligned(batch.x, batch.mask)
        else:
            for c in range(3):
                assert torch.equal(batch.x[:, c], batch.mask.float())
        moved |= not torch.equal(batch.mask, ds.mask[batch.index])
    assert moved


def test_training_on_a_folder_without_an_evaluation_split_says_what_to_do(tmp_path):
    """A folder whose rows are all ``train``: training refuses it in one line (nothing to
    report on) unless a held-out split of the training images is the evaluation."""
    from debiaskit.errors import ConfigError
    from debiaskit.train import RunConfig, train

    truth = _write_folder(tmp_path / "set", n=12)
    rows = [{"path": t["name"], "y": CLASSES[t["y"]]} for t in truth]
    _write_csv(tmp_path / "set" / "metadata.csv", rows, fields=("path", "y"))
    cfg = RunConfig(dataset="folder", data_params={"path": str(tmp_path / "set")}, epochs=1,
                    progress=False, selection="last")
    with pytest.raises(ConfigError, match="no evaluation split"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    summary = train(RunConfig(**{**cfg.__dict__, "selection": "heldout",
                                 "heldout_fraction": 0.25}), tmp_path / "run2")
    assert list(summary["metrics"]) == ["val"]
