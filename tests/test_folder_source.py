"""The folder source (a folder of images plus a CSV: how users bring their own data),
checked on small image folders written by the tests."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from debiaskit.data.sources import load_folder
from debiaskit.errors import DataError

from checks import one_line  # tests/ is on sys.path

# ----------------------------------------------------------------------------------------
# Folder source
# ----------------------------------------------------------------------------------------

CLASSES = ("cat", "dog", "bird")  # deliberately not sorted: classes.txt order must win
PLACES = ("water", "land", "desert")


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
    assert "line 3" in one_line(info.value) and "image size" in str(info.value)

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
    text = one_line(info.value)
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
    assert "metadata.csv line 4" in one_line(info.value)
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
    text = one_line(info.value)
    assert "metadata.csv" in text
    for column in ("path", "y"):
        if column not in header:
            assert f"{column}" in text.split("has no column", 1)[1].split("(")[0]


def test_folder_missing_folder_csv_and_empty_csv(tmp_path):
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "absent", progress=False)
    assert "absent" in one_line(info.value)
    (tmp_path / "set").mkdir()
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    assert "metadata.csv" in one_line(info.value)
    _write_csv(tmp_path / "set" / "metadata.csv", [])
    with pytest.raises(DataError) as info:
        load_folder(tmp_path / "set", progress=False)
    assert "no images" in one_line(info.value)


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
    text = one_line(info.value)
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
    assert "metadata.csv line 2: attribute column bias" in one_line(info.value)


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
    assert "skating_1" in one_line(info.value)




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
