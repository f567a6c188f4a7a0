"""``debiaskit data write-folder``: a protocol's data as PNG files plus metadata.csv that the
folder dataset reads back as the same images, labels and bias labels; bad input is one
line, exit status 2, and nothing written."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from debiaskit.cli import main
from debiaskit.data import folder_writer
from debiaskit.data.dataset import BiasedDataset
from debiaskit.data.protocols import build_data
from debiaskit.errors import ConfigError, DebiaskitError

MARK = ["--dataset", "shortcut_mnist", "--data", "kind=mark", "--data", "train_per_class=12",
        "--data", "test_per_class=3"]


def same(a: BiasedDataset, b: BiasedDataset) -> None:
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.b, b.b)
    assert a.num_classes == b.num_classes and a.num_bias == b.num_bias
    assert torch.equal(a.aligned, b.aligned)


def test_a_written_folder_reads_back_as_the_same_data(data_dir, tmp_path, capsys):
    out = tmp_path / "mark"
    assert main(["data", "write-folder", *MARK, "--data-dir", data_dir, "--out", str(out)]) == 0
    assert f"wrote 150 images (train 120, test 30) and metadata.csv to {out}" in \
        capsys.readouterr().out
    with open(out / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "y", "split", "bias"] and len(rows) == 150
    assert rows[0]["path"] == "train/00000.png" and rows[-1]["path"] == "test/00029.png"
    assert (out / "classes.txt").read_text() == "".join(f"{c}\n" for c in range(10))
    assert sorted(os.listdir(out)) == ["classes.txt", "metadata.csv", "test", "train"]
    original = build_data("shortcut_mnist", data_dir=data_dir, kind="mark", train_per_class=12,
                          test_per_class=3)
    back = build_data("folder", path=str(out))
    assert list(back.evals) == ["test"]
    same(back.train, original.train)
    same(back.evals["test"], original.evals["test"])


def test_subsets_are_the_ones_train_uses(data_dir, tmp_path):
    from debiaskit.train import random_subset  # what train and discover subset with
    out = tmp_path / "sub"
    assert main(["data", "write-folder", *MARK, "--data-dir", data_dir, "--train-subset", "50",
                 "--eval-subset", "7", "--seed", "3", "--out", str(out)]) == 0
    original = build_data("shortcut_mnist", data_dir=data_dir, kind="mark", train_per_class=12,
                          test_per_class=3)
    back = build_data("folder", path=str(out))
    same(back.train, random_subset(original.train, 50, 3))
    same(back.evals["test"], random_subset(original.evals["test"], 7, 3))


def test_grey_images_are_written_grey_and_read_back_as_rgb(tmp_path):
    x = torch.arange(2 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4) * 7
    ds = BiasedDataset(name="tiny", x=x, y=torch.tensor([0, 1]), num_classes=2)
    assert folder_writer.write_image_folder({"train": ds}, tmp_path / "grey") == {"train": 2}
    from PIL import Image
    with Image.open(tmp_path / "grey" / "train" / "00001.png") as img:
        assert img.mode == "L"
    back = build_data("folder", path=str(tmp_path / "grey")).train
    assert back.b is None and torch.equal(back.x, x.repeat(1, 3, 1, 1))


@pytest.mark.parametrize("args, words", [
    (["--data", "kind=stripes"], "kind='stripes' is not a shortcut kind"),
    (["--train-subset", "0"], "--train-subset must be at least 1, got 0"),
    (["--data", "nope=1"], "takes no parameter nope"),
])
def test_bad_input_is_one_line_and_writes_nothing(data_dir, tmp_path, capsys, args, words):
    out = tmp_path / "never"
    assert main(["data", "write-folder", *MARK, *args, "--data-dir", data_dir,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_non_empty_out_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "write-folder", *MARK, "--data-dir", data_dir, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(out) == ["keep.txt"] and sorted(os.listdir(tmp_path)) == ["full"]


def test_a_failing_write_leaves_nothing(tmp_path, monkeypatch):
    x = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    ds = BiasedDataset(name="tiny", x=x, y=torch.tensor([0, 1, 1]), num_classes=2,
                       b=torch.tensor([0, 1, 0]), num_bias=2)
    real, calls = folder_writer._png, []

    def png(image):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(image)

    monkeypatch.setattr(folder_writer, "_png", png)
    with pytest.raises(DebiaskitError, match="No space left on device"):
        folder_writer.write_image_folder({"train": ds}, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_an_alignment_a_folder_cannot_state_is_refused(tmp_path):
    ds = BiasedDataset(name="skewed", x=torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                       y=torch.tensor([0, 1]), num_classes=2, b=torch.tensor([1, 0]),
                       num_bias=2, aligned_bias=torch.tensor([1, 0]))
    with pytest.raises(ConfigError, match=r"pairs classes with bias values \[1, 0\]"):
        folder_writer.write_image_folder({"train": ds}, tmp_path / "out")
    assert os.listdir(tmp_path) == []
