"""Replay of the LfF parity fixtures (``lff-*``: alinlab/LfF's train.py, recorded by
tools/parity/lff/record.py) through debiaskit's own :class:`~debiaskit.methods.lff.LfF`.

Same initial weights (the reference's state-dict keys mapped to ours), the same batches
(the recorded dataset indices; the fixture's uint8 images through debiaskit's own uint8 ->
[0, 1] conversion), and, where the reference augments (Corrupted CIFAR-10: random crop with
4 pixels of zero padding and a horizontal flip per sample), debiaskit's own batched
augmentation (``options["augment"]``) with the recorded crop offsets and flips injected in
place of its random draws. Per step it compares the per-sample cross-entropy of both
networks (before the step), the per-sample loss EMAs after their update, the weights W(x),
the per-sample debiased loss ``CE_D * W``, and sketches of both networks' parameters (and
BatchNorm running statistics) after the step; at the end the whole EMA tables, which
samples they have seen, and BatchNorm's batch counters.
"""

from __future__ import annotations

import contextlib
import hashlib
import re

import numpy as np
import torch
import torch.nn.functional as F

from debiaskit.data.augment import AUGMENTATIONS
from debiaskit.data.loader import Batch, as_float_images
from debiaskit.methods.base import DataSpec
from debiaskit.methods.lff import LfF
from debiaskit.models import NetworkFactory
from debiaskit.parity import Comparison, Sketch

from . import DATA_DIR, data_unavailable

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def our_key(network: str, key: str) -> str:
    """The reference's state-dict key -> debiaskit's."""
    if network == "mlp":  # feature.{0,2,4} -> body.{1,3,5}, classifier -> head
        m = re.fullmatch(r"feature\.(\d+)\.(\w+)", key)
        if m:
            return f"body.{int(m.group(1)) + 1}.{m.group(2)}"
        return key.replace("classifier.", "head.", 1)
    if network == "resnet20":  # conv1/bn1 -> conv/bn, layerL.k -> stages.(3(L-1)+k), linear -> head
        m = re.fullmatch(r"layer(\d)\.(\d)\.(.+)", key)
        if m:
            return f"stages.{3 * (int(m.group(1)) - 1) + int(m.group(2))}.{m.group(3)}"
        for theirs, ours in (("conv1.", "conv."), ("bn1.", "bn."), ("linear.", "head.")):
            if key.startswith(theirs):
                return ours + key[len(theirs):]
    raise KeyError(f"no mapping for {network} key {key}")


def load_reference_init(net: torch.nn.Module, network: str, theirs: dict) -> list[str]:
    """Load the reference's initial state into ``net``; returns our keys in their order.
    Every key of ours must be covered except the input normalisation buffers."""
    mapped = {our_key(network, k): v for k, v in theirs.items()}
    own = net.state_dict()
    missing = set(own) - set(mapped) - {"mean", "std"}
    extra = set(mapped) - set(own)
    if missing or extra:
        raise KeyError(f"state dicts differ: ours lacks {sorted(extra)}, theirs {sorted(missing)}")
    own.update(mapped)
    net.load_state_dict(own)
    return list(mapped)


@contextlib.contextmanager
def injected_crop_flip(draws: np.ndarray):
    """Within the block, debiaskit's RandomCropFlip draws the recorded per-sample crop
    offsets (two ``torch.randint`` calls: top, then left) and flips (one ``torch.rand``
    call: 0.25 flips, 0.75 keeps); any other draw is an error."""
    tops, lefts = (torch.from_numpy(draws[:, i].astype(np.int64)) for i in (0, 1))
    flips = torch.from_numpy(draws[:, 2].astype(bool))
    pending = {"randint": [tops, lefts], "rand": [torch.where(flips, 0.25, 0.75)]}
    real = {"randint": torch.randint, "rand": torch.rand}

    def take(kind, size):
        if not pending[kind]:
            raise AssertionError(f"unexpected torch.{kind} call in the augmentation")
        out = pending[kind].pop(0)
        if tuple(size) != tuple(out.shape):
            raise AssertionError(f"torch.{kind} asked for {size}, recorded {tuple(out.shape)}")
        return out

    torch.randint = lambda low, high, size, generator=None, **kw: take("randint", size)
    torch.rand = lambda *size, generator=None, **kw: take(
        "rand", size[0] if len(size) == 1 and isinstance(size[0], (tuple, list)) else size)
    try:
        yield
    finally:
        torch.randint, torch.rand = real["randint"], real["rand"]
    if any(pending.values()):
        raise AssertionError("the augmentation did not use every recorded draw")


_IMAGES: dict[str, torch.Tensor] = {}  # sha256 -> images rebuilt from a protocol


def training_images(fixture) -> torch.Tensor:
    """The fixture's uint8 training images: stored (``x``), or rebuilt with debiaskit's own
    protocol (``manifest.data.protocol``) at the stored indices (``pick``) from the data in
    ``DEBIASKIT_DATA``, else the sibling ``../shared/data`` (skips the test when that lacks
    the source, fails it under ``CI=true``); checked by sha256."""
    sha = fixture.manifest["data"]["sha256"]
    if "x" in fixture.arrays:
        x = np.ascontiguousarray(fixture["x"])
    elif sha in _IMAGES:
        return _IMAGES[sha]
    else:
        from debiaskit.data.protocols import build_data
        from debiaskit.errors import DataError
        protocol = fixture.manifest["data"]["protocol"]
        try:
            train = build_data(protocol["name"], data_dir=str(DATA_DIR),
                               **protocol["params"]).train
        except DataError as err:
            data_unavailable(f"{fixture.name} rebuilds its images from the "
                             f"{protocol['name']} source data: {err}")
        pick = torch.from_numpy(fixture["pick"].astype(np.int64))
        x = np.ascontiguousarray(train.x[pick].numpy())
        if not (np.array_equal(train.y[pick].numpy(), fixture["y"])
                and np.array_equal(train.b[pick].numpy(), fixture["b"])):
            raise AssertionError(f"{fixture.name}: labels differ from the recorded ones")
    if hashlib.sha256(x.tobytes()).hexdigest() != sha:
        raise AssertionError(f"{fixture.name}: images differ from the recorded ones")
    _IMAGES[sha] = torch.from_numpy(x)
    return _IMAGES[sha]


