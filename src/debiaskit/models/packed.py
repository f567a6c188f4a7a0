"""Packed arithmetic for several MLPs that read the same input batch (LfF's biased and
debiased models, DisEnt's intrinsic and bias encoders).

The first layer of every network reads the same (large) input, so it is computed for all of
them as one matrix product against their concatenated weights, ``x @ [W_1; ...; W_n]^T``,
and its backward pass gives all first-layer weight gradients in one more product. On
Colored MNIST that layer holds about 90 % of an MLP's training arithmetic, and one
product of width ``n x 100`` may run faster than ``n`` products of width 100; whether it
does depends on the CPU (``benchmarks/speed.py`` and ``benchmarks/pack_seeds.py``
measure it; ``pack="auto"``, the default, times both on the run's first batch and keeps
the faster, :func:`pack_decision`). The networks keep their own
parameters and state-dict keys (the concatenation is rebuilt every call, a small copy), so
checkpoints, optimisers and explanation tools are unchanged; the outputs equal those of
calling each network on its own up to float rounding. Networks that are not plain MLPs
(or whose first layers differ in input width or input scaling) are called one by one.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from ..device import synchronize
from .mlp import MLP, InputScaledLinear


def mlp_layers(module: nn.Module) -> list[nn.Module] | None:
    """The layers an MLP-like ``module`` applies, after flattening, in order (a
    :class:`~debiaskit.models.mlp.MLP`, with or without its head, or its feature
    extractor); None if it is anything else."""
    from . import _Features
    if isinstance(module, _Features):
        module = module.net
        layers = list(module.body) if isinstance(module, MLP) else None
    elif isinstance(module, MLP):
        layers = list(module.body) + ([] if isinstance(module.head, nn.Identity)
                                      else [module.head])
    else:
        return None
    layers = [m for m in layers if not isinstance(m, nn.Flatten)]
    if not layers or not isinstance(layers[0], nn.Linear) \
            or any(not isinstance(m, (nn.Linear, nn.ReLU)) for m in layers):
        return None
    return layers


def _scale(linear: nn.Linear) -> float:
    return linear.scale if isinstance(linear, InputScaledLinear) else 1.0


def _packable_stacks(modules) -> list[list[nn.Module]] | None:
    """Each module's layers (:func:`mlp_layers`) if ``modules`` can be packed: two or more
    MLPs whose first layers read the same input width with the same input scaling and
    dtype; None otherwise."""
    stacks = [mlp_layers(m) for m in modules]
    if len(stacks) < 2 or any(s is None for s in stacks):
        return None
    firsts = [s[0] for s in stacks]
    same = (len({f.in_features for f in firsts}) == 1 and len({_scale(f) for f in firsts}) == 1
            and len({f.weight.dtype for f in firsts}) == 1)
    return stacks if same else None


def packable(modules) -> bool:
    """Whether :func:`forward_shared` packs ``modules`` (two or more MLPs whose first
    layers read the same input width with the same input scaling)."""
    return _packable_stacks(modules) is not None


def forward_shared(modules, x: torch.Tensor, pack: bool = True) -> list[torch.Tensor]:
    """``[m(x) for m in modules]``, with the first layers of packable MLPs computed as one
    matrix product (``pack=False``, or modules that are not packable: one call each)."""
    stacks = _packable_stacks(modules) if pack else None
    if stacks is None:
        return [m(x) for m in modules]
    firsts = [s[0] for s in stacks]
    weight = torch.cat([f.weight for f in firsts])
    bias = torch.cat([f.bias for f in firsts])
    hidden = torch.addmm(bias, x.flatten(1), weight.t(), alpha=_scale(firsts[0]))
    outs = []
    for h, layers in zip(hidden.split([f.out_features for f in firsts], dim=1), stacks):
        for layer in layers[1:]:
            h = layer(h)
        outs.append(h)
    return outs


#: ``pack="auto"`` decisions, made once per process for each (first layers, batch shape,
#: dtype, threads): timing the same work on this CPU is the only way to know.
_AUTO: dict[tuple, dict] = {}
PACK_MODES = (True, False, "auto")


def _time_steps(modules, x: torch.Tensor, pack: bool, steps: int) -> float:
    synchronize(x.device)  # (on a GPU: the time of the kernels, not of their launch)
    started = time.perf_counter()
    for _ in range(steps):
        outs = forward_shared(modules, x, pack)
        sum(o.float().sum() for o in outs).backward()
    synchronize(x.device)
    return time.perf_counter() - started


def pack_decision(modules, x: torch.Tensor, steps: int = 10, repeats: int = 3) -> dict:
    """Whether packing ``modules`` pays for batches like ``x`` on this CPU: forward and
    backward passes of copies of the networks on ``x``, ``steps`` packed and ``steps`` one
    by one, alternating, ``repeats`` times after a warm-up; packed if its best time is the
    lower. Returns ``{"packed", "packed_ms", "separate_ms"}`` (per step; ``{"packed":
    False, "reason": ...}`` for networks that cannot be packed). Memoised per process;
    uses no random numbers, so the run's results do not depend on it beyond float rounding."""
    stacks = _packable_stacks(modules)
    if stacks is None:
        return {"packed": False, "reason": "the networks cannot be packed"}
    key = (tuple((s[0].in_features, s[0].out_features) for s in stacks), tuple(x.shape),
           x.dtype, torch.get_num_threads())
    if key not in _AUTO:
        with torch.inference_mode(False), torch.enable_grad():
            copies = [copy.deepcopy(m) for m in modules]
            batch = x.detach().clone()
            for pack in (True, False):
                _time_steps(copies, batch, pack, 2)
            best = {True: math.inf, False: math.inf}
            for _ in range(repeats):
                for pack in (True, False):
                    best[pack] = min(best[pack], _time_steps(copies, batch, pack, steps))
        _AUTO[key] = {"packed": best[True] < best[False],
                      "packed_ms": 1000 * best[True] / steps,
                      "separate_ms": 1000 * best[False] / steps}
    return dict(_AUTO[key])
