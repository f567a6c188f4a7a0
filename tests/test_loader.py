"""The in-memory loader: uint8 storage, float batches, resumed epochs, masks through
the augmentation."""

from __future__ import annotations


import pytest
import torch

from debiaskit.data.dataset import BiasedDataset
from debiaskit.data.loader import InMemoryLoader

from checks import assert_bilinear_aligned  # tests/ is on sys.path

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
            assert_bilinear_aligned(batch.x, batch.mask)
        else:
            for c in range(3):
                assert torch.equal(batch.x[:, c], batch.mask.float())
        moved |= not torch.equal(batch.mask, ds.mask[batch.index])
    assert moved
