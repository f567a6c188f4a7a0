"""Reading a digit's stroke back from an image: does a generated image keep the digit?

LAD's walk must leave "the digit shape almost entirely unchanged" (LAD, Sec. 5.2).
For the coloured MNIST datasets the stroke can be read from any image of them, original or
decoded, by a colour rule (:data:`STROKE_RULES`), and compared with the dataset's foreground
mask (the grey digit's non-zero pixels) by intersection over union (:func:`mask_iou`). LAD's
walk-length rule (:mod:`debiaskit.methods.lad.rule`) and the walk diagnostic
(:mod:`debiaskit.explain.walk_diagnostic`) both measure a walk this way.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

#: How to read the digit's stroke from an image in [0, 1] (N x C x H x W -> N x H x W),
#: per dataset: background-coloured MNIST draws a white digit on a coloured background
#: (every background colour has a channel of at most 128/255, so the stroke is where all
#: channels are bright); foreground-coloured MNIST a coloured digit on black.
STROKE_RULES = {
    "bg_colored_mnist": lambda x: x.min(1).values >= 0.75,
    "colored_mnist": lambda x: x.max(1).values >= 0.5,
}


def dataset_family(name: str) -> str:
    """A dataset split's family name: ``"bg_colored_mnist/train"`` -> ``"bg_colored_mnist"``."""
    return name.split("/")[0]


def stroke_rule(dataset: str, what: str = "the walk diagnostic",
                remedy: str = "use one of those"):
    """The stroke reader of ``dataset`` (a name or a split's name; :data:`STROKE_RULES`);
    otherwise a ConfigError saying that ``what`` cannot read it, and the ``remedy``."""
    family = dataset_family(dataset)
    if family not in STROKE_RULES:
        raise ConfigError(f"{what} reads digit strokes of {', '.join(STROKE_RULES)} only, not "
                          f"{family}; {remedy}")
    return STROKE_RULES[family]


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image intersection over union of boolean masks N x H x W (1 when both empty)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
