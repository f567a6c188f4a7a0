"""Turn a JTT record (record.py's REC.record.npz / .json) into the parity fixture, replay it
through debiaskit (tests/parity/replay_jtt.py) with the faithful options, the negative
control and the other single-option flips, and write the measurements into the manifest.

usage (debiaskit's venv): python tools/parity/jtt/measure.py REC [FIXTURE_DIR]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))

from debiaskit.parity import TOLERANCES, load_fixture, write_fixture  # noqa: E402

FIXTURES = ROOT / "tests" / "parity" / "fixtures"
REF_FILES = ["run_expt.py", "train.py", "loss.py", "process_training.py", "utils.py",
             "data/dro_dataset.py", "data/folds.py", "data/confounder_utils.py",
             "data/confounder_dataset.py", "data/data.py", "generate_downstream.py"]


def manifest_for(info: dict, arrays: dict, name: str) -> dict:
    a = info["args"]
    steps = info["steps"]
    T = a["final_epoch"] + 1
    hparams = {"lr": a["lr"], "weight_decay": a["weight_decay"], "identification_epochs": T,
               "upweight": a["up_weight"], "error_set_from": "training_pass",
               "upweight_adds_copies": True, "same_init": True}
    options = {"hparams": hparams, "model_options": {},
               "optimizer": {"name": "sgd", "momentum": 0.9}, "batch_size": a["batch_size"],
               "seed": 0}
    negative = json.loads(json.dumps(options))
    negative["hparams"]["error_set_from"] = "model"
    cmd = (f"OMP_NUM_THREADS=1 REF_PYTHON tools/parity/jtt/record.py "
           f"--ref WORK/ref --data WORK/cmnist250.npz "
           f"--work WORK/run --out WORK/rec --lr {a['lr']} "
           f"--batch_size {a['batch_size']} --final_epoch {a['final_epoch']} "
           f"--up_weight {a['up_weight']} --jtt_epochs {a['jtt_epochs']}  "
           "(data: DEBIASKIT_DATA=/work/shared/data python tools/parity/jtt/make_data.py "
           "WORK/cmnist250.npz; fixture: python tools/parity/jtt/measure.py "
           "WORK/rec)")
    s1 = info["stage1_steps"]
    n = len(arrays["y"])
    return {
        "method": "jtt",
        "reference": {"repo": "anniesch/jtt", "commit": info["commit"], "files": REF_FILES},
        "record": {
            "recorder": "tools/parity/jtt/record.py", "command": cmd,
            "torch": info["torch"], "threads": info["threads"],
            "changes": (
                "Their three programs run unedited, in one process, each as __main__ via runpy "
                "with the command lines generate_downstream.py writes (ERM run: run_expt.py "
                f"--n_epochs {T} --up_weight 0; process_training.py --final_epoch "
                f"{a['final_epoch']}; JTT run: run_expt.py --up_weight {a['up_weight']} --aug_col "
                f"wrong_1_times --n_epochs {a['jtt_epochs']}; -d CUB, --lr {a['lr']} "
                f"--weight_decay {a['weight_decay']} --batch_size {a['batch_size']}, no --wandb). "
                "Monkeypatched from the recorder: device (train.device = cpu, Tensor.cuda "
                "returns the tensor), loaders (num_workers 0, pin_memory False), the data (their "
                "CUB constructor in data.confounder_utils replaced by a subclass of their "
                "ConfounderDataset serving the Colored MNIST subset from memory, uint8/255 "
                "without transforms; the metadata.csv their scripts read is written by the "
                "recorder with y = digit and place = colour, so their CUB branch's spurious = "
                "bias-conflicting), the network (utils.get_model returns a 2352-100-100-100-10 "
                "ReLU MLP equal to debiaskit's mlp, torch default init under their set_seed; "
                "their code has only ResNets/BERT), unused imports (wandb, pytorch_transformers, "
                "transformers) stubbed, torch._utils._accumulate (imported by data/folds.py, "
                "unused, gone from torch) = itertools.accumulate, and each program's stdout "
                "sent to a file (their Logger closes the console it holds). Recorded through "
                "wrappers: RandomSampler.__iter__ (each training epoch's permutation), the "
                "dataset's __getitem__ (indices fetched), LossComputer.loss (per-sample CE, "
                "predictions), SGD.step (parameter sketch after each step), utils.get_model "
                "(initial weights), and their upsampled ConcatDataset read position by "
                "position; their error set is read from their metadata_aug.csv and checked "
                "to equal the recorded training-pass predictions of epoch final_epoch.")},
        "data": {
            "name": "colored_mnist (debiaskit protocol, conflict_ratio 0.05, severity 4, seed 0)",
            "selection": (f"debiaskit.train.random_subset(train, {n}, seed 0) of the protocol's "
                          "training split (tools/parity/jtt/make_data.py); images, targets and "
                          "colours stored in the npz. The reference's val/test splits (evaluated "
                          "by its loop, never trained on) are 2 x 24 images of the test split, "
                          "not stored."),
            "sha256": hashlib.sha256(np.ascontiguousarray(arrays["x"]).tobytes()).hexdigest()},
        "network": "mlp", "steps": steps, "replay": "jtt",
        "options": options,
        "negative_control": {
            "options": negative,
            "why": ("the paper's error set (the identification model after T epochs, one "
                    "evaluation pass) instead of the training-pass predictions their "
                    "process_training.py reads: a different error set, so stage 2 differs")},
        "compared": [
            f"stage 1 ({s1} steps, identifier) and stage 2 ({steps - s1} steps, final model): "
            "batch dataset indices (abs 1e-5, i.e. equal), per-sample CE (abs 1e-5), "
            "parameter sketch of the trained network after each step (rel 1e-4)",
            f"at step {s1}: the error set (bool per training sample, abs), the stage-2 epoch's "
            "index list from begin_epoch against their upsampled dataset (abs), the final "
            "model's initial parameter sketch, built by debiaskit's JTT, against their JTT "
            "run's (rel 1e-4)"],
        "tolerances": dict(TOLERANCES),
        "measured": {},
        "divergences": [
            {"what": ("Error set: their code (process_training.py) takes the predictions the ERM "
                      "run logged during the training pass of epoch --final_epoch (train mode, "
                      "each sample predicted before its batch's SGD step; output_train_epoch_K."
                      "csv), argmax != label; the paper's Algorithm 1 and debiaskit use the "
                      "finished identification model. Also an off-by-one: their --final_epoch K "
                      "is 0-based, so the paper's T (e.g. CelebA T=1, README --final_epoch 1) "
                      "means predictions made during the (T+1)-th epoch."),
             "action": ("became option error_set_from='training_pass' (authors_code; default "
                        "'model', the paper) in src/debiaskit/methods/jtt.py; with it "
                        "identification_epochs = K + 1; test "
                        "test_jtt_training_pass_error_set_and_code_options in "
                        "tests/test_baselines.py")},
            {"what": ("Upsampling count: their run_expt.py appends Subset(train, error_indices * "
                      "up_weight) to the training set, so an error-set sample appears "
                      "up_weight + 1 times; the paper's Algorithm 1 (and debiaskit) has it "
                      "lambda_up times."),
             "action": "became option upweight_adds_copies (authors_code; default False, the paper)"},
            {"what": ("Final model's initialisation: their two runs build the network after the "
                      "same set_seed(args.seed) (and from the same pretrained weights), so the "
                      "final model starts from the identification model's initial weights "
                      "(checked: identical in this record); debiaskit drew an independent "
                      "initialisation."),
             "action": "became option same_init (authors_code; default False)"},
        ],
        "deviations": [
            {"what": "debiaskit's JTT default optimiser is Adam (lr 1e-3, no weight decay); their "
                     "image models train with SGD (momentum 0.9, weight decay)",
             "why": ("SiH's label-free comparison protocol trains every method with Adam; the "
                     "fixture uses the run option optimizer=sgd, momentum 0.9 "
                     "(method.override_optimizers), which reproduces torch.optim.SGD exactly")},
            {"what": "their ERM and JTT runs take separate --lr / --weight_decay (e.g. MultiNLI "
                     "2e-5/0 vs 1e-5/0.1); debiaskit has one lr and weight decay for both stages",
             "why": "one hyper-parameter pair per method; the fixture uses equal values"},
            {"what": "their ERM run is trained for its full n_epochs and only epoch K's logged "
                     "predictions are used; debiaskit trains the identifier for T epochs only",
             "why": "the later ERM epochs do not influence JTT; the record runs K + 1 epochs"},
        ],
        "notes": (
            f"{n} training images ({info['conflicting']} conflicting), batch {a['batch_size']}: stage 1 is "
            f"{T} epochs x {-(-n // a['batch_size'])} steps (last batch {n % a['batch_size']} "
            f"images), their error set has {info['error_set_size']} samples "
            f"({info['error_set_conflicting']} conflicting), stage 2 is {a['jtt_epochs']} "
            f"epochs of {info['pool_size']} samples ({-(-info['pool_size'] // a['batch_size'])} "
            f"steps, last batch {info['pool_size'] % a['batch_size']} image). lr "
            f"{a['lr']} (their default 1e-3; an MLP from scratch needs more to learn the "
            f"colour in {T} epochs), weight decay {a['weight_decay']} (their default), "
            f"lambda_up {a['up_weight']} (their grid is 20/50/100; small keeps stage 2 short). "
            "measured.error_sets: the error set debiaskit builds with the faithful options and "
            "with the negative control (the paper's: the identifier after T epochs), and how "
            "many samples each differs from theirs in. "
            "Predictions in their loop are made in train mode; the MLP has no layer whose "
            "train/eval behaviour differs. The other authors'-code options flipped one at a "
            "time also fail at the first stage-2 step (measured.other_flips).")}


def build(rec: Path, fixtures: Path) -> Path:
    info = json.loads(rec.with_suffix(".record.json").read_text())
    with np.load(rec.with_suffix(".record.npz")) as f:
        arrays = {k: f[k] for k in f.files}
    assert info["same_init"] and not any(k.startswith("init_final/") for k in arrays)
    name = f"jtt-cmnist-mlp-{info['steps']}steps"
    manifest = manifest_for(info, arrays, name)
    path = write_fixture(fixtures / name, arrays, manifest)
    return path


def measure(path: Path) -> dict:
    from parity.replay_jtt import replay
    from debiaskit.methods.jtt import JTT
    torch.set_num_threads(1)
    fx = load_fixture(path)
    out = {}
    error_sets = {}
    begin_epoch = JTT.begin_epoch

    def capture(self, epoch, loader):   # the error set each variant trains stage 2 on
        pool = begin_epoch(self, epoch, loader)
        if pool is not None and which not in error_sets:
            error_sets[which] = self.tables["error_set"].errors.clone().numpy()
        return pool
    JTT.begin_epoch = capture
    try:
        for which, opts in (("options", fx.manifest["options"]),
                            ("negative_control", fx.manifest["negative_control"]["options"])):
            result = replay(fx, opts)
            print(which, result.summary())
            out[which] = result.as_record()
    finally:
        JTT.begin_epoch = begin_epoch
    theirs, conflicting = fx["error_set"], fx["y"] != fx["b"]
    out["error_sets"] = {
        k: {"size": int(v.sum()), "conflicting": int((v & conflicting).sum()),
            "differs_from_theirs": int((v ^ theirs).sum())} for k, v in error_sets.items()}
    print(out["error_sets"])
    others = {}
    for key, value in (("upweight_adds_copies", False), ("same_init", False)):
        opts = json.loads(json.dumps(fx.manifest["options"]))
        opts["hparams"][key] = value
        result = replay(fx, opts)
        print(f"{key}={value}", result.summary())
        others[f"{key}={value}"] = result.as_record()
    out["other_flips"] = others
    return out


def main() -> None:
    rec = Path(sys.argv[1])
    fixtures = Path(sys.argv[2]) if len(sys.argv) > 2 else FIXTURES
    path = build(rec, fixtures)
    measured = measure(path)
    fx = load_fixture(path)
    manifest = fx.manifest
    manifest["measured"] = measured
    write_fixture(path, fx.arrays, manifest)
    print(path, path.with_suffix(".npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
