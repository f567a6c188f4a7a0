"""Published biased-dataset protocols, one module each, behind one registry.

``build_data(name, data_dir=None, download=False, **params)`` loads the protocol's image
source and builds its :class:`~debiaskit.data.dataset.DataBundle`. Protocols of the LfF
kind take the bias amount as ``conflict_ratio`` (the fraction of bias-conflicting training
samples); the papers' own conventions are converted in the bench presets. CIFAR-10S keeps
its authors' ``skew`` (the share of a class in its dominant domain); BAR and ``folder``
have none.

Each is a :class:`Protocol` in the :data:`PROTOCOLS` registry: a protocol whose source is
None (``folder``) reads its own data and gets no source argument; the ``context`` it
declares (``data_dir``, ``download``) it receives from ``build_data`` (e.g. to find the
derived-dataset cache); they are not user parameters.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ...errors import ConfigError
from ...registry import Registry
from ..dataset import DataBundle
from ..sources import load_source
from . import (bar, bg_colored_mnist, bg_shift, cifar10s, colored_mnist, corrupted_cifar10, folder,
               layout_sets, one_pixel)

@dataclass(frozen=True)
class Protocol:
    """A dataset protocol: the image ``source`` it reads (None: it reads its own files),
    its ``build`` function, and the ``context`` arguments ``build_data`` passes it itself
    (``data_dir``, ``download``: where its files or derived-dataset cache are; never user
    parameters). The user's parameters are ``build``'s other keyword arguments, with their
    defaults (:attr:`params`)."""

    source: str | None
    build: Callable[..., DataBundle]
    context: tuple[str, ...] = ()

    @property
    def params(self) -> dict:
        """The parameters the protocol takes, with their defaults."""
        items = list(inspect.signature(self.build).parameters.items())
        if self.source is not None:
            items = items[1:]  # the image source
        return {k: p.default for k, p in items if k not in CONTEXT_PARAMS}


#: builder parameters that build_data fills in itself (never user parameters)
CONTEXT_PARAMS = ("data_dir", "download")

#: Every dataset protocol by name.
PROTOCOLS = Registry("dataset")
PROTOCOLS.register("colored_mnist", Protocol("mnist", colored_mnist.build))
PROTOCOLS.register("bg_colored_mnist", Protocol("mnist", bg_colored_mnist.build))
PROTOCOLS.register("one_pixel_mnist", Protocol("mnist", one_pixel.build))
PROTOCOLS.register("one_pixel_cifar10", Protocol("cifar10", one_pixel.build))
PROTOCOLS.register("corrupted_cifar10", Protocol("cifar10", corrupted_cifar10.build,
                                                 ("data_dir",)))
PROTOCOLS.register("cifar10s", Protocol("cifar10", cifar10s.build))
PROTOCOLS.register("bar", Protocol("bar", bar.build, ("data_dir",)))
PROTOCOLS.register("folder", Protocol(None, folder.build))
PROTOCOLS.register("bg_shift", Protocol(None, bg_shift.build, ("data_dir", "download")))
PROTOCOLS.register("waterbirds", Protocol(None, layout_sets.waterbirds, ("data_dir",)))
PROTOCOLS.register("in9", Protocol(None, layout_sets.in9, ("data_dir",)))
PROTOCOLS.register("celeba", Protocol(None, layout_sets.celeba, ("data_dir",)))


def protocol_params(name: str) -> dict:
    """The parameters protocol ``name`` takes, with their defaults."""
    return PROTOCOLS.find(name).params


def build_data(name: str, data_dir=None, download: bool = False, **params) -> DataBundle:
    """Build protocol ``name`` with ``params`` (unknown parameters are an error)."""
    allowed = protocol_params(name)
    extra = set(params) - set(allowed)
    if extra:
        raise ConfigError(f"dataset {name} takes no parameter {', '.join(sorted(extra))}; "
                          f"it takes: {', '.join(allowed)}")
    protocol = PROTOCOLS.find(name)
    context = {k: v for k, v in (("data_dir", data_dir), ("download", download))
               if k in protocol.context}
    if protocol.source is None:
        return protocol.build(**context, **params)
    return protocol.build(load_source(protocol.source, data_dir, download=download), **context,
                          **params)
