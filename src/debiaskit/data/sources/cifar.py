"""CIFAR-10 in its standard on-disk format: the python pickles in ``cifar-10-batches-py/``."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np

from ...errors import DataError
from ..image_source import ImageSource, two_split_source
from .files import arrays_sha256, check_labels, one_line

CIFAR_DIRNAME = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_TARBALL = "cifar-10-python.tar.gz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def _numpy_reconstruct_globals() -> dict:
    """The few numpy callables a pickled ndarray needs, under both numpy 1 and 2 module names."""
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    import codecs

    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = scalar
    return table


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers and numpy arrays (never runs other code)."""

    _allowed = _numpy_reconstruct_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_cifar_batch(path):
    """Read one CIFAR-10 python batch (a pickled dict with ``b"data"``: (N, 3072) uint8 rows
    of 1024 red, 1024 green, then 1024 blue bytes, and ``b"labels"``: N ints).

    Returns (images (N, 32, 32, 3) uint8 in RGB channel order, labels (N,) int64). The
    pickle is read with a restricted unpickler that accepts only numpy arrays and builtins.
    """
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({one_line(exc)}); re-copy the file") from None
    except Exception as exc:  # truncated or foreign pickles
        raise DataError(
            f"{path} is not a readable CIFAR-10 python batch ({one_line(exc)}); re-copy the file"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, expected a CIFAR-10 batch dict; re-copy the file")

    def get(key):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
        raise DataError(f"{path} has no {key!r} entry; it is not a CIFAR-10 python batch: re-copy it")

    try:
        data = np.asarray(get("data"))
        labels = np.asarray(get("labels"))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} holds malformed data ({one_line(exc)}); re-copy the file") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: data has dtype {data.dtype} and shape {data.shape}, expected uint8 (N, 3072); re-copy the file"
        )
    labels = check_labels(labels, str(path), "labels")
    if len(labels) != len(data):
        raise DataError(f"{path} has {len(data)} images but {len(labels)} labels; re-copy the file")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def find_cifar_set(directory: pathlib.Path):
    """Locate data_batch_1..5 and test_batch in ``directory``: ({name: path}, [missing names])."""
    found, missing = {}, []
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        if (directory / name).is_file():
            found[name] = directory / name
        else:
            missing.append(name)
    return found, missing


def read_cifar_pickles(files: dict, origin: str) -> ImageSource:
    """Read the five training batches (in order) and the test batch into one source."""
    train = [read_cifar_batch(files[name]) for name in CIFAR_TRAIN_BATCHES]
    x_test, y_test = read_cifar_batch(files[CIFAR_TEST_BATCH])
    arrays = {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }
    return two_split_source("cifar10", arrays, origin, arrays_sha256(arrays), CLASSES)

