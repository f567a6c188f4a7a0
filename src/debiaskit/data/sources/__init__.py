"""Raw image sources: read images, labels and attributes from a data directory.

One module per concern: :mod:`.files` (checksummed files, verified npz archives),
:mod:`.mnist` (idx files), :mod:`.cifar` (CIFAR-10 python pickles), :mod:`.download`
(torchvision downloads), :mod:`.folder` (a folder of images plus a CSV: how users bring
their own data), :mod:`.bar` (Biased Action Recognition). Every reader returns an
:class:`~debiaskit.data.image_source.ImageSource` with named splits; none knows about bias
protocols (:mod:`debiaskit.data.protocols` builds biased datasets on top).

The data directory is chosen by :func:`resolve_data_dir` (explicit argument, else the
``DEBIASKIT_DATA`` environment variable, else ``~/.cache/debiaskit``). Inside it, MNIST and
CIFAR-10 are looked up in this order, and the first hit wins:

1. a numpy archive (``mnist.npz`` / ``cifar10.npz``), whose sha256 is verified against the
   ``SHA256SUMS`` file next to it when that file lists it, else against built-in values;
2. the standard formats users already have: MNIST idx files (plain or ``.gz``, directly in
   the directory or in torchvision's ``MNIST/raw/``), and the CIFAR-10 python pickles in
   ``cifar-10-batches-py/``;
3. with ``download=True`` only: a download through torchvision, which writes the standard
   formats of step 2, then read with the same readers.

BAR is read from ``bar_64.npz`` or from the ``BAR/`` folder layout of its authors.
Every failure caused by missing, truncated or altered files is a one-line
:class:`~debiaskit.errors.DataError` that names the file and says what to do.
"""

from __future__ import annotations

import functools
import os
import pathlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import DataError
from ...registry import Registry
from ..image_source import ImageSource, Split
from . import bar, cifar, mnist
from .cifar import read_cifar_batch
from .download import torchvision_download
from .files import NPZ_SHA256, arrays_sha256, load_npz, sha256_file
from .folder import load_folder
from .mnist import read_idx

__all__ = [
    "ImageSource", "Split", "SOURCES", "NPZ_SHA256", "resolve_data_dir", "load_source",
    "load_folder", "sha256_file", "read_idx", "read_cifar_batch",
]

ENV_VAR = "DEBIASKIT_DATA"
DEFAULT_DATA_DIR = pathlib.Path("~/.cache/debiaskit")
_arrays_sha256 = arrays_sha256  # the name tests and older callers use


@dataclass(frozen=True)
class _Layout:
    """Where and how a two-split source is stored: its npz archive, its standard on-disk
    format (the folders to look in, how to find and read the files) and its torchvision
    class."""

    name: str
    label: str
    files: str
    npz: str
    image_shape: tuple
    npz_extras: dict
    classes: tuple
    folders: Callable[[pathlib.Path], tuple]
    find: Callable[[pathlib.Path], tuple]
    read: Callable[[dict, str], ImageSource]
    origin: str
    torchvision_class: str
    download_folder: Callable[[pathlib.Path], pathlib.Path]
    expected: str
    extra_hint: Callable[[pathlib.Path], str] = lambda root: ""

    def __call__(self, root: pathlib.Path, download: bool) -> ImageSource:
        """The source from ``root``: the npz archive, else the standard files in one of the
        layout's folders, else (``download``) torchvision's download read the same way."""
        npz = root / self.npz
        if npz.is_file():
            return load_npz(npz, self.name, self.image_shape, self.npz_extras, self.classes)
        partial = None
        for directory in self.folders(root):
            found, missing = self.find(directory)
            if not missing:
                return self.read(found, f"{self.origin}:{directory}")
            if found and partial is None:
                partial = (directory, missing)
        if download:
            torchvision_download(self.label, self.torchvision_class, root)
            folder = self.download_folder(root)
            found, missing = self.find(folder)
            if missing:
                raise DataError(
                    f"the {self.label} download into {root} finished but {folder} lacks "
                    f"{', '.join(missing)}; copy {self.npz} or the standard files into {root} instead"
                )
            return self.read(found, f"torchvision-download:{folder}")
        if partial is not None:
            directory, missing = partial
            raise DataError(
                f"incomplete {self.label} {self.files} in {directory}: missing {', '.join(missing)}; "
                f"copy them there or pass --download"
            )
        raise DataError(
            f"no {self.label} in {root}: expected {self.npz} or {self.expected}; copy them "
            f"there or pass --download{self.extra_hint(root)}"
        )


