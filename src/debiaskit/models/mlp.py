"""The 3-hidden-layer MLP of LfF / SiH / GBA on Colored MNIST (docs/models.md)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .interface import FeatureClassifier


class InputScaledLinear(nn.Linear):
    """``Linear(x * scale)``, computed as ``scale * (x @ W^T) + b`` in one GEMM (addmm's
    ``alpha``), so the scaling costs no extra pass over the (large) input batch."""

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__(in_features, out_features)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight.t(), alpha=self.scale)


class MLP(FeatureClassifier):
    """Flatten, 3 x (Linear(., hidden) + ReLU), then Linear(hidden, num_classes).

    On Colored MNIST: 2352-100-100-100-10. ``input_scale_quirk`` reproduces LfF's code,
    which divides the already [0, 1] inputs by 255 a second time (off by default, as SiH);
    the first layer folds that factor into its matrix product.
    ``feature_dim`` narrows the last hidden layer (DisEnt's Colored MNIST network,
    MLP_DISENTANGLE in the authors' code: 2352-100-100-16 per branch).
    ``forward_features(x)`` returns the last hidden layer (``num_features`` = its width),
    ``head`` is the final linear layer (:mod:`~debiaskit.models.interface`).
    """

    def __init__(self, input_shape, num_classes: int, hidden: int = 100, depth: int = 3,
                 input_scale_quirk: bool = False, feature_dim: int | None = None) -> None:
        super().__init__()
        if depth < 1 or hidden < 1 or (feature_dim is not None and feature_dim < 1):
            raise ValueError("depth, hidden and feature_dim must be >= 1")
        layers, width = [], math.prod(input_shape)
        for i in range(depth):
            out = feature_dim if feature_dim is not None and i == depth - 1 else hidden
            linear = (InputScaledLinear(width, out, 1.0 / 255.0)
                      if i == 0 and input_scale_quirk else nn.Linear(width, out))
            layers += [linear, nn.ReLU()]
            width = out
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, num_classes)
        self.num_features = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
