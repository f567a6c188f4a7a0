"""Record kohpangwei/group_DRO's own training loop on a Colored MNIST subset, from outside.

Runs in the reference environment (torch, numpy, pandas, tqdm; no debiaskit install):

    OMP_NUM_THREADS=1 python record.py --ref CHECKOUT --data DATA.npz --out RECORD.npz \
        [--steps-per-epoch-check] [--eta 0.01] [--adjustment 1.0] ...

CHECKOUT is a checkout of their repository (its top folder goes on sys.path: we import
their ``train`` (train.train, run_epoch), ``loss`` (LossComputer), ``utils`` (set_seed,
Logger, CSVBatchLogger) and ``data.dro_dataset`` (DRODataset) unchanged). DATA.npz is
written by make_data.py (debiaskit's colored_mnist protocol, a 1,000-image subset).

What is run: their ``train.train(model, criterion, data, ...)`` with the arguments their
run_expt.py would pass (``--robust``, ``--generalization_adjustment``,
``--robust_step_size``, no ``--use_normalized_loss``, no ``--btl``, SGD with momentum 0.9
as train.train builds it), over their DRODataset's training loader
(``get_loader(train=True, reweight_groups=False)``: shuffled) and a validation loader
(evaluation only, as their loop does after every epoch). Their run_expt.py main() is not
run: it only knows CelebA/CUB/MultiNLI/CIFAR and ResNet/BERT models; we build the
DRODataset over our Colored MNIST subset (groups y * 10 + colour, their
ConfounderDataset's convention) and the 3-hidden-layer MLP of debiaskit's ``mlp``
(2352-100-100-100-10) with torch's default initialisation after their set_seed(seed).

Changes from running their code as published, all from outside their files:
- ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` are replaced by identities (CPU);
- loaders with ``num_workers=0`` and ``pin_memory=False``;
- ``pytorch_transformers`` (imported by their train.py for BERT only) is a stub module;
- their Logger's console is redirected to stderr-free nulls after the run (their
  Logger.close closes sys.stdout).
What is hooked (nothing changes a computed value):
- the training subset dataset logs every index it serves (the loader fetches one batch
  before each step, num_workers=0), giving each step's dataset indices;
- ``LossComputer.loss`` is wrapped (class attribute) to read, for training calls only, the
  per-sample losses (a forward hook on the CrossEntropyLoss criterion module), the
  per-group losses and counts (a wrapper around ``compute_group_avg``: its first call per
  loss() is the loss average; cloned at once because compute_robust_loss adds the
  adjustment to that tensor in place), the returned robust loss and ``adv_probs`` after
  the update;
- a global optimizer step post-hook sketches the model's parameters after every step.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch import nn

HERE = Path(__file__).resolve()
SRC = HERE.parents[3] / "src"   # debiaskit.parity needs only numpy and torch


def mlp() -> nn.Sequential:
    """debiaskit's ``mlp`` on 3x28x28 inputs: Flatten, 3 x (Linear + ReLU), Linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(2352, 100), nn.ReLU(), nn.Linear(100, 100),
                         nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))


