"""Network architectures behind one registry: ``build_model(name, input_shape, classes)``."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from .interface import FeatureClassifier
from .mlp import MLP
from .resnet18 import TorchvisionResNet18, resnet18_imagenet, resnet18_small_images
from .resnet18_cifar import ResNet18Cifar
from .resnet_cifar import ResNetCifar

#: Every network by name: ``constructor(input_shape, num_classes, **options)``. Every
#: network has the feature interface of :mod:`.interface` (``forward_features``,
#: ``forward_head``, ``num_features``; aliases ``features`` and ``feature_dim``).
MODELS = Registry("model")
MODELS.register("mlp", MLP)
MODELS.register("resnet20", lambda input_shape, num_classes, **kw: ResNetCifar(
    input_shape, num_classes, blocks=3, **kw))
MODELS.register("resnet18", resnet18_small_images)
MODELS.register("resnet18_cifar", ResNet18Cifar)
MODELS.register("resnet18_imagenet", resnet18_imagenet)


def build_model(name: str, input_shape, num_classes: int, **options):
    """A fresh, randomly initialised network ``name`` for ``input_shape`` images."""
    build = MODELS.find(name)
    try:
        return build(input_shape, num_classes, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {name}: bad option ({err})") from None


@dataclass(frozen=True)
class NetworkFactory:
    """What a method gets to build its networks: the named architecture for the data.

    Calling it returns a fresh classifier; methods that need other networks of the same
    family (SiH's VAE) read ``name`` and ``input_shape``.
    """

    name: str
    input_shape: tuple
    num_classes: int
    options: dict = field(default_factory=dict)

    def __call__(self):
        return build_model(self.name, self.input_shape, self.num_classes, **self.options)


class _Features(nn.Module):
    """A classifier without its final linear layer (its ``forward_features`` as a module)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


def feature_extractor(net: nn.Module) -> tuple[nn.Module, int]:
    """``(encoder, num_features)``: ``net`` up to its pooled features, for methods that
    put their own heads on the features (DisEnt). Works for every model of this registry
    (and any module with ``forward_features`` and ``num_features``, as timm's have).

    The net's classifier is replaced by ``nn.Identity`` (unused). The torchvision-based
    ResNets are returned themselves (their ``forward`` then gives the features), the other
    networks wrapped, which keeps the state-dict keys of earlier DisEnt checkpoints."""
    if hasattr(net, "forward_features") and hasattr(net, "num_features"):
        dim = int(net.num_features)
        if isinstance(net, FeatureClassifier):
            net.reset_classifier(0)
            if isinstance(net, TorchvisionResNet18):
                return net, dim
        return _Features(net), dim
    if isinstance(getattr(net, "fc", None), nn.Linear):  # a plain torchvision ResNet
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim
    raise ConfigError(f"{type(net).__name__} does not expose features; DisEnt needs a model "
                      f"from: {', '.join(MODELS)}")
