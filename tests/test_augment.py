"""The batched augmentations: masks move with their images, crops and flips match a
per-sample reference, and RandomResizedCrop's box sampler."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from debiaskit.data.augment import Compose, RandomAffine, RandomCropFlip, RandomResizedCrop

from checks import assert_bilinear_aligned  # tests/ is on sys.path

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
    assert_bilinear_aligned(out, out_mask)
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
        assert_bilinear_aligned(out, torch.roll(out_mask, 1, 2))


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
    assert_bilinear_aligned(out, out_mask)
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
