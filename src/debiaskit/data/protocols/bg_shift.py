"""Synthetic background-shift set in the IN-9 mould (CF/F; docs/datasets.md).

IN-9 (Xiao et al.'s backgrounds challenge) cannot be had offline, so this set rebuilds its
structure from two real sources whose foreground masks are exact:

Card:
- input: 32 x 32 RGB (``image_size`` smaller: the backgrounds resized with PIL bicubic
  first). Foreground: an MNIST digit resized to a random side in [``fg_min``,
  ``fg_max``] pixels (PIL bilinear), binarised at 128 and painted in one random fully
  saturated colour per image (so colour says nothing about the class; ``fg_opacity`` < 1
  mixes that colour with the background underneath, a fainter digit), placed at a random
  position inside the image. Background: a CIFAR-10 photograph (``bg_pool`` > 0: one of
  that many training photographs per class, the same pool for the training and the test
  sets: a few recurring scenes per class, which a network picks up faster than the class
  of an unseen photograph).
- label ``y``: the digit. Bias attribute ``b``: the CIFAR-10 class of the background
  (``num_bias`` 10; class c is aligned with background class c: airplane behind 0,
  automobile behind 1, ...).
- mask: the binarised digit (bool N x H x W), exact by construction; the bounding box of
  a sample is the tight box of its mask (:func:`debiaskit.data.infill.mask_boxes`), so it
  is never stored apart from the mask and stays right under flips and crops.
- training set (``train``): the first ``train_per_class`` MNIST training digits of every
  class in dataset order; per class a seeded shuffle gives ``int(n * (1 - conflict_ratio))``
  digits a background of their own class and splits the rest over the nine other classes
  (ReBias' assignment, :func:`.assignment.shuffled_assignment`). Backgrounds of class k are
  CIFAR-10 training images of class k in a seeded order, each used once until the class's
  5,000 images are exhausted (then the order repeats; at the defaults none repeats).
- test sets, as IN-9 defines them, all on the same foregrounds (the first
  ``test_per_class`` MNIST test digits of every class, each with one drawn size, position
  and colour) over CIFAR-10 test backgrounds: ``original`` (a background of the digit's
  own class), ``mixed_same`` (another image of the same class), ``mixed_rand`` (an image of
  a uniformly drawn other class), ``mixed_next`` (an image of class y + 1 mod 10). The local
  CIFAR-10 test set is mostly JPEG-decoded (data/README.md); the backgrounds come from it.
- source: MNIST (LeCun et al.) and CIFAR-10 (Krizhevsky 2009), both from the data
  directory; the composition is ours (no published numbers exist for it: the CF/F preset
  prints IN-9's as the reference shape only).
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch

from ...errors import ConfigError
from ..dataset import BiasedDataset, DataBundle
from ..sources import load_source
from .assignment import check_conflict_ratio, shuffled_assignment
from .resize import check_image_size, resize_images

SIDE = 32
NUM_CLASSES = 10
#: MNIST intensity at or above which a resized digit pixel is foreground
THRESHOLD = 128


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` fully saturated, full-value RGB colours of uniform random hue (uint8)."""
    hues = rng.random(n)
    return np.array([[round(255 * v) for v in colorsys.hsv_to_rgb(h, 1.0, 1.0)] for h in hues],
                    dtype=np.uint8)


def _placements(rng: np.random.Generator, n: int, fg_min: int, fg_max: int, side: int = SIDE):
    """Per sample: the digit's side, its top-left corner (inside the image) and colour."""
    sizes = rng.integers(fg_min, fg_max + 1, size=n)
    tops, lefts = (np.floor(rng.random(n) * (side - sizes + 1)).astype(np.int64)
                   for _ in range(2))
    return sizes, tops, lefts, _colours(rng, n)


def _foregrounds(digits: np.ndarray, sizes, tops, lefts, side: int = SIDE) -> np.ndarray:
    """Bool (N, side, side) masks: each digit resized to its side and placed at its corner."""
    from PIL import Image
    masks = np.zeros((len(digits), side, side), dtype=bool)
    for i, (digit, s, t, l) in enumerate(zip(digits, sizes, tops, lefts)):
        small = np.asarray(Image.fromarray(digit).resize((int(s), int(s)),
                                                         Image.Resampling.BILINEAR))
        masks[i, t:t + s, l:l + s] = small >= THRESHOLD
    return masks


