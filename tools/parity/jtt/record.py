"""Record JTT's two stages with the authors' own pipeline (anniesch/jtt), from outside.

Runs, in one process, the three programs of the authors' README on a small Colored MNIST
subset (``make_data.py``), each as ``__main__`` through ``runpy`` with the command line
their ``generate_downstream.py`` writes (values chosen for a tiny CPU run):

1. ``run_expt.py`` as the ERM (identification) run, for ``final_epoch + 1`` epochs: their
   training loop writes every epoch's training-pass predictions to
   ``output_train_epoch_<e>.csv``;
2. ``process_training.py --final_epoch K``: their error set (column ``wrong_1_times`` of
   ``metadata_aug.csv``);
3. ``run_expt.py --up_weight L --aug_col wrong_1_times``: the JTT run on their upsampled
   dataset.

Nothing of their code is copied or edited. What is changed, all by monkeypatching here:
- device: ``train.device`` is the CPU and ``Tensor.cuda`` returns the tensor itself;
- loaders: ``num_workers=0``, ``pin_memory=False`` (``data.dro_dataset.get_loader``);
- data: their CUB constructor (``data.confounder_utils.confounder_settings["CUB"]``) is a
  subclass of their ``ConfounderDataset`` serving the in-memory subset (uint8 -> float
  / 255, as debiaskit's loader; no transforms), so the runs use ``-d CUB``; the metadata
  csv their scripts read is written here (``y`` = digit, ``place`` = colour, so their CUB
  branch's ``spurious`` = bias-conflicting);
- network: ``utils.get_model`` returns a 2352-100-100-100-10 ReLU MLP (debiaskit's ``mlp``;
  their code has only ResNets and BERT), initialised by torch's defaults under their
  ``set_seed``;
- imports only BERT / wandb / plotting use (``pytorch_transformers``, ``transformers``,
  ``wandb``, ``matplotlib``) are empty stub modules when not installed, and
  ``torch._utils._accumulate`` (imported by their ``data/folds.py``, unused, gone from
  current torch) is ``itertools.accumulate``.
Recorded through wrappers: the RandomSampler's permutation of each training epoch, the
dataset indices fetched, per-sample CE of each training step (``LossComputer.loss``),
the MLP's parameters after each ``SGD.step`` (16-row sketches), both runs' initial weights,
and the upsampled dataset's index list (their ConcatDataset read position by position).

usage: python tools/parity/jtt/record.py --ref CHECKOUT --data SUBSET.npz --work DIR --out FIXTURE
(run in an environment with torch, numpy, pandas; see README.md)
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "src"))
from debiaskit.parity import Sketch, state_arrays  # noqa: E402  (numpy + torch only)

TARGET, CONFOUNDER = "waterbird_complete95", "forest2water2"   # their CUB layout names
EXP = "jtt_parity"


def stub_unused_imports() -> list[str]:
    stubbed = []
    for name in ("wandb", "pytorch_transformers", "transformers", "matplotlib",
                 "matplotlib.pyplot"):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            for attr in ("AdamW", "WarmupLinearSchedule", "AutoTokenizer", "BertTokenizer"):
                setattr(mod, attr, None)
            sys.modules[name] = mod
            stubbed.append(name)
    return stubbed


def mlp() -> nn.Module:
    """debiaskit's ``mlp`` on 3 x 28 x 28: Flatten, 3 x (Linear + ReLU), Linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 100), nn.ReLU(),
                         nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                         nn.Linear(100, 10))


class Recorder:
    def __init__(self):
        self.stage = None
        self.model = None
        self.sketch = None
        self.inits = []          # state dict of each run's network at construction
        self.epochs = []         # per training epoch: stage, positions, fetched indices
        self.steps = []          # per step: stage, ce, y, pred, sketch
        self.train_sets = []     # the training dataset of each run
        self.fetching = None     # list collecting training fetches of the current epoch

    def new_epoch(self, positions):
        self.fetching = []
        self.epochs.append({"stage": self.stage, "positions": positions,
                            "fetched": self.fetching})


