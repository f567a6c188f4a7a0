"""MNIST digits with one planted shortcut of a chosen kind (test sets for bias discovery).

Card:
- input: 28 x 28 RGB (grey images have three equal channels). The shortcut, by ``kind``:
  ``colour``: the digit in the colour of its bias value (LfF's ten mean colours of
  ``colored_mnist`` plus N(0, 0.005^2) per channel, multiplied into the grey digit; black
  background). ``mark``: the grey digit on black with a white 3 x 3 square (value 255) at
  one of ten places along the border (:data:`MARK_CORNERS`, top-left corners, clockwise
  from the top-left), the place of its bias value; the square is drawn over the digit
  where they meet. ``texture``: the white digit over a grey sinusoidal grating, values 0
  to :data:`AMPLITUDE` (96), of its bias value's spatial frequency
  (:data:`FREQUENCIES`: about six cycles per image at ten orientations 18 degrees apart,
  rounded to whole cycles); ``phase="fixed"`` draws every grating at phase 0 (a fixed
  pattern per bias value), ``"random"`` at one uniformly drawn phase per image (its
  expected value over the phase is the same flat grey for every bias value: only its
  frequency and orientation carry the bias). ``scene``: the white digit over a CIFAR-10
  photograph of class b, resized 32 -> 28 (PIL bicubic). Over a grating or a photograph
  the digit is blended by its own intensity, ``background * (1 - g) + 255 * g`` with ``g``
  the MNIST pixel in [0, 1], rounded to the nearest integer.
- label ``y``: the digit. Bias attribute ``b`` in 0..9, aligned when ``b == y``
  (``num_bias`` 10).
- mask: the digit's pixels (MNIST value > 0), bool N x 28 x 28.
- training set (``train``): MNIST's training digits in dataset order (``train_per_class``:
  only the first that many of every class); per class a seeded shuffle gives
  ``int(n * (1 - conflict_ratio))`` digits their own class's bias value and splits the
  rest, in equal chunks, over the nine other values (ReBias' assignment,
  :func:`.assignment.shuffled_assignment`; default 2 % conflicting).
- test set (``test``): MNIST's test digits (``test_per_class``: the first that many per
  class) under the same assignment with 10 % aligned, every bias value about equally often
  in every class, so that the conflicting test accuracy measures how much a model relies
  on the shortcut.
- scene backgrounds: with ``bg_pool`` > 0 (default 10), that many CIFAR-10 training
  photographs per class (seeded), serving the training and the test set alike (recurring
  scenes: an easier background signal); ``bg_pool=0``: every training photograph
  of the class for the training set and the CIFAR-10 test set's for the test set (mostly
  JPEG-decoded, data/README.md). Within a split each photograph of a class is used once
  before any repeats.
- source: MNIST (LeCun et al.), and CIFAR-10 (Krizhevsky 2009) for ``scene``; the
  composition is ours, made to test that a discovery finds shortcuts other than colour.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ..dataset import BiasedDataset, DataBundle
from ..sources import ImageSource, load_source
from .assignment import check_conflict_ratio, shuffled_assignment
from .bg_shift import _pick_backgrounds, first_per_class
from .colored_mnist import colorize_foreground
from .resize import resize_images

KINDS = ("colour", "mark", "texture", "scene")
PHASES = ("fixed", "random")
NUM_CLASSES = 10
SIDE = 28
#: colour noise of ``kind=colour`` (LfF's severity 4)
COLOUR_SIGMA = 0.005
#: side of the mark's square, in pixels
MARK_SIDE = 3
#: the mark's top-left corner (row, column) per bias value: four places along the top, the
#: middle of the right edge, four along the bottom (right to left), the middle of the left
MARK_CORNERS = np.array([(1, 1), (1, 9), (1, 16), (1, 24), (12, 24),
                         (24, 24), (24, 16), (24, 9), (24, 1), (12, 1)])
#: the grating's frequency per bias value, cycles per image along (rows, columns): six
#: cycles at 0, 18, ..., 162 degrees, rounded to whole cycles (exact FFT bins)
FREQUENCIES = np.array([(0, 6), (2, 6), (4, 5), (5, 4), (6, 2),
                        (6, 0), (6, -2), (5, -4), (4, -5), (2, -6)])
#: test split: the same assignment with a tenth aligned (bias independent of the class)
TEST_ALIGNED_RATIO = 0.1
#: the grating's peak value (its values span 0 to this)
AMPLITUDE = 96
#: images composed at a time (keeps the float temporaries small)
CHUNK = 8192


def grey_rgb(gray: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, 3, H, W), three equal channels."""
    return np.repeat(gray[:, None], 3, axis=1)


