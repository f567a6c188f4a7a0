"""Network architectures behind one registry: ``build_model(name, input_shape, classes)``."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import ConfigError, unknown_name
from .mlp import MLP
from .resnet18 import resnet18_small_images
from .resnet_cifar import ResNetCifar

MODELS = {
    "mlp": MLP,
    "resnet20": lambda input_shape, num_classes, **kw: ResNetCifar(input_shape, num_classes,
                                                                   blocks=3, **kw),
    "resnet18": resnet18_small_images,
}


def build_model(name: str, input_shape, num_classes: int, **options):
    """A fresh, randomly initialised network ``name`` for ``input_shape`` images."""
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    try:
        return MODELS[name](input_shape, num_classes, **options)
    except TypeError as err:
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
    """A classifier without its final linear layer (its ``features`` method as a module)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


def feature_extractor(net: nn.Module) -> tuple[nn.Module, int]:
    """``(encoder, feature_dim)``: ``net`` up to its last hidden layer, for methods that put
    their own heads on the features (DisEnt). Works for the models of this registry."""
    if hasattr(net, "features") and hasattr(net, "feature_dim"):
        net.head = nn.Identity()  # unused: the method brings its own heads
        return _Features(net), net.feature_dim
    if isinstance(getattr(net, "fc", None), nn.Linear):  # torchvision ResNets
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim
    raise ConfigError(f"{type(net).__name__} does not expose features; DisEnt needs a model "
                      f"from: {', '.join(MODELS)}")