def install(ref: Path, rec: Recorder, images: dict) -> dict:
    sys.path.insert(0, str(ref))
    notes = {"stubbed": stub_unused_imports()}
    import torch._utils
    if not hasattr(torch._utils, "_accumulate"):   # gone from torch; imported, never used
        import itertools
        torch._utils._accumulate = itertools.accumulate
        notes["shim"] = "torch._utils._accumulate = itertools.accumulate"
    torch.Tensor.cuda = lambda self, *a, **k: self

    import train as ref_train
    import utils as ref_utils
    import loss as ref_loss
    from data import dro_dataset, confounder_utils
    from data.confounder_dataset import ConfounderDataset

    ref_train.device = torch.device("cpu")

    get_loader = dro_dataset.get_loader

    def cpu_loader(dataset, train, reweight_groups, **kwargs):
        kwargs.update(num_workers=0, pin_memory=False)
        if train:
            rec.train_sets.append(dataset)
        return get_loader(dataset, train, reweight_groups, **kwargs)
    dro_dataset.get_loader = cpu_loader

    class ColoredMNIST(ConfounderDataset):
        """The subset in their dataset interface: rows train, val, test in this order."""

        def __init__(self, root_dir, target_name, confounder_names, augment_data=False,
                     model_type=None, metadata_csv_name="metadata.csv"):
            import pandas as pd
            self.root_dir, self.target_name = root_dir, target_name
            self.confounder_names, self.model_type = confounder_names, model_type
            self.augment_data = augment_data
            self.data_dir = os.path.join(root_dir, "data", "_".join([target_name] + confounder_names))
            meta = pd.read_csv(os.path.join(self.data_dir, metadata_csv_name))
            self.y_array = meta["y"].values
            self.confounder_array = meta["place"].values
            self.n_classes, self.n_confounders, self.n_groups = 10, 1, 100
            self.group_array = (self.y_array * 10 + self.confounder_array).astype("int")
            self.filename_array = meta["img_filename"].values
            self.split_array = meta["split"].values
            self.split_dict = {"train": 0, "val": 1, "test": 2}
            self.x = np.concatenate([images["x"], images["x_val"], images["x_test"]])

        def __getitem__(self, idx):
            if rec.fetching is not None and self.split_array[idx] == 0:
                rec.fetching.append(int(idx))
            x = torch.from_numpy(self.x[idx]).float().div_(255.0)
            return x, self.y_array[idx], self.group_array[idx], idx

    confounder_utils.confounder_settings["CUB"]["constructor"] = ColoredMNIST

    def get_model(model, pretrained, resume, n_classes, dataset, log_dir):
        net = mlp()
        rec.model = net
        rec.inits.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        if rec.sketch is None:
            rec.sketch = Sketch.of(list(net.state_dict().values()))
        return net
    ref_utils.get_model = get_model

    sampler_iter = torch.utils.data.RandomSampler.__iter__

    def recorded_iter(self):
        positions = list(sampler_iter(self))
        rec.new_epoch(positions)
        yield from positions
    torch.utils.data.RandomSampler.__iter__ = recorded_iter

    loss_fn = ref_loss.LossComputer.loss

    def recorded_loss(self, yhat, y, group_idx=None, is_training=False):
        if not is_training:
            return loss_fn(self, yhat, y, group_idx, is_training)
        criterion, seen = self.criterion, {}

        def spy(yhat_, y_):
            seen["ce"] = out = criterion(yhat_, y_)
            return out
        self.criterion = spy
        try:
            out = loss_fn(self, yhat, y, group_idx, is_training)
        finally:
            self.criterion = criterion
        rec.steps.append({"stage": rec.stage, "ce": seen["ce"].detach().clone(),
                          "y": y.detach().clone(), "pred": yhat.detach().argmax(1)})
        return out
    ref_loss.LossComputer.loss = recorded_loss

    sgd_step = torch.optim.SGD.step

    def recorded_step(self, *a, **k):
        out = sgd_step(self, *a, **k)
        rec.steps[-1]["sketch"] = rec.sketch(list(rec.model.state_dict().values()))
        return out
    torch.optim.SGD.step = recorded_step
    return notes


