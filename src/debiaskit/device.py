"""Where a run computes: the ``--device`` names, their resolution, and random draws that
give the same numbers on every device.

``auto`` (the default of ``RunConfig.device`` and of every ``--device`` option) is
``cuda`` when ``torch.cuda.is_available()``, else ``cpu``; the environment variable
``DEBIASKIT_DEVICE`` (:data:`ENV`), when set, names the device ``auto`` stands for instead
(e.g. ``cpu`` to keep every run of a process tree on the CPU: the test suite sets it, so
that its exact numbers do not depend on a GPU's kernels). A device that is not present
here (``cuda`` on a machine without a CUDA GPU or with a CPU-only torch build, ``cuda:3``
on a machine with one GPU) is a one-line :class:`~debiaskit.errors.ConfigError` saying what
to give instead. :func:`resolve_device` is called once, by the run's configuration check
(``debiaskit.train.check_config``), so ``config.json`` records the device the run used.

Random draws of augmentations and infills come from CPU generators seeded by the run, so
that a run draws the same numbers on a CPU and on a GPU: :func:`draw` makes them on the
generator's device and moves them to the data's.
"""

from __future__ import annotations

import os

import torch

from .errors import ConfigError

#: The device names ``--device`` takes (``cuda:N`` names one GPU of several).
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
#: Environment variable naming the device ``auto`` stands for (unset: the GPU if any).
ENV = "DEBIASKIT_DEVICE"


def torch_build() -> str:
    """This torch's version and build, e.g. ``torch 2.5.1, built for CUDA 12.4`` or
    ``torch 2.5.1, a CPU-only build``."""
    cuda = torch.version.cuda
    return f"torch {torch.__version__}, " + (f"built for CUDA {cuda}" if cuda
                                             else "a CPU-only build")


def _no_cuda(name: str) -> ConfigError:
    return ConfigError(f"--device {name}: no CUDA GPU is available here ({torch_build()}); "
                       "use --device auto or --device cpu")


def resolve_device(name: str | torch.device | None = "auto") -> str:
    """The torch device a run computes on, as text: ``auto`` (or None) -> the device named
    by ``$DEBIASKIT_DEVICE`` if set, else ``cuda`` when a CUDA GPU is available, else
    ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked to be present and
    returned as given. Anything else, or a device that is not here, is a one-line
    ConfigError."""
    if name is None or str(name).strip().lower() == "auto":
        chosen = os.environ.get(ENV, "").strip()
        if chosen and chosen.lower() != "auto":
            try:
                return resolve_device(chosen)
            except ConfigError as err:
                raise ConfigError(f"{ENV}={chosen} (the device --device auto stands for): "
                                  f"{err}") from None
        return "cuda" if torch.cuda.is_available() else "cpu"
    text = str(name).strip().lower()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {str(name)!r}; choose one of: "
                          f"{', '.join(DEVICE_NAMES)}") from None
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _no_cuda(text)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {text}: this machine has {count} CUDA GPU(s), "
                              f"cuda:0 to cuda:{count - 1}; use --device cuda or auto")
        return text
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {text}: no Apple MPS device is available here; use "
                              "--device auto or --device cpu")
        return text
    raise ConfigError(f"unsupported device {str(name)!r}; choose one of: "
                      f"{', '.join(DEVICE_NAMES)}")


def synchronize(device) -> None:
    """Wait until ``device`` has finished its queued work (GPU kernels run asynchronously,
    so a clock read without it measures only their launch); nothing on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def draw(sample, *args, generator: torch.Generator | None = None,
         like: torch.Tensor, **kwargs) -> torch.Tensor:
    """``sample(*args, generator=generator, **kwargs)`` (``torch.rand``, ``randn``,
    ``randint``, ``randperm`` ...) made on the generator's device and moved to ``like``'s.

    A run's generators are CPU generators, so its augmentations and infills draw the same
    numbers on a CPU and on a GPU (and a GPU run does not ask a CPU generator for GPU
    numbers, which torch refuses). Without a generator the draw is made on ``like``'s
    device from torch's global generator of that device."""
    where = generator.device if generator is not None else like.device
    return sample(*args, generator=generator, device=where, **kwargs).to(like.device)
