"""The 3-hidden-layer MLP of LfF / SiH / GBA on Colored MNIST (PROTOCOLS.md, Architectures)."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, 3 x (Linear(., hidden) + ReLU), then Linear(hidden, num_classes).

    On Colored MNIST: 2352-100-100-100-10. ``input_scale_quirk`` reproduces LfF's code,
    which divides the already [0, 1] inputs by 255 a second time (off by default, as SiH).
    ``features(x)`` returns the last hidden layer, ``head`` is the final linear layer.
    """

    def __init__(self, input_shape, num_classes: int, hidden: int = 100, depth: int = 3,
                 input_scale_quirk: bool = False) -> None:
        super().__init__()
        layers, width = [], math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, num_classes)
        self.feature_dim = width
        self.input_scale = 1.0 / 255.0 if input_scale_quirk else 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