def write_inputs(work: Path, images: dict) -> None:
    import pandas as pd
    data_dir = work / "cub" / "data" / f"{TARGET}_{CONFOUNDER}"
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, sfx in ((0, ""), (1, "_val"), (2, "_test")):
        for y, b in zip(images["y" + sfx], images["b" + sfx]):
            rows.append({"img_id": len(rows), "img_filename": f"{len(rows)}.png",
                         "y": int(y), "split": split, "place": int(b)})
    pd.DataFrame(rows).to_csv(data_dir / "metadata.csv", index=False)


def run_script(ref: Path, argv: list[str], log: str) -> None:
    """Run one of their programs as ``__main__``, its stdout to the file ``log`` (their
    Logger closes the console it was given when it is collected: in one process that must
    not be the real stdout)."""
    sys.argv = [argv[0]] + [str(a) for a in argv[1:]]
    console = sys.stdout
    sys.stdout = open(log, "w")
    try:
        runpy.run_path(str(ref / argv[0]), run_name="__main__")
    finally:
        import gc
        gc.collect()
        if not sys.stdout.closed:
            sys.stdout.close()
        sys.stdout = console


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ref", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight_decay", type=float, default=1e-4)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--final_epoch", type=int, default=1)
    p.add_argument("--up_weight", type=int, default=5)
    p.add_argument("--jtt_epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    ref, work = args.ref.resolve(), args.work.resolve()
    out = args.out.resolve()
    with np.load(args.data) as f:
        images = {k: f[k] for k in f.files}
    work.mkdir(parents=True, exist_ok=True)
    write_inputs(work, images)
    rec = Recorder()
    notes = install(ref, rec, images)
    os.chdir(work)

    lr, wd, bs = args.lr, args.weight_decay, args.batch_size
    common = ["-s", "confounder", "-d", "CUB", "-t", TARGET, "-c", CONFOUNDER,
              "--batch_size", bs, "--root_dir", "./cub", "--lr", lr, "--weight_decay", wd,
              "--metadata_csv_name", "metadata.csv", "--model", "resnet50",
              "--use_bert_params", 0, "--loss_type", "erm", "--seed", args.seed]
    # 1. the ERM (identification) run
    erm_folder = f"ERM_upweight_0_epochs_{args.final_epoch + 1}_lr_{lr}_weight_decay_{wd}"
    erm_dir = f"results/CUB/{EXP}/{erm_folder}/model_outputs"
    rec.stage = 0
    run_script(ref, ["run_expt.py", *common, "--n_epochs", args.final_epoch + 1,
                     "--aug_col", "None", "--log_dir", erm_dir,
                     "--metadata_path", f"results/CUB/{EXP}/metadata_aug.csv", "--up_weight", 0],
               "erm.stdout")
    # 2. their error set
    run_script(ref, ["process_training.py", "--exp_name", EXP, "--dataset", "CUB",
                     "--folder_name", erm_folder, "--lr", lr, "--weight_decay", wd,
                     "--final_epoch", args.final_epoch, "--batch_size", bs],
               "process_training.stdout")
    jtt_root = f"{EXP}/train_downstream_{erm_folder}/final_epoch{args.final_epoch}"
    import pandas as pd
    aug = pd.read_csv(f"results/CUB/{jtt_root}/metadata_aug.csv")
    train_rows = aug[aug["split"] == 0]
    error_set = train_rows["wrong_1_times"].to_numpy().astype(bool)
    # 3. the JTT run
    jtt_dir = (f"results/CUB/{jtt_root}/JTT_upweight_{args.up_weight}_epochs_{args.jtt_epochs}"
               f"_lr_{lr}_weight_decay_{wd}/model_outputs")
    rec.stage = 1
    run_script(ref, ["run_expt.py", *common, "--n_epochs", args.jtt_epochs,
                     "--aug_col", "wrong_1_times", "--log_dir", jtt_dir,
                     "--metadata_path", f"results/CUB/{jtt_root}/metadata_aug.csv",
                     "--up_weight", args.up_weight], "jtt.stdout")
    rec.fetching = None

    # --- checks of the record against itself -------------------------------------------
    n = len(images["y"])
    assert len(rec.inits) == 2 and len(rec.train_sets) == 2
    same_init = all(torch.equal(rec.inits[0][k], rec.inits[1][k]) for k in rec.inits[0])
    jtt_set = rec.train_sets[1]
    pool = np.array([int(jtt_set[i][3]) for i in range(len(jtt_set))], dtype=np.int64)
    online = np.zeros(n, bool)   # training-pass predictions of epoch final_epoch
    steps_by_epoch, s = [], 0
    for e in rec.epochs:
        k = -(-len(e["positions"]) // bs)
        steps_by_epoch.append(list(range(s, s + k)))
        s += k
    assert s == len(rec.steps)
    batch_index, batch_sizes, stage, epoch_of = [], [], [], []
    for ei, e in enumerate(rec.epochs):
        fetched = np.array(e["fetched"], dtype=np.int64)
        order = (np.array(e["positions"]) if e["stage"] == 0
                 else pool[np.array(e["positions"])])
        assert np.array_equal(fetched, order), "fetched indices are not the sampler's order"
        lo = 0
        for si in steps_by_epoch[ei]:
            st = rec.steps[si]
            idx = fetched[lo:lo + len(st["ce"])]
            lo += len(idx)
            assert np.array_equal(images["y"][idx], st["y"].numpy())
            batch_index.append(idx)
            batch_sizes.append(len(idx))
            stage.append(e["stage"])
            epoch_of.append(ei)
            if e["stage"] == 0 and ei == args.final_epoch:
                online[idx] = st["pred"].numpy() != st["y"].numpy()
        assert lo == len(fetched)
    assert np.array_equal(online, error_set), "their error set is not epoch K's training pass"

    steps = len(rec.steps)
    perm_sizes = [len(e["positions"]) for e in rec.epochs]
    arrays = {
        "x": images["x"], "y": images["y"].astype(np.int64), "b": images["b"].astype(np.int64),
        "batch_index": np.concatenate(batch_index).astype(np.int32),
        "batch_sizes": np.array(batch_sizes, np.int32),
        "stage": np.array(stage, np.int8), "epoch": np.array(epoch_of, np.int16),
        "perm": np.concatenate([e["positions"] for e in rec.epochs]).astype(np.int32),
        "perm_sizes": np.array(perm_sizes, np.int32),
        "pool": pool.astype(np.int32),
        "error_set": error_set,
        "ce": torch.cat([st["ce"] for st in rec.steps]).numpy().astype(np.float32),
        "sketch": np.stack([st["sketch"] for st in rec.steps]),
        "init_sketch": np.stack([rec.sketch(list(sd.values())) for sd in rec.inits]),
        **state_arrays("init/", {k: v.float() for k, v in rec.inits[0].items()}),
    }
    if not same_init:
        arrays.update(state_arrays("init_final/", rec.inits[1]))
    commit = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    info = {"commit": commit, "steps": steps, "stage1_steps": int(sum(1 for x in stage if x == 0)),
            "epochs": [{"stage": e["stage"], "samples": len(e["positions"])} for e in rec.epochs],
            "error_set_size": int(error_set.sum()),
            "error_set_conflicting": int((error_set & (images["y"] != images["b"])).sum()),
            "conflicting": int((images["y"] != images["b"]).sum()),
            "same_init": bool(same_init), "pool_size": int(len(pool)),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__, "threads": torch.get_num_threads(), **notes}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_suffix(".record.npz"), **arrays)
    out.with_suffix(".record.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
