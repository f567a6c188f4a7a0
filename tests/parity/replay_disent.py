"""Replay the DisEnt fixture (kakaoenterprise/Learning-Debiased-Disentangled, cmnist MLP)
through debiaskit's DisEnt.

Same initial weights (their MLP_DISENTANGLE keys mapped to ours), the same batches (their
dataset indices mapped to debiaskit's, images from the fixture through debiaskit's own
uint8 -> float conversion), their swap permutation injected where debiaskit draws its own
(``torch.randperm`` inside ``DisEnt.loss``); then per step: the learning rate, per-sample
CE of C_i and C_b on [z_i, z_b] and on the swapped features, the weight W(x), the EMA
values of the batch and the class maxima of both tables, and sketches of both networks.

``options``: ``hparams`` and ``model_options`` of DisEnt, ``pack`` (default False) and
``adam`` ("debiaskit": the method's own optimisers; "plain": torch.optim.Adam as their code
builds it).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from debiaskit.data.loader import Batch
from debiaskit.methods.base import DataSpec
from debiaskit.methods.disent import DisEnt
from debiaskit.models import NetworkFactory
from debiaskit.parity import Comparison, Sketch

#: their MLP_DISENTANGLE module -> ours (a DisEnt network: encoder = MLP without head)
KEYMAP = {"feature.0": "encoder.net.body.1", "feature.2": "encoder.net.body.3",
          "feature.4": "encoder.net.body.5", "fc": "classifier"}
ROLES = {"i": "intrinsic", "b": "bias"}


def ours(key: str) -> str:
    module, _, leaf = key.rpartition(".")
    return f"{KEYMAP[module]}.{leaf}"


def replay(fixture, options) -> Comparison:
    fx, manifest = fixture, fixture.manifest
    x_u8 = torch.from_numpy(np.ascontiguousarray(fx["x"]))
    if hashlib.sha256(x_u8.numpy().tobytes()).hexdigest() != manifest["data"]["sha256"]:
        raise ValueError(f"{fixture.name}: images do not match the manifest's checksum")
    y, b = torch.from_numpy(fx["y"]).long(), torch.from_numpy(fx["b"]).long()
    hp = dict(options.get("hparams", {}))
    spec = DataSpec(input_shape=tuple(x_u8.shape[1:]), num_classes=10, num_train=len(y),
                    train_targets=y, num_bias=10, train_bias=b)
    torch.manual_seed(0)  # (the weights are replaced below)
    method = DisEnt(spec, NetworkFactory(manifest["network"], tuple(x_u8.shape[1:]), 10,
                                         dict(options.get("model_options", {}))), hp)
    method.pack = options.get("pack", False)
    their_keys = {}
    for r, role in ROLES.items():
        init = fx.prefixed(f"init_{r}/")
        their_keys[r] = [ours(k) for k in init]
        method.networks[role].load_state_dict({ours(k): v for k, v in init.items()})
    if options.get("adam", "debiaskit") == "plain":  # their torch.optim.Adam(params, lr, wd)
        for role, net in method.networks.items():
            method.optimizers[role] = torch.optim.Adam(
                net.parameters(), lr=method.hp["lr"], weight_decay=method.hp["weight_decay"])
    method.train(True)

    logits = {"intrinsic": [], "bias": []}
    for role in logits:
        method.networks[role]["classifier"].register_forward_hook(
            lambda m, i, o, role=role: logits[role].append(o.detach()))
    sketches = {r: Sketch.of(list(method.networks[role].state_dict().values()))
                for r, role in ROLES.items()}

    cmp = Comparison(dict(manifest["tolerances"]))
    index, sizes = fx.per_step("batch_index"), fx["batch_sizes"]
    per_sample = {k: fx.per_step(k) for k in ("ce_i", "ce_b", "weight", "ema_i", "ema_b")}
    swap_keys = ("perm", "swap_ce_i", "swap_ce_b")
    swaps = {k: iter(fx.per_step(k, "swap_sizes")) for k in swap_keys}
    epoch = None
    randperm = torch.randperm
    for step in range(len(sizes)):
        if fx["epoch"][step] != epoch:
            epoch = int(fx["epoch"][step])
            method.begin_epoch(epoch, None)
        idx = torch.from_numpy(index[step]).long()
        batch = Batch(x=x_u8.index_select(0, idx).float().div_(255.0), y=y[idx], index=idx,
                      b=b[idx])
        swapped = bool(fx["swapped"][step])
        recorded = {k: next(swaps[k]) for k in swap_keys} if swapped else None
        drawn = []

        def their_permutation(n, *args, **kwargs):
            if recorded is None or len(recorded["perm"]) != n:
                drawn.append(None)
                return randperm(n, *args, **kwargs)
            drawn.append(n)
            return torch.from_numpy(recorded["perm"]).long().to(kwargs.get("device"))

        for v in logits.values():
            v.clear()
        torch.randperm = their_permutation
        try:
            method.update(batch)
        finally:
            torch.randperm = randperm

        for r, role in ROLES.items():
            cmp.absolute(step, f"lr_{r}", method.optimizers[role].param_groups[0]["lr"],
                         fx[f"lr_{r}"][step])
        # a swap exactly where theirs swapped (1 = a difference in whether it swapped)
        cmp.absolute(step, "swapped", float(len(drawn) > 0), float(swapped))
        ce = {r: F.cross_entropy(logits[role][0], batch.y, reduction="none")
              for r, role in ROLES.items()}
        cmp.absolute(step, "ce_i", ce["i"], per_sample["ce_i"][step])
        cmp.absolute(step, "ce_b", ce["b"], per_sample["ce_b"][step])
        cmp.absolute(step, "weight", method.sample_weights(idx), per_sample["weight"][step])
        for r, role in ROLES.items():
            table = method.tables[role]
            cmp.absolute(step, f"ema_{r}", table.values[idx], per_sample[f"ema_{r}"][step])
            cmp.absolute(step, f"class_max_{r}", table.class_max(), fx[f"cmax_{r}"][step])
        if swapped and len(logits["intrinsic"]) == 2 and drawn == [len(idx)]:
            perm = torch.from_numpy(recorded["perm"]).long()
            cmp.absolute(step, "swap_ce_i", F.cross_entropy(logits["intrinsic"][1], batch.y,
                                                            reduction="none"),
                         recorded["swap_ce_i"])
            cmp.absolute(step, "swap_ce_b", F.cross_entropy(logits["bias"][1], batch.y[perm],
                                                            reduction="none"),
                         recorded["swap_ce_b"])
        for r, role in ROLES.items():
            state = method.networks[role].state_dict()
            cmp.relative(step, f"sketch_{r}", sketches[r]([state[k] for k in their_keys[r]]),
                         fx[f"sketch_{r}"][step])
    return cmp