class Subset(torch.utils.data.Dataset):
    """(x float in [0, 1], y, group = y * 10 + colour) from uint8 images; optionally logs
    the indices it serves."""

    def __init__(self, x, y, b, log=None):
        self.x, self.y, self.b, self.log = torch.from_numpy(x), y, b, log

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if self.log is not None:
            self.log.append(int(i))
        return self.x[i].float().div_(255.0), int(self.y[i]), int(self.y[i] * 10 + self.b[i])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="checkout of kohpangwei/group_DRO")
    p.add_argument("--data", required=True, help="npz from make_data.py")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--eta", type=float, default=0.05, help="their --robust_step_size")
    p.add_argument("--adjustment", default="2.0", help="their --generalization_adjustment")
    p.add_argument("--alpha", type=float, default=0.2)
    p.add_argument("--gamma", type=float, default=0.1)
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    # device and BERT-only import, from outside their files
    torch.Tensor.cuda = lambda self, *args, **kw: self
    nn.Module.cuda = lambda self, *args, **kw: self
    stub = types.ModuleType("pytorch_transformers")
    stub.AdamW = stub.WarmupLinearSchedule = None
    sys.modules["pytorch_transformers"] = stub
    sys.path.insert(0, str(Path(a.ref).resolve()))
    import loss as their_loss
    import train as their_train
    import utils as their_utils
    from data.dro_dataset import DRODataset

    sys.path.insert(0, str(SRC))
    from debiaskit import parity
    d = np.load(a.data)
    served: list[int] = []
    train_set = DRODataset(Subset(d["x"], d["y"], d["b"], served), None, 100, 10, str)
    val_set = DRODataset(Subset(d["val_x"], d["val_y"], d["val_b"]), None, 100, 10, str)
    served.clear()
    kw = {"batch_size": a.batch_size, "num_workers": 0, "pin_memory": False}
    data = {"train_loader": train_set.get_loader(train=True, reweight_groups=False, **kw),
            "val_loader": val_set.get_loader(train=False, reweight_groups=None, **kw),
            "train_data": train_set, "val_data": val_set, "test_data": None,
            "test_loader": None}

    their_utils.set_seed(a.seed)
    model = mlp()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sketch = parity.Sketch.of(list(init.values()))
    criterion = nn.CrossEntropyLoss(reduction="none")
    seen = {}
    criterion.register_forward_hook(lambda m, i, o: seen.__setitem__("per_sample", o.detach().clone()))

    steps = []
    original_loss = their_loss.LossComputer.loss
    original_avg = their_loss.LossComputer.compute_group_avg

    def compute_group_avg(self, losses, group_idx):
        out = original_avg(self, losses, group_idx)
        seen.setdefault("group", tuple(t.detach().clone() for t in out))
        return out

    def loss(self, yhat, y, group_idx=None, is_training=False):
        seen.clear()
        value = original_loss(self, yhat, y, group_idx, is_training)
        if is_training:
            index = list(served)
            served.clear()
            assert len(index) == len(y), (len(index), len(y))
            steps.append({"index": np.asarray(index, np.int64),
                          "group": group_idx.numpy().copy(),
                          "per_sample": seen["per_sample"].numpy().copy(),
                          "group_loss": seen["group"][0].numpy().copy(),
                          "group_count": seen["group"][1].numpy().copy(),
                          "robust_loss": float(value.detach()),
                          "q": self.adv_probs.detach().numpy().copy()})
        return value

    their_loss.LossComputer.loss = loss
    their_loss.LossComputer.compute_group_avg = compute_group_avg

    def after_step(optimizer, args, kwargs):
        steps[-1]["sketch"] = sketch([v for v in model.state_dict().values()])
    register_optimizer_step_post_hook(after_step)

    args = argparse.Namespace(
        model="mlp", robust=True, alpha=a.alpha, gamma=a.gamma,
        generalization_adjustment=a.adjustment, automatic_adjustment=False,
        robust_step_size=a.eta, use_normalized_loss=False, btl=False,
        minimum_variational_weight=0.0, hinge=False, reweight_groups=False,
        n_epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, scheduler=False,
        weight_decay=a.weight_decay, seed=a.seed, show_progress=False, log_every=50,
        save_step=10 ** 9, save_best=False, save_last=False)
    with tempfile.TemporaryDirectory() as log_dir:
        args.log_dir = log_dir
        logger = their_utils.Logger(os.path.join(log_dir, "log.txt"), "w")
        logger.console = io.StringIO()  # their Logger.close() closes its console
        csv = [their_utils.CSVBatchLogger(os.path.join(log_dir, f"{s}.csv"), 100, mode="w")
               for s in ("train", "val", "test")]
        their_train.train(model, criterion, data, logger, *csv, args, epoch_offset=0)
        for c in csv:
            c.close()
        logger.close()

    arrays = {f"init/{k}": v.numpy() for k, v in init.items()}
    arrays["batch_sizes"] = np.array([len(s["index"]) for s in steps], np.int64)
    arrays["index"] = np.concatenate([s["index"] for s in steps])
    arrays["group"] = np.concatenate([s["group"] for s in steps])
    arrays["per_sample_loss"] = np.concatenate([s["per_sample"] for s in steps]).astype(np.float32)
    for key in ("group_loss", "group_count", "q", "sketch"):
        arrays[key] = np.stack([s[key] for s in steps])
    arrays["robust_loss"] = np.array([s["robust_loss"] for s in steps], np.float64)
    arrays["train_group_counts"] = train_set.group_counts().numpy()
    np.savez_compressed(a.out, **arrays)
    absent = (arrays["group_count"] == 0).sum(1)
    print(f"{len(steps)} steps, batch sizes {arrays['batch_sizes'].tolist()}, "
          f"groups absent per step {absent.min()}-{absent.max()}, "
          f"final q min/max {arrays['q'][-1].min():.5f}/{arrays['q'][-1].max():.5f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
