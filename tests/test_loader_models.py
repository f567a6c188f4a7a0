"""Loader batching and augmentation; the architectures' shapes and sizes."""

import torch

from debiaskit.data.augment import RandomCropFlip
from debiaskit.data.dataset import BiasedDataset
from debiaskit.data.loader import InMemoryLoader
from debiaskit.models import build_model


def _ds(n=10):
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return BiasedDataset("toy", x, torch.arange(n) % 2, 2, b=torch.arange(n) % 2, num_bias=2)


def test_epoch_covers_every_sample_once_and_is_reproducible():
    ld = InMemoryLoader(_ds(), batch_size=3, seed=5)
    batches = list(ld.epoch(0))
    idx = torch.cat([b.index for b in batches])
    assert sorted(idx.tolist()) == list(range(10)) and len(batches) == len(ld) == 4
    assert torch.equal(idx, torch.cat([b.index for b in ld.epoch(0)]))
    assert not torch.equal(idx, torch.cat([b.index for b in ld.epoch(1)]))
    for b in batches:  # images, targets and bias labels stay together
        assert torch.equal(b.x[:, 0, 0, 0] * 255, b.index.float())
        assert torch.equal(b.y, b.index % 2) and torch.equal(b.b, b.index % 2)


def test_drop_last_and_order():
    ld = InMemoryLoader(_ds(), batch_size=3, shuffle=False, drop_last=True)
    assert [b.index.tolist() for b in ld.epoch(0)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_crop_is_a_shift_of_the_padded_image():
    x = torch.rand(64, 3, 8, 8)
    out = RandomCropFlip(pad=2, flip=False)(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])
                   for dy in range(5) for dx in range(5))
    assert not torch.equal(out, x)


def test_flip_only_mirrors():
    x = torch.rand(200, 3, 5, 5)
    out = RandomCropFlip(pad=0, flip=True)(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped | kept).all()) and 60 < int(flipped.sum()) < 140


def test_mlp_is_2352_100_100_100_10():
    net = build_model("mlp", (3, 28, 28), 10)
    sizes = [(m.in_features, m.out_features) for m in net.modules()
             if isinstance(m, torch.nn.Linear)]
    assert sizes == [(2352, 100), (100, 100), (100, 100), (100, 10)]
    x = torch.rand(4, 3, 28, 28)
    quirk = build_model("mlp", (3, 28, 28), 10, input_scale_quirk=True)
    quirk.load_state_dict(net.state_dict())
    assert torch.allclose(quirk(x), net(x / 255))


def test_resnet20_option_a():
    net = build_model("resnet20", (3, 32, 32), 10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19  # 1 stem + 3 stages x 3 blocks x 2; option A adds none
    params = sum(p.numel() for p in net.parameters())
    assert 0.26e6 < params < 0.28e6  # "0.27M" in He et al. (2016), Table 6
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
