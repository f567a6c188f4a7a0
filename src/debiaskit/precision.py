"""Arithmetic precision of the training and evaluation passes (``RunConfig.precision``).

bf16 runs the forward passes under ``torch.autocast`` (weights, optimiser state and losses
stay float32); it changes the numbers slightly, so it is part of a run's identity. It only
pays where the hardware computes bf16 natively (a CPU with AVX512-BF16 or AMX, a GPU with
bf16 support); elsewhere autocast emulates it and runs slower than float32 (README,
"Precision"), so :func:`check_precision` refuses it there unless forced.
"""

from __future__ import annotations

import torch

from .errors import ConfigError, unknown_name

#: name -> autocast dtype (None: plain float32)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def describe_precision(precision: str) -> str:
    """How a report states ``precision`` (the papers all train in float32)."""
    return ("float32" if precision == "fp32"
            else f"{precision} autocast (the papers train in float32)")


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; the platform's processor elsewhere)."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` computes bf16 in hardware: AVX512-BF16 or AMX on a CPU (torch's
    CPU capability checks), ``torch.cuda.is_bf16_supported`` on a GPU."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return True  # other accelerators: their own business


def check_precision(precision: str, device: str = "cpu", force: bool = False) -> None:
    """ConfigError for an unknown precision, or bf16 on hardware without native bf16
    (unless ``force``)."""
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    if precision == "bf16" and not force and not native_bf16(device):
        where = (f"this CPU ({cpu_name()}; torch CPU capability "
                 f"{torch.backends.cpu.get_cpu_capability()})"
                 if torch.device(device).type == "cpu" else f"device {device}")
        raise ConfigError(f"--precision bf16: {where} has no native bf16 arithmetic (AVX512-BF16 "
                          "or AMX), where autocast emulates it and runs slower than float32 "
                          "(README, Precision); use --precision fp32, or add "
                          "--force-precision to measure it anyway")


def arithmetic(precision: str, device: str = "cpu") -> torch.autocast:
    """The autocast context of ``precision`` for the training and evaluation passes
    (disabled for float32).

    Its cache of low-precision weight copies is off: the cache lives until the context
    exits, so a context around several optimiser steps (or a method that steps one network
    and then runs it again within one update) would keep computing with the weights of
    before the step. Each weight is cast once per forward pass anyway.
    """
    dtype = PRECISIONS[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.bfloat16,
                          enabled=dtype is not None, cache_enabled=False)