def replay(fixture, options: dict, full: bool = False) -> Comparison:
    """Replay ``fixture`` with ``options`` (``hparams``, ``model_options``, ``augment``,
    ``adam``: "fused" (debiaskit's, the default) or "single_tensor" (torch.optim.Adam's
    default on the CPU)); stops at the first failure unless ``full``."""
    manifest = fixture.manifest
    x_u8 = training_images(fixture)
    y = torch.from_numpy(fixture["y"]).long()
    b = torch.from_numpy(fixture["b"]).long()
    network = manifest["network"]
    shape = tuple(x_u8.shape[1:])
    spec = DataSpec(input_shape=shape, num_classes=10, num_train=len(y), train_targets=y,
                    num_bias=10, train_bias=b)
    method = LfF(spec, NetworkFactory(network, shape, 10, dict(options.get("model_options", {}))),
                 dict(options.get("hparams", {})))
    method.pack = False  # hooks must see each network's own forward
    if options.get("adam", "fused") == "single_tensor":
        # torch.optim.Adam as the authors build it (on the CPU its single-tensor loop)
        # instead of debiaskit's fused Adam: the same update rule, other rounding
        for role, net in method.networks.items():
            method.optimizers[role] = torch.optim.Adam(
                net.parameters(), lr=method.hp["lr"], weight_decay=method.hp["weight_decay"])
    params, buffers, logits = {}, {}, {}
    for role, r in (("biased", "b"), ("debiased", "d")):
        net = method.networks[role]
        keys = load_reference_init(net, network, fixture.prefixed(f"init_{r}/"))
        state = dict(net.named_parameters())
        named_buffers = dict(net.named_buffers())
        params[role] = [state[k] for k in keys if not k.endswith(BUFFER_SUFFIXES)]
        buffers[role] = [named_buffers[k] for k in keys if k.endswith(BUFFER_SUFFIXES[:2])]
        net.register_forward_hook(
            lambda mod, i, out, role=role: logits.__setitem__(role, out.detach()))
    method.train(True)
    sketch_p = Sketch.of(params["biased"])
    sketch_b = Sketch.of(buffers["biased"]) if "bn_b" in fixture.arrays else None
    augment = AUGMENTATIONS[options.get("augment", "none")]()

    cmp = Comparison(tolerances=dict(manifest["tolerances"]))
    per_step = {k: fixture.per_step(k) for k in ("batch_index", "ce_b", "ce_d", "ema_b",
                                                 "ema_d", "weight", "loss_d_update")}
    draws = fixture.per_step("draws") if "draws" in fixture.arrays else None
    steps = len(fixture["batch_sizes"])
    for step in range(steps):
        idx = torch.from_numpy(per_step["batch_index"][step].astype(np.int64))
        x = as_float_images(x_u8.index_select(0, idx))
        if augment is not None:
            with injected_crop_flip(draws[step]):
                x = augment(x, torch.Generator())
        method.update(Batch(x=x, y=y[idx], index=idx, b=b[idx]))
        ce = {r: F.cross_entropy(logits[role], y[idx], reduction="none")
              for role, r in (("biased", "b"), ("debiased", "d"))}
        weight = method.sample_weights(idx)  # the step does not touch the tables
        cmp.absolute(step, "ce_biased", ce["b"], per_step["ce_b"][step])
        cmp.absolute(step, "ce_debiased", ce["d"], per_step["ce_d"][step])
        cmp.absolute(step, "ema_biased", method.tables["biased"].values[idx],
                     per_step["ema_b"][step])
        cmp.absolute(step, "ema_debiased", method.tables["debiased"].values[idx],
                     per_step["ema_d"][step])
        cmp.absolute(step, "weight", weight, per_step["weight"][step])
        cmp.absolute(step, "loss_debiased", ce["d"] * weight, per_step["loss_d_update"][step])
        for role, r in (("biased", "b"), ("debiased", "d")):
            cmp.relative(step, f"params_{role}", sketch_p(params[role]),
                         fixture[f"sketch_{r}"][step])
            if sketch_b is not None:
                cmp.relative(step, f"bn_stats_{role}", sketch_b(buffers[role]),
                             fixture[f"bn_{r}"][step])
        if cmp.first_failure is not None and not full:
            return cmp
    last = steps - 1
    for role, r in (("biased", "b"), ("debiased", "d")):
        table = method.tables[role]
        cmp.absolute(last, f"final_ema_table_{role}", table.values, fixture[f"final_ema_{r}"])
        cmp.absolute(last, f"final_seen_{role}", table.seen.to(torch.uint8),
                     fixture[f"final_updated_{r}"])
        if f"final_bn_tracked_{r}" in fixture.arrays:
            tracked = [v for k, v in method.networks[role].state_dict().items()
                       if k.endswith("num_batches_tracked")]
            cmp.absolute(last, f"bn_batches_tracked_{role}", torch.stack(tracked),
                         fixture[f"final_bn_tracked_{r}"])
    return cmp
