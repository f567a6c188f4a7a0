"""Arithmetic precision of the training and evaluation passes (``RunConfig.precision``).

bf16 runs the forward passes under ``torch.autocast`` (weights, optimiser state and losses
stay float32); it changes the numbers slightly, so it is part of a run's identity. It only
pays where the hardware computes bf16 natively (a CPU with AVX512-BF16 or AMX, a GPU with
bf16 support); elsewhere autocast emulates it and runs slower than float32 (README,
"Precision"), so :func:`check_precision` refuses it there unless forced.

``auto`` (the default of ``RunConfig.precision``) is resolved per run by
:func:`choose_precision`: bf16 where the device computes it natively *and* a short probe of
the run's own network (forward and backward at the run's batch size, both precisions
interleaved) finds bf16 at least :data:`AUTO_MARGIN` faster; float32 otherwise. The choice
and its reason are recorded with the run, and remembered per machine and network
(:func:`remembered`), so the same command on the same machine trains in the same precision
in every process: the probe runs once.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .device import synchronize
from .errors import ConfigError, unknown_name

#: name -> autocast dtype (None: plain float32)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
#: What ``--precision`` accepts: a precision, or ``auto`` (chosen per run and machine).
CHOICES = ("auto", *PRECISIONS)
#: ``auto`` picks bf16 only when the probe's bf16 time is at most this share of float32's
#: (a margin against timing noise on a loaded machine).
AUTO_MARGIN = 0.9
#: Environment variable that fixes what ``auto`` resolves to (fp32 or bf16) without
#: probing, e.g. to pin a machine's choice for a series of runs.
PRECISION_AUTO_ENV = "DEBIASKIT_PRECISION_AUTO"
#: Environment variable naming the file where auto's choices are remembered (default
#: ``$XDG_CACHE_HOME/debiaskit/precision-auto.json``, ``~/.cache`` without XDG_CACHE_HOME).
PRECISION_CACHE_ENV = "DEBIASKIT_PRECISION_CACHE"
#: Probe length: interleaved rounds of one training pass per precision (after a warm-up).
PROBE_ROUNDS = 3
#: The probe's batch: the run's batch size, at most this many images.
PROBE_MAX_BATCH = 128


#: How reports name each precision.
NAMES = {"fp32": "float32", "bf16": "bf16 autocast"}


def describe_precision(precision: str) -> str:
    """How a report states ``precision`` (the papers all train in float32)."""
    return ("float32" if precision == "fp32"
            else f"{NAMES[precision]} (the papers train in float32)")


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


def hardware(device: str = "cpu") -> str:
    """How messages name the hardware of ``device``: the CPU's model and torch's CPU
    capability, or the device."""
    if torch.device(device).type == "cpu":
        return f"this CPU ({cpu_name()}; torch CPU capability " \
               f"{torch.backends.cpu.get_cpu_capability()})"
    return f"device {device}"


def check_precision(precision: str, device: str = "cpu", force: bool = False) -> None:
    """ConfigError for an unknown precision, or bf16 on hardware without native bf16
    (unless ``force``)."""
    if precision not in CHOICES:
        raise unknown_name("precision", precision, CHOICES)
    if precision == "bf16" and not force and not native_bf16(device):
        where = hardware(device)
        raise ConfigError(f"--precision bf16: {where} has no native bf16 arithmetic (AVX512-BF16 "
                          "or AMX), where autocast emulates it and runs slower than float32 "
                          "(README, Precision); use --precision fp32 or auto, or add "
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


def probe_seconds(make_network, input_shape, num_classes: int, batch_size: int,
                  device: str = "cpu", memory_format=torch.channels_last,
                  rounds: int = PROBE_ROUNDS) -> dict:
    """Seconds of one training pass (forward, cross-entropy, backward) of a fresh network
    from ``make_network`` on a random batch, in float32 and under bf16 autocast: the best of
    ``rounds`` interleaved rounds after one warm-up pass each. Leaves the global RNG as it
    found it (the run's own initialisation is unaffected)."""
    with torch.random.fork_rng(devices=[]):
        net = make_network().to(device)
        net.to(memory_format=memory_format)  # as the run lays out its 4-d weights
        n = max(1, min(batch_size, PROBE_MAX_BATCH))
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((n, *input_shape), generator=gen).to(device)
        y = torch.randint(num_classes, (n,), generator=gen).to(device)
    best = {name: float("inf") for name in PRECISIONS}

    def once(name):
        t0 = time.perf_counter()
        with arithmetic(name, device):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        synchronize(device)
        net.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for name in PRECISIONS:
        once(name)
    for _ in range(rounds):
        for name in PRECISIONS:
            best[name] = min(best[name], once(name))
    return best


def choose_precision(requested: str, device: str, probe) -> tuple[str, str]:
    """``(precision, reason)`` for a run: ``requested`` itself unless it is ``auto``; then
    float32 without native bf16, else bf16 if ``probe()`` (a dict of seconds per precision,
    :func:`probe_seconds`) finds it at most :data:`AUTO_MARGIN` of float32's time."""
    if requested != "auto":
        return requested, "requested"
    where = hardware(device)
    if not native_bf16(device):
        return "fp32", f"auto: float32, no native bf16 on {where}"
    t = probe()
    ratio = t["bf16"] / t["fp32"]
    chosen = "bf16" if ratio <= AUTO_MARGIN else "fp32"
    return chosen, (f"auto: {NAMES[chosen]}; native bf16 on {where}, "
                    f"probe of the run's network: bf16 {1000 * t['bf16']:.1f} ms, float32 "
                    f"{1000 * t['fp32']:.1f} ms per training pass ({ratio:.2f}x; bf16 "
                    f"needs <= {AUTO_MARGIN}x)")


def choices_file() -> Path:
    """Where :func:`remembered` keeps auto's choices (:data:`PRECISION_CACHE_ENV`)."""
    if os.environ.get(PRECISION_CACHE_ENV):
        return Path(os.environ[PRECISION_CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "debiaskit" / "precision-auto.json"


def remembered(key: dict, decide) -> tuple[str, str]:
    """The ``(precision, reason)`` remembered for ``key`` (machine, torch, device, network,
    input, batch), else ``decide()``'s, then remembered. A lock serialises processes, so
    concurrent runs of one command wait for one probe and take its choice. A file that
    cannot be read or written only costs a new probe."""
    path = choices_file()
    text = json.dumps(key, sort_keys=True, default=str)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError:
        return decide()
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        if text in table:
            hit = table[text]
            return hit["precision"], f"{hit['reason']} (remembered in {path})"
        chosen, reason = decide()
        table[text] = {"precision": chosen, "reason": reason}
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
        return chosen, reason