def _cifar_tarball_hint(root: pathlib.Path) -> str:
    if (root / cifar.CIFAR_TARBALL).is_file():
        return (f" ({cifar.CIFAR_TARBALL} is there but not extracted: run tar xzf on it, "
                "or pass --download)")
    return ""


_MNIST = _Layout(
    name="mnist", label="MNIST", files="idx files", npz="mnist.npz", image_shape=(28, 28),
    npz_extras={}, classes=mnist.CLASSES,
    folders=lambda root: (root, root / "MNIST" / "raw"), find=mnist.find_idx_set,
    read=mnist.read_mnist_idx, origin="idx", torchvision_class="MNIST",
    download_folder=lambda root: root / "MNIST" / "raw",
    expected="the four idx files (train-images-idx3-ubyte etc., plain or .gz) in it or in MNIST/raw/",
)
_CIFAR10 = _Layout(
    name="cifar10", label="CIFAR-10", files="batches", npz="cifar10.npz", image_shape=(32, 32, 3),
    npz_extras={"test_lossless": np.bool_}, classes=cifar.CLASSES,
    folders=lambda root: (root / cifar.CIFAR_DIRNAME, root), find=cifar.find_cifar_set,
    read=cifar.read_cifar_pickles, origin="cifar-pickle", torchvision_class="CIFAR10",
    download_folder=lambda root: root / cifar.CIFAR_DIRNAME,
    expected=f"{cifar.CIFAR_DIRNAME}/ with data_batch_1..5 and test_batch",
    extra_hint=_cifar_tarball_hint,
)

#: Raw image sources in the data directory, by name: loader ``(root, download)``.
SOURCES = Registry("data source")
SOURCES.register("mnist", _MNIST)
SOURCES.register("cifar10", _CIFAR10)
SOURCES.register("bar", bar.load)


def resolve_data_dir(data_dir=None, download: bool = False) -> pathlib.Path:
    """Choose the data directory: ``data_dir`` if given, else the ``DEBIASKIT_DATA``
    environment variable (when set and non-empty), else ``~/.cache/debiaskit``.

    Returns the absolute path. Nothing is read or created here; when the directory does not
    exist and ``download`` is false, raise :class:`DataError` saying how to point at the data.
    """
    if data_dir is not None and str(data_dir) != "":
        chosen, how = pathlib.Path(data_dir), "given"
    elif os.environ.get(ENV_VAR):
        chosen, how = pathlib.Path(os.environ[ENV_VAR]), f"from {ENV_VAR}"
    else:
        chosen, how = DEFAULT_DATA_DIR, "the default"
    path = chosen.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise DataError(f"data directory {path} ({how}) is not a directory; pass --data-dir or set {ENV_VAR} to a folder")
    if not path.exists() and not download:
        raise DataError(
            f"data directory {path} ({how}) does not exist; pass --data-dir or set {ENV_VAR} to the folder "
            f"holding mnist.npz and cifar10.npz (or the idx / CIFAR pickle files), or pass --download"
        )
    return path


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str, download: bool) -> ImageSource:
    return SOURCES[name](pathlib.Path(root), download)


def load_source(name: str, data_dir=None, download: bool = False) -> ImageSource:
    """Load the raw source ``name`` (``mnist``, ``cifar10``, ``bar``) from the data
    directory (see :func:`resolve_data_dir`). MNIST and CIFAR-10 read the first of: the npz
    archive (sha256-verified), the standard idx / CIFAR pickle files, or, with
    ``download=True``, a torchvision download; BAR reads ``bar_64.npz`` or ``BAR/``.
    Results are cached in-process per (name, directory, download); arrays are read-only.
    ``load_source.cache_clear()`` empties the cache.
    """
    SOURCES.find(str(name))
    root = resolve_data_dir(data_dir, download=download)
    return _load_cached(name, str(root), bool(download))


load_source.cache_clear = _load_cached.cache_clear
load_source.cache_info = _load_cached.cache_info
