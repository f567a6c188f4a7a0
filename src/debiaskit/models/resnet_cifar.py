"""ResNet-20 for 32 x 32 images with option-A shortcuts (He et al. 2016, Sec. 4.2).

16/32/64 channels, 3 basic blocks per stage, parameter-free shortcuts (stride-2
subsampling plus zero channel padding), Kaiming-normal init, global average pooling,
Linear(64, num_classes) (docs/models.md). LfF's CIFAR model and LAD's f_strong.

``norm``: ``batch`` (default, He et al.'s) or ``group``: GroupNorm with ``GROUPS`` groups
(Wu & He 2018) in place of every BatchNorm, so that no statistic is shared between the
images of a batch (CF/F's authors train a GroupNorm network; with batch norm, originals
and their counterfactual / factual copies in one batch would normalise each other).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .interface import FeatureClassifier

NORMS = ("batch", "group")
#: GroupNorm's groups: divides ResNet-20's 16, 32 and 64 channels into groups of 2-8
GROUPS = 8


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm2d or GroupNorm(GROUPS) over ``channels`` channels."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(GROUPS, channels)
    raise ConfigError(f"norm {kind!r} is not known; use one of {', '.join(NORMS)}")


class _ShortcutA(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with BN and a shortcut: identity when shape is kept, else
    option A (``projection=False``: subsample and zero-pad, ResNet-20) or a 1 x 1
    convolution + BN (``projection=True``: the CIFAR ResNet-18)."""

    def __init__(self, cin: int, cout: int, stride: int, projection: bool = False,
                 norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm, cout)
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        elif projection:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        else:
            self.shortcut = _ShortcutA(stride, cout - cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(FeatureClassifier):
    """ResNet-(6n+2) for CIFAR; ``blocks=3`` is ResNet-20.

    ``mean``/``std`` (per channel) normalise the [0, 1] input inside the model, so every
    caller feeds the same [0, 1] images. ``forward_features`` gives the 64-d pooled
    features, ``head`` is the final linear layer (:mod:`~debiaskit.models.interface`).
    """

    def __init__(self, input_shape, num_classes: int, blocks: int = 3, mean=None,
                 std=None, norm: str = "batch") -> None:
        super().__init__()
        cin = input_shape[0]
        self.register_normalisation(mean, std, cin)
        self.conv = nn.Conv2d(cin, 16, 3, 1, 1, bias=False)
        self.bn = norm_layer(norm, 16)
        stages, width = [], 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(blocks):
                stages.append(BasicBlock(width, cout, 2 if (i > 0 and j == 0) else 1,
                                         norm=norm))
                width = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(64, num_classes)
        self.num_features = 64
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        x = self.stages(F.relu(self.bn(self.conv(x))))
        # the mean over the whole final map as LfF's ResNet-20 takes it (avg_pool2d with
        # the map as kernel): the same value as adaptive_avg_pool2d(x, 1), bit for bit the
        # authors' arithmetic (tests/parity lff-cc10, where rounding differences grow)
        return F.avg_pool2d(x, tuple(x.shape[-2:])).flatten(1)
