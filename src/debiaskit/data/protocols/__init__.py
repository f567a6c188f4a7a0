"""Published biased-dataset protocols, one module each, behind one registry.

``build_data(name, data_dir=None, download=False, **params)`` loads the protocol's image
source and builds its :class:`~debiaskit.data.dataset.DataBundle`. Every protocol takes
the bias amount as ``conflict_ratio`` (the fraction of bias-conflicting training samples);
the papers' own conventions are converted in the bench presets.
"""

from __future__ import annotations

import inspect

from ...errors import ConfigError, unknown_name
from ..dataset import DataBundle
from ..sources import load_source
from . import bg_colored_mnist, colored_mnist, one_pixel

#: protocol name -> (image source, builder)
PROTOCOLS = {
    "colored_mnist": ("mnist", colored_mnist.build),
    "bg_colored_mnist": ("mnist", bg_colored_mnist.build),
    "one_pixel_mnist": ("mnist", one_pixel.build),
    "one_pixel_cifar10": ("cifar10", one_pixel.build),
}


def protocol_params(name: str) -> dict:
    """The parameters a protocol takes, with their defaults."""
    if name not in PROTOCOLS:
        raise unknown_name("dataset", name, PROTOCOLS)
    sig = inspect.signature(PROTOCOLS[name][1])
    return {k: p.default for k, p in list(sig.parameters.items())[1:]}


def build_data(name: str, data_dir=None, download: bool = False, **params) -> DataBundle:
    """Build protocol ``name`` with ``params`` (unknown parameters are an error)."""
    allowed = protocol_params(name)
    extra = set(params) - set(allowed)
    if extra:
        raise ConfigError(f"dataset {name} takes no parameter {', '.join(sorted(extra))}; "
                          f"it takes: {', '.join(allowed)}")
    source_name, builder = PROTOCOLS[name]
    return builder(load_source(source_name, data_dir, download=download), **params)