def _compose(backgrounds: np.ndarray, masks: np.ndarray, colours: np.ndarray,
             opacity: float = 1.0) -> np.ndarray:
    """(N, 3, H, W) uint8: the background with the mask's pixels painted in the colour
    (``opacity`` < 1: colour and background mixed, rounded to the nearest integer)."""
    paint = colours[:, None, None, :]
    if opacity < 1.0:
        paint = np.rint(opacity * paint + (1.0 - opacity) * backgrounds.astype(np.float64)) \
            .astype(np.uint8)
    out = np.where(masks[..., None], paint, backgrounds)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _pick_backgrounds(want: np.ndarray, y_bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices into the background images: for every wanted class, that class's images in
    a seeded order, each once before any repeats."""
    out = np.empty(len(want), dtype=np.int64)
    for k in range(NUM_CLASSES):
        slots = np.flatnonzero(want == k)
        pool = rng.permutation(np.flatnonzero(y_bg == k))
        if len(slots):
            out[slots] = np.resize(pool, len(slots))
    return out


def first_per_class(y: np.ndarray, per_class: int, what: str, dataset: str) -> np.ndarray:
    """Indices of the first ``per_class`` digits of every class, class after class (each in
    dataset order); a class with fewer is a one-line error naming ``dataset`` and the
    ``what`` (train / test) set."""
    idx = []
    for c in range(NUM_CLASSES):
        members = np.flatnonzero(y == c)
        if len(members) < per_class:
            raise ConfigError(f"{dataset}: the {what} set has {len(members)} digits of class "
                              f"{c}, fewer than {what}_per_class={per_class}; lower "
                              f"{what}_per_class")
        idx.append(members[:per_class])
    return np.concatenate(idx)


def build(conflict_ratio: float = 0.05, train_per_class: int = 4000, test_per_class: int = 500,
          fg_min: int = 16, fg_max: int = 24, image_size: int = SIDE, fg_opacity: float = 1.0,
          bg_pool: int = 0, seed: int = 0, data_dir=None, download: bool = False) -> DataBundle:
    """The synthetic background-shift set at ``1 - conflict_ratio`` correlation between the
    digit and the class of its background (0.05: 95 %, 0.01: 99 %), ``image_size`` pixels
    square (backgrounds resized with PIL bicubic, digits of ``fg_min``-``fg_max`` pixels
    placed inside), digits painted at ``fg_opacity`` over their background; ``bg_pool`` > 0
    draws every background, training and test, from that many CIFAR-10 training images per
    class (a few recurring scenes per class, an easier background signal)."""
    conflict_ratio = check_conflict_ratio(conflict_ratio, NUM_CLASSES)
    image_size = check_image_size(image_size)
    if image_size > SIDE:
        raise ConfigError(f"bg_shift: image_size={image_size} is larger than CIFAR-10's "
                          f"{SIDE} pixels; give at most {SIDE}")
    for key, value, low, high in (("train_per_class", train_per_class, 1, 5000),
                                  ("test_per_class", test_per_class, 1, 890),
                                  ("fg_min", fg_min, 4, image_size),
                                  ("fg_max", fg_max, 4, image_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not low <= value <= high:
            raise ConfigError(f"bg_shift: {key}={value!r} must be an integer in [{low}, {high}]")
    if fg_min > fg_max:
        raise ConfigError(f"bg_shift: fg_min={fg_min} is larger than fg_max={fg_max}")
    if isinstance(bg_pool, bool) or not isinstance(bg_pool, (int, np.integer)) \
            or not 0 <= bg_pool <= 5000 or bg_pool == 1:
        raise ConfigError(f"bg_shift: bg_pool={bg_pool!r} must be 0 (every CIFAR-10 image) or "
                          "an integer in [2, 5000] (Mixed-Same needs two images per class)")
    if isinstance(fg_opacity, bool) or not isinstance(fg_opacity, (int, float)) \
            or not 0.0 < fg_opacity <= 1.0:
        raise ConfigError(f"bg_shift: fg_opacity={fg_opacity!r} must be a number in (0, 1] "
                          "(1: the digit painted over its background)")
    mnist = load_source("mnist", data_dir, download=download)
    cifar = load_source("cifar10", data_dir, download=download)
    params = {"conflict_ratio": conflict_ratio, "train_per_class": train_per_class,
              "test_per_class": test_per_class, "fg_min": fg_min, "fg_max": fg_max,
              "seed": seed}
    # parameters added later appear only when they differ from the defaults, so the
    # earlier sets keep their parameters (and their cached identity)
    if image_size != SIDE:
        params["image_size"] = image_size
    if fg_opacity != 1.0:
        params["fg_opacity"] = float(fg_opacity)
    if bg_pool:
        params["bg_pool"] = int(bg_pool)
    # the background images: CIFAR-10's training and test sets, or one pool of training
    # images per class for both (drawn from a stream of its own, so the other draws stay)
    x_bg_train, y_bg_train = cifar.x_train, cifar.y_train
    x_bg_test, y_bg_test = cifar.split("test").x, cifar.split("test").y
    if bg_pool:
        rng_pool = np.random.default_rng([seed, 2])
        pool = np.concatenate([rng_pool.permutation(np.flatnonzero(y_bg_train == k))[:bg_pool]
                               for k in range(NUM_CLASSES)])
        x_bg_train = x_bg_test = x_bg_train[pool]
        y_bg_train = y_bg_test = y_bg_train[pool]

    def backgrounds(images: np.ndarray) -> np.ndarray:
        return resize_images(images, image_size)
    aligned_bias = torch.arange(NUM_CLASSES)
    rng_train, rng_test = (np.random.default_rng([seed, k]) for k in (0, 1))

    def dataset(name, x, y, b, masks, meta):
        return BiasedDataset(name=f"bg_shift/{name}", x=torch.from_numpy(x),
                             y=torch.from_numpy(y), num_classes=NUM_CLASSES,
                             b=torch.from_numpy(b), num_bias=NUM_CLASSES,
                             mask=torch.from_numpy(masks), aligned_bias=aligned_bias,
                             meta={"split": name, **params, **meta})

    # training set
    pick = first_per_class(mnist.y_train, train_per_class, "train", "bg_shift")
    y = mnist.y_train[pick].astype(np.int64)
    b = shuffled_assignment(y, 1.0 - conflict_ratio, NUM_CLASSES, rng_train)
    sizes, tops, lefts, colours = _placements(rng_train, len(y), fg_min, fg_max, image_size)
    masks = _foregrounds(mnist.x_train[pick], sizes, tops, lefts, image_size)
    bg = _pick_backgrounds(b, y_bg_train, rng_train)
    train = dataset("train", _compose(backgrounds(x_bg_train[bg]), masks, colours,
                                      fg_opacity), y, b, masks,
                    {"backgrounds": "CIFAR-10 training images"})

    # test sets: one foreground per test digit, four backgrounds
    pick = first_per_class(mnist.y_test, test_per_class, "test", "bg_shift")
    y = mnist.y_test[pick].astype(np.int64)
    sizes, tops, lefts, colours = _placements(rng_test, len(y), fg_min, fg_max, image_size)
    masks = _foregrounds(mnist.x_test[pick], sizes, tops, lefts, image_size)
    y_bg, x_bg = y_bg_test, x_bg_test
    test_backgrounds = (f"the training pool ({bg_pool} CIFAR-10 training images per class)"
                        if bg_pool else "CIFAR-10 test images (mostly JPEG-decoded, "
                                        "data/README.md)")
    original = _pick_backgrounds(y, y_bg, rng_test)
    same = _pick_backgrounds(y, y_bg, rng_test)
    clash = same == original  # another image of the same class, never the original one
    while clash.any():
        same[clash] = _pick_backgrounds(y[clash], y_bg, rng_test)
        clash = same == original
    rand_class = (y + rng_test.integers(1, NUM_CLASSES, size=len(y))) % NUM_CLASSES
    next_class = (y + 1) % NUM_CLASSES
    chosen = {"original": (y, original), "mixed_same": (y, same),
              "mixed_rand": (rand_class, _pick_backgrounds(rand_class, y_bg, rng_test)),
              "mixed_next": (next_class, _pick_backgrounds(next_class, y_bg, rng_test))}
    evals = {name: dataset(name, _compose(backgrounds(x_bg[idx]), masks, colours, fg_opacity),
                           y, b_test.astype(np.int64),
                           masks, {"backgrounds": test_backgrounds,
                                   "foregrounds": "the same in every test set"})
             for name, (b_test, idx) in chosen.items()}
    return DataBundle(train=train, evals=evals, protocol="bg_shift", params=params)
