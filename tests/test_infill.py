"""CF/F infills on real images (the bg_shift set: real CIFAR-10 photographs with exact
digit masks): each changes only the pixels it may change, in the way it is defined."""

from __future__ import annotations

import pytest
import torch

from debiaskit.data import infill
from debiaskit.data.protocols import build_data
from debiaskit.errors import ConfigError
from parity import require_data


@pytest.fixture(scope="module")
def batch(data_dir):
    require_data("cifar10.npz")
    ds = build_data("bg_shift", data_dir=data_dir, train_per_class=20, test_per_class=1).train
    pick = torch.arange(0, 200, 13)
    mask = ds.mask[pick]
    return ds.x[pick].float() / 255.0, mask, infill.mask_boxes(mask), ds.y[pick]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", infill.COUNTERFACTUAL)
def test_counterfactual_infills_change_only_the_box(batch, name):
    x, _, box, _ = batch
    out = infill.counterfactual(name, x, box, _gen())
    outside = ~box[:, None].expand_as(x)
    assert torch.equal(out[outside], x[outside])
    assert not torch.equal(out, x) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, infill.counterfactual(name, x, box, _gen()))  # reproducible


@pytest.mark.parametrize("name", infill.FACTUAL)
def test_factual_infills_change_only_the_background(batch, name):
    x, mask, _, y = batch
    out = infill.factual(name, x, mask, _gen(), y=y)
    inside = mask[:, None].expand_as(x)
    assert torch.equal(out[inside], x[inside])
    assert not torch.equal(out, x) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, infill.factual(name, x, mask, _gen(), y=y))


def test_each_infill_as_defined(batch):
    x, mask, box, y = batch
    b3 = box[:, None].expand_as(x)
    assert (infill.counterfactual("grey", x, box)[b3] == 0.5).all()
    # shuffle: every image's region keeps its pixels (RGB vectors), in another order
    out = infill.counterfactual("shuffle", x, box, _gen())
    for i in range(len(x)):
        before = x[i][:, box[i]].T.tolist()
        after = out[i][:, box[i]].T.tolist()
        assert sorted(before) == sorted(after) and before != after
    # shuffle_batch: the values come from the whole batch tensor
    out = infill.counterfactual("shuffle_batch", x, box, _gen())
    assert set(out[b3].unique().tolist()) <= set(x.unique().tolist())
    # random: one colour per image and channel plus noise of std 0.2 (before clipping)
    out = infill.counterfactual("random", x, box, _gen())
    spread = out[0][:, box[0]].std(1)
    assert ((spread > 0.05) & (spread < 0.3)).all()
    # tile: the region is filled from a band of the image that meets no box pixel
    out = infill.counterfactual("tile", x, box, _gen())
    for i in range(len(x)):
        cols = (~box[i].any(0)).nonzero().flatten()
        rows = (~box[i].any(1)).nonzero().flatten()
        band_pixels = set(map(tuple, x[i][:, :, cols].reshape(3, -1).T.tolist())) | set(
            map(tuple, x[i][:, rows, :].reshape(3, -1).T.tolist()))
        assert set(map(tuple, out[i][:, box[i]].T.tolist())) <= band_pixels
    # mixed_rand: the background of another class's image (its own digit tiled over)
    out = infill.factual("mixed_rand", x, mask, _gen(), y=y)
    tiled = infill.tile(x, mask)
    background = ~mask
    for i in range(len(x)):
        donors = [j for j in range(len(x)) if y[j] != y[i] and torch.equal(
            out[i][:, background[i]], tiled[j][:, background[i]])]
        assert donors


def test_inpainting_uses_the_surroundings(batch):
    x, _, box, _ = batch
    for name in ("telea", "ns"):
        out = infill.counterfactual(name, x, box)
        # smoother than the digit it replaced: the region moves towards the border colours
        assert (out - x)[box[:, None].expand_as(x)].abs().mean() > 0.05


def test_bad_input(batch):
    x, mask, box, y = batch
    with pytest.raises(ConfigError, match="unknown counterfactual infill 'cagan'"):
        infill.counterfactual("cagan", x, box)
    with pytest.raises(ConfigError, match="unknown factual infill 'grey'"):
        infill.factual("grey", x, mask)
    with pytest.raises(ConfigError, match="region has shape"):
        infill.counterfactual("grey", x, box[:, :16])
    with pytest.raises(ConfigError, match="labels"):
        infill.factual("mixed_rand", x, mask)


@pytest.mark.slow
def test_within_image_shuffle_keeps_a_uniform_background_colour(data_dir):
    # background-coloured MNIST: the paper's F(Shuffle) permutes one image's own background,
    # so the colour shortcut survives it; F(Random) and F(Shuffle-batch) draw other colours
    ds = build_data("bg_colored_mnist", data_dir=data_dir).train
    x, mask = ds.x[:64].float() / 255.0, ds.mask[:64]
    background = ~mask[:, None].expand_as(x)
    assert torch.equal(infill.factual("shuffle", x, mask, _gen())[background], x[background])
    for name in ("random", "shuffle_batch"):
        out = infill.factual(name, x, mask, _gen())
        changed = (out != x).any(1) & ~mask  # background pixels whose colour moved
        assert changed.float().mean() > 0.5, name


def test_mixed_background_view_keeps_each_digit_on_another_class_background(data_dir):
    # the held-out view of the heldout_mixed rule: foreground pixels untouched, background
    # from another class's image with that image's digit tiled over, bias labels dropped
    require_data("cifar10.npz")
    ds = build_data("bg_shift", data_dir=data_dir, train_per_class=3, test_per_class=1).train
    view = infill.mixed_background_view(ds, seed=5)
    assert view.b is None and torch.equal(view.y, ds.y) and torch.equal(view.mask, ds.mask)
    fg = ds.mask[:, None].expand_as(ds.x)
    assert torch.equal(view.x[fg], ds.x[fg])
    tiled = infill.tile(ds.x.float() / 255.0, ds.mask).mul(255).round().to(torch.uint8)
    for i in range(len(ds)):
        bg = ~ds.mask[i]
        donors = [j for j in range(len(ds)) if torch.equal(view.x[i][:, bg], tiled[j][:, bg])]
        assert donors and all(ds.y[j] != ds.y[i] for j in donors)
    assert torch.equal(view.x, infill.mixed_background_view(ds, seed=5).x)  # seeded
    with pytest.raises(ConfigError, match="no foreground masks"):
        infill.mixed_background_view(ds.without_bias().__class__(
            name="plain", x=ds.x, y=ds.y, num_classes=10), seed=0)
