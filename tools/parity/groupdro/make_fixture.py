"""Build the groupdro parity fixture from make_data.py's subset and record.py's record,
replay it through debiaskit (tests/parity/replay_groupdro.py) with the faithful options
and with the negative control, and write the measured differences into the manifest.

usage (debiaskit's venv): python make_fixture.py DATA.npz RECORD.npz [--command "..."]
       python make_fixture.py --measure-only   (re-measure the committed fixture)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))

from debiaskit.parity import load_fixture, write_fixture  # noqa: E402
from parity.replay_groupdro import replay  # noqa: E402

STEPS = 32
NAME = ROOT / "tests" / "parity" / "fixtures" / f"groupdro-cmnist-mlp-{STEPS}steps"
COMMIT = "cbbc1c5b06844e46b87e264326b56056d2a437d1"
HPARAMS = {"lr": 0.01, "weight_decay": 1e-3, "eta": 0.05, "adjustment": 1.0}
RECORD_COMMAND = ("OMP_NUM_THREADS=1 python tools/parity/groupdro/record.py --ref REF "
                  "--data data.npz --out record.npz --seed 0 --epochs 2 --batch-size 64 "
                  "--lr 0.01 --weight-decay 1e-3 --eta 0.05 --adjustment 1.0")


def manifest(data: dict, record_torch: str) -> dict:
    faithful = {"hparams": {**HPARAMS, "adjust_absent": True},
                "optimizer": {"name": "sgd", "momentum": 0.9}, "model_options": {}}
    negative = {**faithful, "hparams": {**HPARAMS, "adjust_absent": False}}
    return {
        "method": "groupdro",
        "reference": {"repo": "kohpangwei/group_DRO", "commit": COMMIT,
                      "files": ["train.py", "loss.py", "data/dro_dataset.py", "utils.py"]},
        "record": {
            "recorder": "tools/parity/groupdro/record.py",
            "command": RECORD_COMMAND + "  (data.npz from: DEBIASKIT_DATA=... python "
                       "tools/parity/groupdro/make_data.py data.npz)",
            "torch": record_torch, "threads": 1,
            "changes": (
                "CPU: torch.Tensor.cuda and nn.Module.cuda replaced by identities; loaders "
                "num_workers=0, pin_memory=False; pytorch_transformers (BERT only) stubbed. "
                "Their run_expt.py main() is not run (it knows only CelebA/CUB/MultiNLI/CIFAR "
                "and ResNet/BERT): the recorder builds their DRODataset over our Colored MNIST "
                "subset (group = y*10 + colour, their ConfounderDataset's convention) and "
                "debiaskit's MLP architecture as an nn.Sequential after their set_seed(0), "
                "then calls their train.train unchanged with the arguments run_expt would pass "
                "(--robust --generalization_adjustment 1.0 --robust_step_size 0.05 --lr 0.01 "
                "--weight_decay 1e-3 --batch_size 64 --n_epochs 2, alpha 0.2, gamma 0.1, no "
                "--use_normalized_loss, no --btl, no --scheduler, no --reweight_groups; their "
                "validation pass after each epoch runs on 200 test images and trains nothing). "
                "Hooked from outside: the training dataset logs the indices it serves; "
                "LossComputer.loss and compute_group_avg are wrapped (class attributes) to read "
                "per-sample losses (forward hook on the criterion), per-group losses and counts "
                "(cloned before compute_robust_loss adds the adjustment in place), the robust "
                "loss and adv_probs; a global optimizer step post-hook sketches the parameters."),
        },
        "data": {
            "name": "colored_mnist (debiaskit protocol: conflict_ratio 0.05, severity 4, seed 0)",
            "selection": ("tools/parity/groupdro/make_data.py: from the protocol's training split, "
                          "numpy default_rng(20261207): 90 aligned images per class, 1 image of "
                          "each of the 90 conflicting (class, colour) groups, 10 more conflicting "
                          "ones; 1,000 images sorted by index (source_index in the npz). All 100 "
                          "groups are non-empty (their code divides by sqrt of the training "
                          "count), 90 of them have 1-2 images, so every batch misses 79-89 "
                          "groups. 1,000 = 15 x 64 + 40: step 15 is a partial batch, step 16 "
                          "starts epoch 2."),
            "sha256": hashlib.sha256(np.ascontiguousarray(data["x"]).tobytes()).hexdigest(),
        },
        "network": "mlp", "steps": STEPS, "replay": "groupdro",
        "options": faithful,
        "negative_control": {
            "options": negative,
            "why": ("debiaskit's default (Algorithm 1): groups absent from a batch keep their "
                    "weight; the authors' code multiplies it by exp(eta C / sqrt(n_g))")},
        "compared": [
            "training-set group counts n_g the adjustment divides by (abs 1e-5, once)",
            "group ids of each batch, y * 10 + colour (abs 1e-5)",
            "per-sample cross-entropy of the model's logits (abs 1e-5)",
            "per-group counts in the batch and per-group mean cross-entropy (abs 1e-5)",
            "group weights q after each step = their adv_probs (abs 1e-5)",
            "the step's objective = their robust loss, sum_g q_g (L_g + C/sqrt(n_g)) over the "
            "groups updated (abs 1e-5)",
            "16-row sketch of the MLP's parameters after each step (rel 1e-4)"],
        "tolerances": {"abs": 1e-5, "rel": 1e-4},
        "measured": {},
        "divergences": [
            {"what": ("Absent groups with the generalisation adjustment on: their "
                      "LossComputer.compute_robust_loss updates every group's weight with the "
                      "batch's group loss plus C/sqrt(n_g), n_g the TRAINING-set group count "
                      "(DRODataset.group_counts of the training data, not batch counts); a group "
                      "missing from the batch has loss 0 (compute_group_avg divides by max(count, "
                      "1)), so its weight still grows by exp(eta C/sqrt(n_g)) each batch that "
                      "misses it (relative to present groups, whose factor also has their loss). "
                      "Algorithm 1 of Sagawa et al. (2020) updates only the sampled group's "
                      "weight; debiaskit updated only the groups present. Without the adjustment "
                      "both agree (exp(0) = 1)."),
             "action": ("became option groupdro.adjust_absent (HParam, authors_code=True, default "
                        "False per the paper), in src/debiaskit/methods/groupdro.py, test "
                        "tests/test_baselines.py::test_groupdro_adjust_absent_raises_missing_groups; "
                        "this fixture uses it (negative control: the default, fails at step 0 on q)")},
            {"what": ("Their robust loss includes the constant q_g C/sqrt(n_g) of every group "
                      "(in-place addition to the group losses), also of absent groups; "
                      "debiaskit's logged objective included only present groups'."),
             "action": ("with adjust_absent=True debiaskit's objective also counts the absent "
                        "groups' terms (same option); gradients never depended on it")},
        ],
        "deviations": [
            {"what": "debiaskit's default optimiser for groupdro is Adam (lr 1e-3); their "
                     "train.py uses SGD with momentum 0.9 and weight decay for non-BERT models",
             "why": "debiaskit's papers' default across methods; the run options --optimizer sgd "
                    "--momentum 0.9 reproduce theirs (this fixture: override_optimizers(name='sgd', "
                    "momentum=0.9))"},
            {"what": "a group with no training sample: their adjustment C/sqrt(0) is inf and "
                     "adv_probs become NaN; debiaskit divides by sqrt(max(n_g, 1))",
             "why": "Colored MNIST subsets can lack a (class, colour) group; the fixture's data "
                    "has every group so it does not exercise this"},
            {"what": "their adjustment applies only if every group's C is > 0 (a vector with one "
                     "0 turns it off entirely) and may be a per-group vector; debiaskit's is one "
                     "scalar C",
             "why": "the paper's adjustment is one C (tuned over a grid); not needed here"},
            {"what": "their LossComputer options use_normalized_loss (adjusted losses divided by "
                     "their sum before the q update), btl (greedy top-alpha weighting by an EMA) "
                     "and minimum_variational_weight have no debiaskit counterpart",
             "why": "off by default in their run_expt.py and not part of the paper's method; "
                    "recorded with all three off"},
        ],
        "notes": ("Their per-sample losses come from CrossEntropyLoss(reduction='none') as in "
                  "run_expt.py; the recorded group losses are the unadjusted batch means. "
                  "No random draw happens inside a step (the only randomness, the loader's "
                  "shuffle, is replayed through the recorded indices). The images are stored "
                  "in the npz (uint8). Checked when the fixture was made, not stored: a second "
                  "record with --generalization_adjustment 0.0 replays within the same "
                  "tolerances with debiaskit's default (adjust_absent off; on changes nothing "
                  "there), so the absent-group update is the only difference; against that "
                  "record a wrong eta (0.01 for 0.05) fails at step 0 on q (8.5e-4) and "
                  "debiaskit's default Adam at step 0 on the parameters."),
    }


def measure(path: Path) -> dict:
    fixture = load_fixture(path)
    torch.set_num_threads(1)
    out = {}
    for key, options in (("options", fixture.manifest["options"]),
                         ("negative_control", fixture.manifest["negative_control"]["options"])):
        result = replay(fixture, options)
        print(key, result.summary())
        out[key] = result.as_record()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data", nargs="?")
    p.add_argument("record", nargs="?")
    p.add_argument("--record-torch", default=torch.__version__)
    p.add_argument("--measure-only", action="store_true")
    a = p.parse_args()
    if not a.measure_only:
        data, rec = dict(np.load(a.data)), dict(np.load(a.record))
        assert len(rec["batch_sizes"]) == STEPS, len(rec["batch_sizes"])
        arrays = {"x": data["x"], "y": data["y"].astype(np.int8), "b": data["b"].astype(np.int8),
                  "source_index": data["source_index"].astype(np.int32),
                  "batch_sizes": rec["batch_sizes"].astype(np.int32),
                  "index": rec["index"].astype(np.int16), "group": rec["group"].astype(np.int16),
                  "per_sample_loss": rec["per_sample_loss"].astype(np.float32),
                  "group_loss": rec["group_loss"].astype(np.float32),
                  "group_count": rec["group_count"].astype(np.int16),
                  "train_group_counts": rec["train_group_counts"].astype(np.int16),
                  "q": rec["q"].astype(np.float32),
                  "robust_loss": rec["robust_loss"].astype(np.float64),
                  "sketch": rec["sketch"].astype(np.float64)}
        arrays.update({k: v for k, v in rec.items() if k.startswith("init/")})
        write_fixture(NAME, arrays, manifest(data, a.record_torch))
    path = NAME.with_suffix(".json")
    fixture = load_fixture(path)
    fixture.manifest["measured"] = measure(path)
    write_fixture(NAME, fixture.arrays, fixture.manifest)
    print(path, path.stat().st_size + NAME.with_suffix(".npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
