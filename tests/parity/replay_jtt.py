"""Replay a JTT parity fixture (anniesch/jtt, both stages) through debiaskit's JTT.

The fixture holds the authors' pipeline run on a Colored MNIST subset: the ERM
(identification) run, their error set, and the JTT run on their upsampled dataset
(tools/parity/jtt/README.md). The replay builds debiaskit's ``JTT`` with the manifest's
hyper-parameters and SGD, gives the first network it builds (the identifier) the
recorded initial weights, and drives it as debiaskit's trainer does: ``begin_epoch``
per epoch and ``update`` per batch of an ``InMemoryLoader`` whose shuffle permutation is
the recorded one (``torch.randperm`` is replaced while an epoch's batches are drawn, so
the batches come out of debiaskit's own pool and loader). Compared:

- per step: the batch's dataset indices, per-sample cross-entropy of the network being
  trained, and a sketch of its parameters after the step;
- at the start of stage 2: debiaskit's error set against theirs, its stage-2 epoch
  (``begin_epoch``'s index list) against their upsampled dataset read position by
  position, and the final model's initial parameters (debiaskit's own, built by JTT)
  against their second run's.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from debiaskit.data.dataset import BiasedDataset
from debiaskit.data.loader import InMemoryLoader
from debiaskit.methods.base import DataSpec
from debiaskit.methods.jtt import JTT
from debiaskit.models import NetworkFactory
from debiaskit.parity import Comparison, Sketch

#: the recorder's MLP (an nn.Sequential) -> debiaskit's ``mlp``
KEYMAP = {"1": "body.1", "3": "body.3", "5": "body.5", "7": "head"}


def ours(key: str) -> str:
    module, _, leaf = key.rpartition(".")
    return f"{KEYMAP[module]}.{leaf}"


@contextmanager
def recorded_permutation(perm: np.ndarray):
    """``torch.randperm(n, ...)`` returns ``perm`` (the reference's sampler order)."""
    real = torch.randperm

    def randperm(n, *args, **kwargs):
        if n != len(perm):
            raise ValueError(f"the loader draws a permutation of {n}, the record has {len(perm)}")
        return torch.from_numpy(perm.astype(np.int64))
    torch.randperm = randperm
    try:
        yield
    finally:
        torch.randperm = real


def replay(fx, options) -> Comparison:
    comp = Comparison(dict(fx.manifest["tolerances"]))
    init = fx.prefixed("init/")
    their_keys = list(init)
    sketch = Sketch.of(list(init.values()))

    def sketch_of(net):
        state = net.state_dict()
        return sketch([state[ours(k)] for k in their_keys])

    x = torch.from_numpy(fx["x"])
    y = torch.from_numpy(fx["y"]).long()
    b = torch.from_numpy(fx["b"]).long()
    train = BiasedDataset(name="colored_mnist/train", x=x, y=y, num_classes=10, b=b,
                          num_bias=10)
    spec = DataSpec(input_shape=(3, 28, 28), num_classes=10, num_train=len(y),
                    train_targets=y, num_bias=10, train_bias=b)
    factory = NetworkFactory("mlp", (3, 28, 28), 10, dict(options.get("model_options", {})))
    built = []

    def make_network():
        """The first network JTT builds (its identifier) starts from the recorded weights;
        any other is debiaskit's own (seeded) initialisation."""
        net = factory()
        if not built:
            net.load_state_dict({ours(k): v for k, v in init.items()})
        built.append(net)
        return net

    torch.manual_seed(int(options.get("seed", 0)))
    method = JTT(spec, make_network, options["hparams"])
    method.pack = False
    method.override_optimizers(**options["optimizer"])
    logits = {}
    for role, net in method.networks.items():
        net.register_forward_hook(lambda m, i, o, role=role: logits.__setitem__(role, o.detach()))

    loader = InMemoryLoader(train, int(options["batch_size"]), shuffle=True, seed=0)
    perms = np.split(fx["perm"], np.cumsum(fx["perm_sizes"])[:-1])
    index, ce = fx.per_step("batch_index"), fx.per_step("ce")
    stage, epoch_of = fx["stage"], fx["epoch"]
    their_sketch, their_init = fx["sketch"], fx["init_sketch"]
    step = 0
    for epoch, perm in enumerate(perms):
        their_stage = int(stage[step])
        pool = method.begin_epoch(epoch, loader)
        if (pool is not None) != bool(their_stage):
            comp.absolute(step, "stage of the epoch", [int(pool is not None)], [their_stage])
            return comp
        if pool is not None and epoch == int(epoch_of[step]) and \
                (step == 0 or stage[step - 1] == 0):
            comp.absolute(step, "error set", method.tables["error_set"].errors.int().numpy(),
                          fx["error_set"].astype(np.int64))
            comp.relative(step, "final model's initial parameters (sketch)",
                          sketch_of(method.networks["final"]), their_init[1])
        if pool is not None:
            if len(pool) != len(fx["pool"]):
                comp.absolute(step, "stage-2 epoch length", [len(pool)], [len(fx["pool"])])
                return comp
            comp.absolute(step, "stage-2 epoch (dataset indices)", pool.numpy(), fx["pool"])
        role = "final" if pool is not None else "identifier"
        with recorded_permutation(perm):
            for batch in loader.epoch(epoch, pool):
                method.train(True)
                method.update(batch)
                comp.absolute(step, "batch indices", batch.index.numpy(), index[step])
                mine_ce = F.cross_entropy(logits[role], batch.y, reduction="none")
                comp.absolute(step, "per-sample CE", mine_ce.numpy(), ce[step])
                comp.relative(step, f"{role} parameters (sketch)",
                              sketch_of(method.networks[role]), their_sketch[step])
                step += 1
    return comp