def add_marks(gray: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Copy of the (N, H, W) digits with a white square at bias value b's place."""
    out = np.array(gray, copy=True)
    for value, (top, left) in enumerate(MARK_CORNERS):
        out[b == value, top:top + MARK_SIDE, left:left + MARK_SIDE] = 255
    return out


def gratings(b: np.ndarray, phase: np.ndarray, amplitude: float = AMPLITUDE) -> np.ndarray:
    """(N, 28, 28) float: ``amplitude * (1 + cos(2 pi (fr * r + fc * c) / 28 + phase)) / 2``
    at bias value b's frequency (fr, fc)."""
    rows, cols = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    f = FREQUENCIES[b].astype(np.float64)
    angle = 2 * np.pi * (f[:, 0, None, None] * rows + f[:, 1, None, None] * cols) / SIDE
    return amplitude * (1.0 + np.cos(angle + phase[:, None, None])) / 2.0


def blend_digit(background: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """The white digit over a background: (N, H, W) or (N, H, W, 3) background, (N, H, W)
    uint8 digits -> (N, 3, H, W) uint8 ``background * (1 - g) + 255 * g``, rounded
    (float32, in chunks that keep the temporaries small)."""
    out = np.empty((len(gray), 3) + gray.shape[1:], dtype=np.uint8)
    for lo in range(0, len(gray), CHUNK):
        g = gray[lo:lo + CHUNK, ..., None].astype(np.float32) / np.float32(255.0)
        bg = background[lo:lo + CHUNK].astype(np.float32)
        if bg.ndim == 3:
            bg = bg[..., None]
        mixed = np.rint(bg * (1.0 - g) + 255.0 * g).astype(np.uint8)
        out[lo:lo + CHUNK] = np.broadcast_to(mixed, g.shape[:3] + (3,)).transpose(0, 3, 1, 2)
    return out


def textured(gray: np.ndarray, b: np.ndarray, phase: str,
             rng: np.random.Generator) -> np.ndarray:
    """The white digits over their bias values' gratings, at phase 0 (``phase="fixed"``)
    or at one uniformly drawn phase per image (``"random"``)."""
    phase = rng.uniform(0.0, 2 * np.pi, len(b)) if phase == "random" else np.zeros(len(b))
    return np.concatenate([blend_digit(gratings(b[lo:lo + CHUNK], phase[lo:lo + CHUNK]),
                                       gray[lo:lo + CHUNK]) for lo in range(0, len(b), CHUNK)])


def _first_per_class(y: np.ndarray, per_class, what: str) -> np.ndarray:
    """Indices, in dataset order, of the first ``per_class`` digits of every class (None:
    all of them)."""
    if per_class is None:
        return np.arange(len(y))
    return np.sort(first_per_class(y, per_class, what, "shortcut_mnist"))


def _check(kind, train_per_class, test_per_class, bg_pool, phase) -> None:
    if kind not in KINDS:
        raise ConfigError(f"shortcut_mnist: kind={kind!r} is not a shortcut kind; choose one "
                          f"of {', '.join(KINDS)}")
    if phase not in PHASES:
        raise ConfigError(f"shortcut_mnist: phase={phase!r} is not a grating phase; choose "
                          f"one of {', '.join(PHASES)}")
    for key, value, low in (("train_per_class", train_per_class, 1),
                            ("test_per_class", test_per_class, 1), ("bg_pool", bg_pool, 0)):
        if value is None and key != "bg_pool":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"shortcut_mnist: {key}={value!r} must be an integer >= {low}"
                              + ("" if key == "bg_pool" else " (or null: every digit)"))
    if bg_pool > 5000:
        raise ConfigError(f"shortcut_mnist: bg_pool={bg_pool} is more than CIFAR-10's 5000 "
                          "training photographs per class")


def build(source: ImageSource, kind: str = "colour", conflict_ratio: float = 0.02,
          train_per_class: int | None = None, test_per_class: int | None = None,
          bg_pool: int = 10, phase: str = "fixed", seed: int = 0, data_dir=None,
          download: bool = False) -> DataBundle:
    """MNIST with a ``kind`` shortcut (colour, mark, texture, scene) for ``1 -
    conflict_ratio`` of the training digits and (about) independent of the class in the
    test set; ``bg_pool`` only matters for ``scene``, ``phase`` for ``texture``."""
    if source.name != "mnist":
        raise ConfigError(f"shortcut_mnist needs the mnist source, got {source.name}")
    _check(kind, train_per_class, test_per_class, bg_pool, phase)
    conflict_ratio = check_conflict_ratio(conflict_ratio, NUM_CLASSES)
    params = {"kind": kind, "conflict_ratio": conflict_ratio,
              "train_per_class": train_per_class, "test_per_class": test_per_class,
              "seed": seed}
    if kind == "texture":
        params["phase"] = phase
    if kind == "scene":
        params["bg_pool"] = bg_pool
        cifar = load_source("cifar10", data_dir, download=download)
        if bg_pool:
            rng_pool = np.random.default_rng([seed, 2])
            pool = np.concatenate([rng_pool.permutation(np.flatnonzero(cifar.y_train == k))
                                   [:bg_pool] for k in range(NUM_CLASSES)])
            photos = {"train": (resize_images(cifar.x_train[pool], SIDE), cifar.y_train[pool])}
            photos["test"] = photos["train"]
        else:
            photos = {split: (resize_images(part.x, SIDE), part.y) for split, part in
                      (("train", cifar.split("train")), ("test", cifar.split("test")))}

    def make(split: str, gray: np.ndarray, y: np.ndarray, aligned_ratio: float, stream: int):
        rng = np.random.default_rng([seed, stream])
        b = shuffled_assignment(y, aligned_ratio, NUM_CLASSES, rng)
        if kind == "colour":
            x = colorize_foreground(gray, b, COLOUR_SIGMA, rng)
        elif kind == "mark":
            x = grey_rgb(add_marks(gray, b))
        elif kind == "texture":
            x = textured(gray, b, phase, rng)
        else:
            x_bg, y_bg = photos[split]
            x = blend_digit(x_bg[_pick_backgrounds(b, y_bg, rng)], gray)
        return BiasedDataset(
            name=f"shortcut_mnist/{split}", x=torch.from_numpy(x),
            y=torch.from_numpy(y.astype(np.int64)), num_classes=NUM_CLASSES,
            b=torch.from_numpy(b), num_bias=NUM_CLASSES, mask=torch.from_numpy(gray > 0),
            aligned_bias=torch.arange(NUM_CLASSES), meta={"split": split, **params})

    pick = _first_per_class(source.y_train, train_per_class, "train")
    train = make("train", source.x_train[pick], source.y_train[pick], 1.0 - conflict_ratio, 0)
    pick = _first_per_class(source.y_test, test_per_class, "test")
    test = make("test", source.x_test[pick], source.y_test[pick], TEST_ALIGNED_RATIO, 1)
    return DataBundle(train=train, evals={"test": test}, protocol="shortcut_mnist",
                      params=params)
