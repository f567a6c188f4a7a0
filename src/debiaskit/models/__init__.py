"""Network architectures behind one registry: ``build_model(name, input_shape, classes)``."""

from __future__ import annotations

from ..errors import ConfigError, unknown_name
from .mlp import MLP
from .resnet_cifar import ResNetCifar

MODELS = {
    "mlp": MLP,
    "resnet20": lambda input_shape, num_classes, **kw: ResNetCifar(input_shape, num_classes,
                                                                   blocks=3, **kw),
}


def build_model(name: str, input_shape, num_classes: int, **options):
    """A fresh, randomly initialised network ``name`` for ``input_shape`` images."""
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    try:
        return MODELS[name](input_shape, num_classes, **options)
    except TypeError as err:
        raise ConfigError(f"model {name}: bad option ({err})") from None
