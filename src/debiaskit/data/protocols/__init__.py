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

from dataclasses import dataclass
from typing import Callable

from ...errors import ConfigError
from ...registry import Registry
from ..dataset import DataBundle
from ..sources import load_source
from . import (bar, bg_colored_mnist, bg_shift, cifar10s, colored_mnist, corrupted_cifar10, folder,
               layout_sets, one_pixel, shortcut_mnist)


@dataclass(frozen=True)
class Protocol:
    """A dataset protocol: the image ``source`` it reads (None: it reads its own files),
    its ``build`` function, the user ``params`` it declares (the names ``build`` takes as
    keyword arguments; their defaults are ``build``'s), and the ``context`` arguments
    ``build_data`` passes it itself (``data_dir``, ``download``: where its files or
    derived-dataset cache are; never user parameters)."""

    source: str | None
    build: Callable[..., DataBundle]
    params: tuple[str, ...]
    context: tuple[str, ...] = ()


#: builder parameters that build_data fills in itself (never user parameters)
CONTEXT_PARAMS = ("data_dir", "download")

#: Every dataset protocol by name.
PROTOCOLS = Registry("dataset")
PROTOCOLS.register("colored_mnist", Protocol(
    "mnist", colored_mnist.build, ("conflict_ratio", "severity", "sigma", "seed", "conditioned")))
PROTOCOLS.register("bg_colored_mnist", Protocol(
    "mnist", bg_colored_mnist.build, ("conflict_ratio", "seed")))
PROTOCOLS.register("one_pixel_mnist", Protocol("mnist", one_pixel.build, ("value", "seed")))
PROTOCOLS.register("one_pixel_cifar10", Protocol("cifar10", one_pixel.build, ("value", "seed")))
PROTOCOLS.register("corrupted_cifar10", Protocol(
    "cifar10", corrupted_cifar10.build,
    ("conflict_ratio", "type", "severity", "seed", "test_set", "conditioned", "image_size"),
    ("data_dir",)))
PROTOCOLS.register("cifar10s", Protocol(
    "cifar10", cifar10s.build, ("skew", "test_set", "seed", "image_size")))
PROTOCOLS.register("bar", Protocol("bar", bar.build, ("image_size", "seed"), ("data_dir",)))
PROTOCOLS.register("folder", Protocol(
    None, folder.build, ("path", "csv", "image_size", "bias", "train_split", "eval_splits")))
PROTOCOLS.register("bg_shift", Protocol(
    None, bg_shift.build, ("conflict_ratio", "train_per_class", "test_per_class", "fg_min",
                           "fg_max", "image_size", "fg_opacity", "bg_pool", "seed"),
    ("data_dir", "download")))
PROTOCOLS.register("shortcut_mnist", Protocol(
    "mnist", shortcut_mnist.build, ("kind", "conflict_ratio", "train_per_class",
                                    "test_per_class", "bg_pool", "phase", "seed"),
    ("data_dir", "download")))
PROTOCOLS.register("waterbirds", Protocol(
    None, layout_sets.waterbirds, ("image_size",), ("data_dir",)))
PROTOCOLS.register("in9", Protocol(None, layout_sets.in9, ("image_size",), ("data_dir",)))
PROTOCOLS.register("celeba", Protocol(
    None, layout_sets.celeba, ("target", "bias", "image_size"), ("data_dir",)))


def protocol_params(name: str) -> tuple[str, ...]:
    """The user parameters protocol ``name`` declares."""
    return PROTOCOLS.find(name).params


def build_data(name: str, data_dir=None, download: bool = False, **params) -> DataBundle:
    """Build protocol ``name`` with ``params`` (unknown parameters are an error)."""
    protocol = PROTOCOLS.find(name)
    extra = set(params) - set(protocol.params)
    if extra:
        raise ConfigError(f"dataset {name} takes no parameter {', '.join(sorted(extra))}; "
                          f"it takes: {', '.join(protocol.params)}")
    context = {k: v for k, v in (("data_dir", data_dir), ("download", download))
               if k in protocol.context}
    if protocol.source is None:
        return protocol.build(**context, **params)
    return protocol.build(load_source(protocol.source, data_dir, download=download), **context,
                          **params)
