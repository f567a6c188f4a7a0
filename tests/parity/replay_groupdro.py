"""Replay a groupdro parity fixture (kohpangwei/group_DRO's train loop and LossComputer,
recorded by tools/parity/groupdro/record.py) through debiaskit's GroupDRO.

Same initial weights (their MLP's keys 1/3/5/7 -> body.1/3/5 and head), the same batches
(the dataset indices their shuffled loader served, images from the fixture's uint8 array
through debiaskit's uint8 -> float conversion), the optimiser the options name (their
train.py: SGD, momentum 0.9, weight decay). Per step it compares:
- the per-sample cross-entropy of debiaskit's logits (a forward hook on the model);
- the per-group mean cross-entropy over debiaskit's group ids (y * num_bias + b) and the
  group counts of the batch;
- the group weights ``q`` after the step (their ``adv_probs``);
- the objective debiaskit returns against their robust loss (both include the constant
  ``q_g C / sqrt(n_g)`` terms of the groups they update);
- a sketch of the parameters after the step;
and, once, the training-set group counts the adjustment divides by.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from debiaskit.data.loader import Batch
from debiaskit.methods.base import DataSpec
from debiaskit.methods.groupdro import GroupDRO
from debiaskit.models import NetworkFactory
from debiaskit.parity import Comparison, Sketch

KEYMAP = {"1": "body.1", "3": "body.3", "5": "body.5", "7": "head"}


def their_key(key: str) -> str:
    module, _, leaf = key.partition(".")
    return f"{KEYMAP[module]}.{leaf}"


def replay(fixture, options: dict) -> Comparison:
    arrays = fixture.arrays
    x_u8 = torch.from_numpy(arrays["x"])
    y = torch.from_numpy(arrays["y"]).long()
    b = torch.from_numpy(arrays["b"]).long()
    spec = DataSpec(input_shape=tuple(x_u8.shape[1:]), num_classes=10, num_train=len(y),
                    train_targets=y, num_bias=10, train_bias=b)
    method = GroupDRO(spec, NetworkFactory(fixture.manifest["network"], spec.input_shape, 10,
                                           options.get("model_options", {})),
                      options.get("hparams", {}))
    method.pack = False
    if options.get("optimizer"):
        method.override_optimizers(**options["optimizer"])
    init = fixture.prefixed("init/")
    model = method.networks["model"]
    model.load_state_dict({their_key(k): v for k, v in init.items()})
    order = [their_key(k) for k in init]            # the reference's state-dict order
    sketch = Sketch.of(list(init.values()))

    result = Comparison(dict(fixture.manifest["tolerances"]))
    logits = {}
    hook = model.register_forward_hook(lambda m, i, o: logits.__setitem__("out", o.detach()))
    try:
        result.absolute(0, "training-set group counts", method.group_counts.numpy(),
                        arrays["train_group_counts"])
        per_sample = fixture.per_step("per_sample_loss")
        their_groups = fixture.per_step("group")
        sizes = arrays["batch_sizes"]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        for step, (lo, n) in enumerate(zip(starts, sizes)):
            idx = torch.from_numpy(arrays["index"][lo:lo + n]).long()
            batch = Batch(x=x_u8.index_select(0, idx).float().div_(255.0), y=y[idx],
                          index=idx, b=b[idx])
            stats = method.update(batch)
            ce = F.cross_entropy(logits["out"], batch.y, reduction="none")
            groups = batch.y * spec.num_bias + batch.b
            counts = torch.bincount(groups, minlength=method.num_groups)
            group_ce = (torch.zeros(method.num_groups, dtype=ce.dtype).index_add(0, groups, ce)
                        / counts.clamp_min(1))
            result.absolute(step, "group ids", groups.numpy(), their_groups[step])
            result.absolute(step, "per-sample CE", ce.numpy(), per_sample[step])
            result.absolute(step, "group counts", counts.numpy(), arrays["group_count"][step])
            result.absolute(step, "per-group CE", group_ce.numpy(), arrays["group_loss"][step])
            result.absolute(step, "q after step", method.q.numpy(), arrays["q"][step])
            result.absolute(step, "objective", stats["loss"], arrays["robust_loss"][step])
            state = model.state_dict()
            result.relative(step, "parameter sketch", sketch([state[k] for k in order]),
                            arrays["sketch"][step])
    finally:
        hook.remove()
    return result
