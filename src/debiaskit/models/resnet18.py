"""ResNet-18 for 32 x 32 images as SiH uses it for every method on Corrupted CIFAR-10
(paper 001, Appendix B; PROTOCOLS.md, SiH): torchvision's ResNet-18 with a 4 x 4 stride-2
stem and no max-pool, so the 512-d bottleneck sees a 4 x 4 map; then a linear head."""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import resnet18


def resnet18_small_images(input_shape, num_classes: int) -> nn.Module:
    """torchvision ResNet-18 (random init) adapted to small images; ``fc`` is the head."""
    net = resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=4, stride=2, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net
