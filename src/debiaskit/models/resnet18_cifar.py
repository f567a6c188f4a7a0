"""The CIFAR ResNet-18 of Wang et al.'s CIFAR-10S baseline (docs/models.md).

The widely used "kuangliu" layout for 32 x 32 images: 3 x 3 stride-1 stem convolution to
64 channels + BN + ReLU and no max-pool; four stages of two basic blocks (64, 128, 256,
512 channels, stride 2 in the first block of stages 2-4) with projection shortcuts
(1 x 1 convolution + BN) where the shape changes; average pool over the final map (4 x 4
for 32 x 32 inputs; adaptive, so larger inputs work too); 512-d features;
``Linear(512, num_classes)``. 11,173,962 parameters for 10 classes. PyTorch's default
initialisation, as that code uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .interface import FeatureClassifier
from .resnet_cifar import BasicBlock


class ResNet18Cifar(FeatureClassifier):
    """CIFAR ResNet-18; ``mean``/``std`` (per channel, default identity) normalise the
    [0, 1] input inside the model, so every caller feeds the same [0, 1] images (the
    CIFAR-10S baseline normalises with the training array's own mean and std).
    ``forward_features`` gives the 512-d pooled features, ``head`` is the final layer."""

    def __init__(self, input_shape, num_classes: int, mean=None, std=None) -> None:
        super().__init__()
        cin = input_shape[0]
        self.register_normalisation(mean, std, cin)
        self.conv1 = nn.Conv2d(cin, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        width, stages = 64, []
        for i, cout in enumerate((64, 128, 256, 512)):
            stage = []
            for j in range(2):
                stage.append(BasicBlock(width, cout, 2 if (i > 0 and j == 0) else 1,
                                        projection=True))
                width = cout
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = 512
        self.head = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(self.normalise(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # the mean over the whole final map, summed as avg_pool2d with the map as kernel
        # sums it (the authors' CIFAR-10S ResNet-18; adaptive_avg_pool2d rounds otherwise)
        return F.avg_pool2d(x, tuple(x.shape[-2:])).flatten(1)
