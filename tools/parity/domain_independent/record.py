"""Record Wang et al.'s Domain-Independent training (princetonvisualai/DomainBiasMitigation)
on a CIFAR-10S subset, from outside their code, as a debiaskit parity fixture.

Runs in an environment with the reference's requirements (torch, torchvision, numpy,
pillow, tensorboardX, scikit-learn); reads the subset written by make_data.py. Their code
runs as published, through their own entry points (``parse_args.collect_args`` with the
command line ``--experiment cifar-s_domain_independent --no_cuda``, then ``main.main``),
in a working directory laid out as their data loaders expect. From outside:
- ``torch.utils.data.DataLoader`` is wrapped: no worker processes, and the training
  loader's batch size (their 128) is set to ``--batch`` so that a few images make
  ``--epochs`` epochs of small steps (test loaders keep theirs);
- the network's initial weights are replaced, after their model is built, by
  ``seeded_state`` of tests/parity/replay_domain_independent.py (the same function the
  replay uses), so no weights are stored;
- their ``CifarDataset.__getitem__``, torchvision's ``RandomCrop.get_params`` and
  ``RandomHorizontalFlip.forward`` are wrapped to record each sample's index, crop offsets
  and flip; ``torch.nn.functional.nll_loss`` to record the per-sample loss their
  criterion computes; a step post-hook on their optimiser records the learning rate and
  sketches of the parameters and BatchNorm statistics after every step, and ends the run
  (an exception out of ``main.main``) after ``--epochs`` epochs;
- their ``_test`` is then called on their colour and grey test loaders for the logits of
  the trained network.

    python tools/parity/domain_independent/record.py --ref REF --data subset.npz \
        --work WORKDIR --out WORKDIR/record
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "src"))  # debiaskit.parity (numpy + torch only), for the replay module


def load_replay_module():
    path = REPO / "tests" / "parity" / "replay_domain_independent.py"
    spec = importlib.util.spec_from_file_location("replay_domain_independent", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StopRecording(Exception):
    pass


def write_reference_data(work: Path, data: dict) -> None:
    """The subset in the files and layout their CIFAR-10S Domain-Independent setting reads
    (images N x 32 x 32 x 3 uint8, labels as lists; class + 10 x domain for training)."""
    hwc = lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # noqa: E731
    skew = work / "data" / "cifar-s" / "p95.0"
    skew.mkdir(parents=True, exist_ok=True)
    b_test = data["b_test"]
    files = {
        skew / "train_imgs": hwc(data["x_train"]),
        skew / "train_2n_labels": [int(y + 10 * b) for y, b in zip(data["y_train"], data["b_train"])],
        skew / "train_domain_labels": [int(b) for b in data["b_train"]],
        work / "data" / "cifar_color_test_imgs": hwc(data["x_test"][b_test == 0]),
        work / "data" / "cifar_gray_test_imgs": hwc(data["x_test"][b_test == 1]),
        work / "data" / "cifar_test_labels": [int(y) for y in data["y_test"][b_test == 0]],
    }
    if not np.array_equal(data["y_test"][b_test == 0], data["y_test"][b_test == 1]):
        raise SystemExit("test images must be the same images in colour and in grey")
    for path, value in files.items():
        with open(path, "wb") as f:
            pickle.dump(value, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="checkout of princetonvisualai/DomainBiasMitigation")
    ap.add_argument("--data", required=True, help="subset .npz from make_data.py")
    ap.add_argument("--work", required=True, help="scratch working directory for their run")
    ap.add_argument("--out", required=True,
                    help="where the record goes (OUT.npz, OUT.json); "
                         "make_fixture.py turns it into the fixture")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--init-seed", type=int, default=1)
    ap.add_argument("--probe-seed", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(1)
    ref, work = Path(args.ref).resolve(), Path(args.work).resolve()
    commit = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    with np.load(args.data) as f:
        data = {k: f[k] for k in f.files}
    rp = load_replay_module()
    work.mkdir(parents=True, exist_ok=True)
    write_reference_data(work, data)
    os.chdir(work)
    sys.path.insert(0, str(ref))

    import torchvision.transforms as T
    rec = {"training": False, "current": None, "pending": [], "ce": [], "targets": [], "loss": [], "steps": []}

    real_loader = torch.utils.data.DataLoader

    def loader(dataset, *a, **kw):
        kw["num_workers"] = 0
        if kw.get("shuffle"):
            kw["batch_size"] = args.batch
        return real_loader(dataset, *a, **kw)
    torch.utils.data.DataLoader = loader

    from models import dataloader as their_data  # noqa: E402 (their module, from --ref)
    real_getitem = their_data.CifarDataset.__getitem__

    def getitem(self, index):
        rec["current"] = {"index": int(index)}
        out = real_getitem(self, index)
        if rec["training"] and self.transform is not None and rec["current"].get("crop"):
            rec["pending"].append(rec["current"])
        rec["current"] = None
        return out
    their_data.CifarDataset.__getitem__ = getitem

    real_get_params = T.RandomCrop.get_params

    def get_params(img, output_size):
        params = real_get_params(img, output_size)
        if rec["current"] is not None:
            rec["current"]["crop"] = (int(params[0]), int(params[1]))
        return params
    T.RandomCrop.get_params = staticmethod(get_params)

    real_flip = T.RandomHorizontalFlip.forward

    def flip_forward(self, img):
        out = real_flip(self, img)
        if rec["current"] is not None:
            rec["current"]["flip"] = out is not img
        return out
    T.RandomHorizontalFlip.forward = flip_forward

    functional = torch.nn.functional
    real_nll = functional.nll_loss

    def nll_loss(input, target, *a, **kw):
        out = real_nll(input, target, *a, **kw)
        if rec["training"]:
            rec["ce"].append(real_nll(input.detach(), target, reduction="none").clone())
            rec["targets"].append(target.detach().clone())
            rec["loss"].append(float(out.detach()))
        return out
    functional.nll_loss = nll_loss

    import main as their_main  # noqa: E402
    import parse_args  # noqa: E402
    sys.argv = ["main.py", "--experiment", "cifar-s_domain_independent",
                "--experiment_name", "parity", "--no_cuda"]
    model, opt = parse_args.collect_args()
    net = model.network
    state = net.state_dict()
    keys = list(state)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    init = rp.seeded_state(shapes, args.init_seed)
    net.load_state_dict(init)
    rng = np.random.default_rng(args.probe_seed)
    probes = {k: np.sort(rng.choice(v.numel(), rp.PROBE, replace=False)).astype(np.int32)
              for k, v in state.items() if v.dim() == 4 and v.numel() > rp.PROBE}
    sketches = rp.Sketches(init, {k: torch.from_numpy(v).long() for k, v in probes.items()})
    init_sketch = sketches(init)

    n = len(data["y_train"])
    steps_per_epoch = -(-n // args.batch)
    total = steps_per_epoch * args.epochs

    def after_step(optimizer, *_):
        batch = rec["pending"]
        rec["pending"] = []
        ce = rec["ce"][-1]
        if len(batch) != len(ce) or any("flip" not in s for s in batch):
            raise RuntimeError(f"step {len(rec['steps'])}: {len(batch)} samples recorded, "
                               f"loss over {len(ce)}")
        now = sketches(dict(net.state_dict()))
        rec["steps"].append({"samples": batch, "epoch": model.epoch,
                             "lr": optimizer.param_groups[0]["lr"], "sketch": now,
                             "batches_tracked": int(net.bn1.num_batches_tracked)})
        if len(rec["steps"]) == total:
            raise StopRecording
    model.optimizer.register_step_post_hook(after_step)

    rec["training"] = True
    try:
        their_main.main(model, opt)
    except StopRecording:
        pass
    rec["training"] = False
    if len(rec["steps"]) != total:
        raise SystemExit(f"recorded {len(rec['steps'])} steps, expected {total}")
    colour = model._test(model.test_color_loader, test_on_color=True)
    grey = model._test(model.test_gray_loader, test_on_color=False)

    samples = [s for step in rec["steps"] for s in step["samples"]]
    idx = np.array([s["index"] for s in samples], dtype=np.int64)
    ce = torch.cat(rec["ce"]).numpy().astype(np.float32)
    y2n = data["y_train"][idx] + 10 * data["b_train"][idx]
    if not np.array_equal(torch.cat(rec["targets"]).numpy(), y2n):
        raise SystemExit("their targets are not class + 10 x domain of the recorded indices")
    arrays = {
        **{k: data[k] for k in ("x_train", "y_train", "b_train", "train_index",
                                "x_test", "y_test", "b_test", "test_index")},
        "init_keys": np.array(keys), "init_seed": np.array(args.init_seed),
        **{f"probe/{k}": v for k, v in probes.items()},
        "init_sketch_params": init_sketch["params"], "init_sketch_bn": init_sketch["bn"],
        "batch_sizes": np.array([len(s["samples"]) for s in rec["steps"]], dtype=np.int64),
        "epoch_of_step": np.array([s["epoch"] for s in rec["steps"]], dtype=np.int64),
        "idx": idx,
        "crop_top": np.array([s["crop"][0] for s in samples], dtype=np.int64),
        "crop_left": np.array([s["crop"][1] for s in samples], dtype=np.int64),
        "flip": np.array([s["flip"] for s in samples], dtype=bool),
        "ce": ce, "loss": np.array(rec["loss"], dtype=np.float64),
        "lr": np.array([s["lr"] for s in rec["steps"]], dtype=np.float64),
        "sketch_params": np.stack([s["sketch"]["params"] for s in rec["steps"]]),
        "sketch_head": np.stack([s["sketch"]["head"] for s in rec["steps"]]),
        "sketch_bn": np.stack([s["sketch"]["bn"] for s in rec["steps"]]),
        "batches_tracked": np.array([s["batches_tracked"] for s in rec["steps"]], dtype=np.int64),
        "test_outputs": np.concatenate([colour["outputs"], grey["outputs"]]).astype(np.float32),
    }
    record = {
        "commit": commit, "torch": torch.__version__,
        "steps": total, "steps_per_epoch": steps_per_epoch,
        "their_test_accuracy": {
            "colour": {"conditional": float(colour["accuracy_conditional"]),
                       "sum": float(colour["accuracy_sum_out"])},
            "grey": {"conditional": float(grey["accuracy_conditional"]),
                     "sum": float(grey["accuracy_sum_out"])}},
        "mean_loss_first_last": [rec["loss"][0], rec["loss"][-1]],
    }
    out = Path(args.out)
    draft = Path(f"{out}.json")
    np.savez_compressed(f"{out}.npz", **arrays)
    draft.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
