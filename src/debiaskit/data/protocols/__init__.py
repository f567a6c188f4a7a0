"""Published biased-dataset protocols, one module each, behind one registry.

``build_data(name, data_dir=None, download=False, **params)`` loads the protocol's image
source and builds its :class:`~debiaskit.data.dataset.DataBundle`. Protocols of the LfF
kind take the bias amount as ``conflict_ratio`` (the fraction of bias-conflicting training
samples); the papers' own conventions are converted in the bench presets. CIFAR-10S keeps
its authors' ``skew`` (the share of a class in its dominant domain); BAR and ``folder``
have none.

A protocol whose source is None (``folder``) reads its own data and gets no source
argument. A builder that names ``data_dir`` or ``download`` among its parameters receives
them from ``build_data`` (e.g. to find the derived-dataset cache); they are not user
parameters.
"""

from __future__ import annotations

import inspect

from ...errors import ConfigError, unknown_name
from ..dataset import DataBundle
from ..sources import load_source
from . import (bar, bg_colored_mnist, bg_shift, cifar10s, colored_mnist, corrupted_cifar10, folder,
               layout_sets, one_pixel)

#: protocol name -> (image source, builder); source None: the builder reads its own data
PROTOCOLS = {
    "colored_mnist": ("mnist", colored_mnist.build),
    "bg_colored_mnist": ("mnist", bg_colored_mnist.build),
    "one_pixel_mnist": ("mnist", one_pixel.build),
    "one_pixel_cifar10": ("cifar10", one_pixel.build),
    "corrupted_cifar10": ("cifar10", corrupted_cifar10.build),
    "cifar10s": ("cifar10", cifar10s.build),
    "bar": ("bar", bar.build),
    "folder": (None, folder.build),
    "bg_shift": (None, bg_shift.build),
    "waterbirds": (None, layout_sets.waterbirds),
    "in9": (None, layout_sets.in9),
    "celeba": (None, layout_sets.celeba),
}

#: builder parameters that build_data fills in itself (never user parameters)
CONTEXT_PARAMS = ("data_dir", "download")


def protocol_params(name: str) -> dict:
    """The parameters a protocol takes, with their defaults."""
    if name not in PROTOCOLS:
        raise unknown_name("dataset", name, PROTOCOLS)
    source_name, builder = PROTOCOLS[name]
    items = list(inspect.signature(builder).parameters.items())
    if source_name is not None:
        items = items[1:]  # the image source
    return {k: p.default for k, p in items if k not in CONTEXT_PARAMS}


def build_data(name: str, data_dir=None, download: bool = False, **params) -> DataBundle:
    """Build protocol ``name`` with ``params`` (unknown parameters are an error)."""
    allowed = protocol_params(name)
    extra = set(params) - set(allowed)
    if extra:
        raise ConfigError(f"dataset {name} takes no parameter {', '.join(sorted(extra))}; "
                          f"it takes: {', '.join(allowed)}")
    source_name, builder = PROTOCOLS[name]
    wanted = inspect.signature(builder).parameters
    context = {k: v for k, v in (("data_dir", data_dir), ("download", download)) if k in wanted}
    if source_name is None:
        return builder(**context, **params)
    return builder(load_source(source_name, data_dir, download=download), **context, **params)
