"""The frost textures used by the ``frost`` corruption.

The five photographs frost1.png, frost2.png, frost3.png, frost4.jpg and frost5.jpg come
with Hendrycks' robustness repository, LfF's ``data/resource/`` and the ``imagecorruptions``
package (byte-identical copies). They are third-party images and are not part of this
repository: each file is looked up, first hit wins, in

1. the folder named by the ``DEBIASKIT_FROST`` environment variable, if set;
2. ``<data dir>/frost/``, the data directory being
   :func:`debiaskit.data.sources.resolve_data_dir` (``DEBIASKIT_DATA``);
3. the ``frost/`` folder of an installed ``imagecorruptions`` package, located without
   importing it (the package itself does not import on NumPy 2).

Every file's sha256 is checked against the known copies. Decoded textures are cached for
the life of the process (keyed by path, size and modification time).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib

import cv2
import numpy as np

from debiaskit.errors import DataError

__all__ = ["FROST_FILES", "FROST_SHA256", "FROST_ENV_VAR", "frost_textures", "frost_dirs",
           "resized_frost_textures"]

FROST_ENV_VAR = "DEBIASKIT_FROST"

#: sha256 of the frost files (identical in hendrycks/robustness, LfF and imagecorruptions).
FROST_SHA256 = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
}
#: The files ``randint(5)`` chooses from, in index order (frost6.jpg is never chosen).
FROST_FILES = tuple(FROST_SHA256)


def frost_dirs() -> list[pathlib.Path]:
    """The folders searched for the frost files, in order (see the module docstring)."""
    dirs = []
    env = os.environ.get(FROST_ENV_VAR)
    if env:
        dirs.append(pathlib.Path(env).expanduser())
    try:
        from debiaskit.data.sources import resolve_data_dir
        dirs.append(resolve_data_dir() / "frost")
    except DataError:
        pass  # no data directory: the other places may still hold the files
    try:
        spec = importlib.util.find_spec("imagecorruptions")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            dirs.append(pathlib.Path(loc) / "frost")
    return dirs


def _hint() -> str:
    return ("`pip install --no-deps imagecorruptions`, or copy frost1.png, frost2.png, "
            "frost3.png, frost4.jpg and frost5.jpg into <data dir>/frost/ (or the folder "
            f"named by {FROST_ENV_VAR})")


def _locate(name: str, dirs) -> pathlib.Path:
    for folder in dirs:
        path = folder / name
        if path.is_file():
            return path
    searched = ", ".join(str(d) for d in dirs) or "nowhere (no data directory)"
    raise DataError(f"frost texture {name} not found (searched {searched}); {_hint()}")


@functools.lru_cache(maxsize=32)
def _decode(path_str: str, size: int, mtime_ns: int) -> np.ndarray:
    """Verify and decode one file; cached per (path, size, mtime)."""
    from debiaskit.data.sources import sha256_file
    path = pathlib.Path(path_str)
    name = path.name
    digest = sha256_file(path)
    if digest != FROST_SHA256[name]:
        raise DataError(f"frost texture {path} has sha256 {digest[:12]}..., expected "
                        f"{FROST_SHA256[name][:12]}... (altered or a different file); {_hint()}")
    bgr = cv2.imread(path_str)  # IMREAD_COLOR: 3-channel BGR uint8, PNG alpha dropped
    if bgr is None:
        raise DataError(f"frost texture {path} could not be decoded by OpenCV; {_hint()}")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    rgb.setflags(write=False)
    return rgb


def _paths() -> tuple[pathlib.Path, ...]:
    dirs = frost_dirs()
    return tuple(_locate(name, dirs) for name in FROST_FILES)


def _load(path: pathlib.Path) -> np.ndarray:
    st = path.stat()
    return _decode(str(path.resolve()), st.st_size, st.st_mtime_ns)


def frost_textures() -> tuple[np.ndarray, ...]:
    """The five frost textures frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg,
    in that order (the index ``randint(5)`` draws), each a read-only RGB uint8 array
    (H, W, 3) exactly as ``cv2.imread`` followed by BGR->RGB gives it.

    Raises :class:`~debiaskit.errors.DataError` (one line, naming the file) when a file is
    missing everywhere or its sha256 does not match.
    """
    return tuple(_load(p) for p in _paths())


@functools.lru_cache(maxsize=32)
def _resized(path_str: str, size: int, mtime_ns: int) -> np.ndarray:
    tex = _decode(path_str, size, mtime_ns)
    small = cv2.resize(tex, (0, 0), fx=0.2, fy=0.2)  # INTER_LINEAR, no anti-aliasing
    small.setflags(write=False)
    return small


def resized_frost_textures() -> tuple[np.ndarray, ...]:
    """The five textures scaled by 0.2 with ``cv2.resize(fx=0.2, fy=0.2)`` (default
    INTER_LINEAR), as the frost corruption uses them; RGB uint8, read-only, cached."""
    out = []
    for path in _paths():
        st = path.stat()
        out.append(_resized(str(path.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)
