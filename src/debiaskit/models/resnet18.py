"""torchvision ResNet-18s with the feature interface (:mod:`debiaskit.models.interface`).

- ``resnet18`` -- SiH's network for 32 x 32 images, used for every method on Corrupted
  CIFAR-10 (SiH, Appendix B; docs/models.md): torchvision's ResNet-18 with a
  4 x 4 stride-2 stem and no max-pool, so the 512-d bottleneck sees a 4 x 4 map; then a
  linear head.
- ``resnet18_imagenet`` -- torchvision's ResNet-18 unchanged, for 224 x 224 images (BAR,
  LfF Table 6; CF/F): 7 x 7 stride-2 stem, max-pool, adaptive average pool, so any side
  >= 32 works. Random init by default; the papers fine-tune ImageNet-pretrained weights,
  which ``weights=PATH`` loads from a local torchvision ``resnet18`` state dict (never a
  download). ImageNet normalisation is applied inside the model when weights are given.

Both are :class:`torchvision.models.ResNet` subclasses with the classifier in ``fc``, so
their state-dict keys are torchvision's (plus ``mean``/``std`` buffers for the ImageNet one).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from ..errors import ConfigError
from .interface import FeatureClassifier

#: torchvision's ImageNet preprocessing constants.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionResNet18(FeatureClassifier, ResNet):
    """``torchvision.models.resnet18(weights=None, num_classes=...)`` (same modules, same
    initialisation, same state-dict keys) with the feature interface; ``fc`` is the head."""

    classifier_name = "fc"

    def __init__(self, num_classes: int) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.num_features = 512 * BasicBlock.expansion

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x  # no mean/std buffers: SiH's network and its checkpoints have none

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.normalise(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.maxpool(x)))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18_small_images(input_shape, num_classes: int) -> TorchvisionResNet18:
    """SiH's ResNet-18 (random init) for small images; ``fc`` is the head."""
    net = TorchvisionResNet18(num_classes)
    net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=4, stride=2, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class ImageNetResNet18(TorchvisionResNet18):
    """torchvision's ResNet-18 with per-channel normalisation of the [0, 1] input inside
    the model (``mean``/``std`` buffers; identity unless ``normalize``)."""

    def __init__(self, num_classes: int, normalize: bool = False) -> None:
        super().__init__(num_classes)
        self.register_normalisation(IMAGENET_MEAN if normalize else None,
                                    IMAGENET_STD if normalize else None, 3)

    normalise = FeatureClassifier.normalise


def _read_resnet18_state(path) -> dict:
    """The state dict in the local file ``path``, checked against torchvision's resnet18
    layout (keys and shapes; the discarded ``fc`` may have any number of classes, BN's
    ``num_batches_tracked`` may be absent)."""
    file = Path(str(path)).expanduser()
    hint = ("give weights=PATH of a local torchvision resnet18 state dict (.pth, e.g. "
            "~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth) or omit weights for "
            "random init")
    if not file.is_file():
        raise ConfigError(f"resnet18_imagenet: weights file {file} not found; {hint}")
    try:  # weights_only: tensors and plain containers, never arbitrary pickled code
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"resnet18_imagenet: {file} is not a state dict of tensors (a "
                          f"pickled model? save model.state_dict() instead); {hint}") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"resnet18_imagenet: cannot read {file} as a PyTorch state dict "
                          f"(truncated or not a torch.save file: {type(err).__name__}); "
                          f"{hint}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                               for v in state.values()):
        raise ConfigError(f"resnet18_imagenet: {file} holds a {type(state).__name__}, not a "
                          f"state dict of tensors (name -> tensor); {hint}")
    reference = {k: tuple(v.shape) for k, v in ResNet(BasicBlock, [2, 2, 2, 2])
                 .state_dict().items()}
    # BN's num_batches_tracked is optional: files saved before PyTorch 0.4.1 lack it.
    missing = sorted(k for k in set(reference) - set(state)
                     if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(reference))
    wrong = sorted(k for k in set(reference) & set(state)
                   if tuple(state[k].shape) != reference[k]
                   and not (k == "fc.weight" and state[k].ndim == 2
                            and state[k].shape[1] == reference[k][1])
                   and not (k == "fc.bias" and state[k].ndim == 1))
    problems = [f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} "
                f"({len(keys)})" for what, keys in (("missing keys", missing),
                                                    ("unexpected keys", unexpected),
                                                    ("wrong shapes", wrong)) if keys]
    if problems:
        raise ConfigError(f"resnet18_imagenet: {file} is not a torchvision resnet18 state "
                          f"dict ({'; '.join(problems)}); {hint}")
    return state


def resnet18_imagenet(input_shape, num_classes: int, weights=None,
                      normalize: bool | None = None) -> ImageNetResNet18:
    """torchvision's ResNet-18 for ``input_shape`` = (3, H, W), H, W >= 32 (224 in the
    papers); random init unless ``weights`` names a local torchvision resnet18 state
    dict (ImageNet-pretrained, as BAR / LfF Table 6 and CF/F use), whose every layer but
    ``fc`` is loaded, then ``fc`` is a fresh ``Linear(512, num_classes)``.
    ``normalize`` (default: on iff ``weights`` is given) applies ImageNet's mean/std to the
    [0, 1] input inside the model."""
    channels, *sides = input_shape
    if channels != 3 or len(sides) != 2:
        raise ConfigError(f"resnet18_imagenet needs 3-channel images, got shape "
                          f"{tuple(input_shape)}; use resnet18_cifar or mlp")
    if min(sides) < 32:
        raise ConfigError(f"resnet18_imagenet needs image sides >= 32 (224 in the papers), "
                          f"got {sides[0]} x {sides[1]}; use resnet18_cifar or mlp")
    state = None if weights is None else _read_resnet18_state(weights)
    net = ImageNetResNet18(1000, normalize=state is not None if normalize is None
                           else bool(normalize))
    if state is not None:
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")},
                            strict=False)
    net.reset_classifier(num_classes)
    return net
