"""Turn a record of tools/parity/cff/record.py into a parity fixture: the arrays the replay
needs and the manifest, whose ``measured`` comes from running tests/parity/replay_cff.py
(every step, also past the first failure) with the faithful options and the negative
control. Runs in debiaskit's own environment.

usage: python tools/parity/cff/make_fixture.py RECORD_BASE FIXTURE_NAME   (variant from the record)
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

from debiaskit.parity import TOLERANCES, load_fixture, write_fixture  # noqa: E402

FIXTURES = REPO / "tests" / "parity" / "fixtures"
REFERENCE_FILES = ["arch/lightning/base.py", "arch/lightning/in9.py",
                   "arch/inpainting/Baseline.py", "arch/saliency_utils.py", "arch/utils.py",
                   "train_pl.py"]

COMMON_HP = {"lr": None, "weight_decay": 1e-4, "cf_loss": "logp", "cf_logp_code": True,
             "grad_clip": 1.0}

VARIANTS = {
    "sal": {
        "hparams": {"cf": "random", "factual": "shuffle_batch", "sal_variant": "code",
                    "sal_range": "signed"},
        "negative": ({"sal_variant": "paper"},
                     "GradMask as the paper writes it (each image's target logit, the "
                     "background mean per image) instead of the authors' code's "
                     "batch-label sum averaged over all background values"),
        "what": "CF(Random) + F(Shuffle, the batch-level shuffle) + Sal (bbox_o, grad_y, "
                "lambda {reg_coeff:g}), SGD lr {base_lr:g}",
    },
    "sat": {
        # without Sal their step forwards originals, CF and F as one batch (joint); with
        # our batch-norm ResNet-20 in their place that is what ours must do to match
        "hparams": {"cf": "shuffle_batch", "factual": "random", "passes": "joint"},
        "negative": ({"cf_logp_code": False},
                     "the paper's -log(1 - p_y) computed stably (debiaskit's default) where "
                     "the authors' code caps it at -log(1e-20) = 46.05"),
        "what": "CF(Shuffle, the batch-level shuffle) + F(Random), head bias of class 0 "
                "raised by {saturate:g} at init (p_0 rounds to 1 in float32, margins about "
                "50-60: every class-0 counterfactual hits the 1e-20 cap, beyond the margins "
                "where the capped loss's gradient explodes), SGD lr {base_lr:g}",
    },
}

DIVERGENCES = [
    {"what": "GradMask's code variant in debiaskit took the gradient of the batch's distinct "
             "labels' logits (each once) and averaged over every image; the authors' "
             "get_grad_y sums every image's logits at every label of the batch (a label "
             "counted once per image carrying it) and bbox_o averages only over images with "
             "a foreground (has_bbox).",
     "action": "fixed in src/debiaskit/methods/cff.py (gradmask_of), tests/test_cff.py::"
               "test_gradmask_code_variant_counts_each_label_of_the_batch_per_image"},
    {"what": "Sal variants: the paper's GradMask (each image's target logit, squared input "
             "gradient on the background divided by the background's size per image, then "
             "averaged) is not what the code computes (see above).",
     "action": "option sal_variant (default paper; the fixture uses code; paper is the "
               "negative control of cff-bgshift-resnet20-24steps)"},
    {"what": "Input range: the authors' images are normalised to [-1, 1] and their saliency "
             "gradient is taken with respect to them (the paper's lambda refers to that); "
             "debiaskit took it with respect to its [0, 1] images, a penalty 4x larger at the "
             "same lambda.",
     "action": "fixed: option sal_range, default signed ([-1, 1] units, half the [0, 1] "
               "gradient); unit keeps the old scale; tests/test_cff.py::"
               "test_sal_range_unit_is_four_times_signed"},
    {"what": "With Sal on, the authors' step forwards the originals alone (inside the saliency "
             "function) and then the CF + F images in a second pass, so batch-norm statistics "
             "and running averages are per pass; debiaskit forwarded one concatenated batch.",
     "action": "fixed in src/debiaskit/methods/cff.py (loss), tests/test_cff.py::"
               "test_the_originals_go_through_the_network_alone_unless_passes_is_joint"},
    {"what": "The CF loss: the authors compute -log(1 - p_y) from max-shifted float32 "
             "exponentials with 1e-20 inside both logarithms, so once p_y rounds to 1 the "
             "loss is capped at 46.05 and its gradient vanishes (or explodes for margins "
             "between about 17 and 46); debiaskit's logp is the exact, stable value (with "
             "two classes their code is a cross-entropy to the other class, exact).",
     "action": "option cf_logp_code (authors_code, default False: the paper's formula); "
               "tests/test_cff.py::test_code_logp_loss_saturates_like_the_authors_code; "
               "fixture cff-bgshiftsat-resnet20-24steps"},
    {"what": "Their runs clip the gradient's L2 norm at 1.0 (train_pl.py passes "
             "gradient_clip_val=1.0 to Lightning); the paper does not say so and debiaskit "
             "did not clip.",
     "action": "option grad_clip (authors_code, default 0: off); tests/test_cff.py::"
               "test_grad_clip_bounds_the_gradient_norm_of_every_step"},
]

DEVIATIONS = [
    {"what": "debiaskit's counterfactual loss defaults to the exact -log(1 - p_y) "
             "(cf_logp_code off) and no gradient clipping (grad_clip 0).",
     "why": "the paper's formula; the cap and the clipping are artefacts of the authors' "
            "code and training framework, kept as options for parity"},
    {"what": "debiaskit's 'shuffle' infill permutes pixels within each image's region (the "
             "paper's wording); the authors' ShuffleInpainter permutes every value of the "
             "batch tensor (debiaskit's shuffle_batch, used by these fixtures).",
     "why": "the paper describes a per-region shuffle; shuffle_batch reproduces the code"},
    {"what": "The augmentations draw from a per-step generator of debiaskit's (resumable), "
             "not from torch's global generator as the authors' inpainters do.",
     "why": "resumed runs repeat their draws; the fixture injects the recorded draws"},
]


def main(record_base: str, name: str) -> None:
    base = Path(record_base)
    meta = json.loads(base.with_suffix(".record.json").read_text())
    with np.load(base.with_suffix(".record.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    variant = "sal" if meta["hparams"]["reg"] != "none" else "sat"
    record_cfg = meta["cfg"]
    spec = VARIANTS[variant]
    steps = len(arrays["batch_sizes"])
    hp = {**COMMON_HP, "lr": meta["hparams"]["base_lr"], **spec["hparams"]}
    if meta["hparams"]["reg"] != "none":
        hp["sal_lambda"] = meta["hparams"]["reg_coeff"]
    options = {"hparams": hp, "model_options": {"mean": [0.5] * 3, "std": [0.5] * 3},
               "optimizer": {"name": "sgd", "momentum": 0.9}, "num_classes": 10}
    negative, why = spec["negative"]
    n, bs = len(arrays["y"]), meta["hparams"]["batch"]
    compared = ["per-sample CE of the originals (abs 1e-5)",
                "per-sample CF loss and its logged mean (abs 1e-5)",
                "per-sample CE of the factual images (abs 1e-5)",
                "CF and F images: per image mean and RMS in [-1, 1] (abs 1e-5)",
                "the total loss (abs 1e-5)",
                "parameter sketch after each step (rel 1e-4)",
                "BN running-statistics sketch (rel 1e-4) and BN update count (exact)",
                "every recorded random draw consumed in order (exact)"]
    if variant == "sal":
        compared[4:4] = ["per-image mean over input values of the squared input gradient "
                         "on the background, [-1, 1] units (abs 1e-5)",
                         "GradMask penalty (abs 1e-5)"]
    manifest = {
        "method": "cff",
        "reference": {"repo": "zzzace2000/robust_cls_model", "commit": meta["commit"],
                      "files": REFERENCE_FILES},
        "record": {"recorder": "tools/parity/cff/record.py",
                   "command": (f"OMP_NUM_THREADS=1 python tools/parity/cff/record.py --ref "
                               f"CHECKOUT --variant {variant} --out RECORD (in the authors' "
                               f"environment: torch, scikit-learn, captum, advertorch), then "
                               f"python tools/parity/cff/make_fixture.py RECORD {name}"),
                   "torch": meta["torch"], "threads": 1,
                   "changes": (
                       "CPU, no loader workers, no fp16. Their Lightning Trainer cannot run "
                       "here (Lightning 1.2.8 does not import under torch 2.14): "
                       "pytorch_lightning is stubbed (LightningModule = nn.Module) and the "
                       "recorder drives their IN9LightningModel as Lightning's fit loop "
                       "does: training_step, backward, gradient-norm clipping at their "
                       "gradient_clip_val 1.0 (Lightning's 32-bit rule: coefficient "
                       "1 / (norm + 1e-6), at most 1), their configure_optimizers' SGD step "
                       "(momentum 0.9, weight decay 1e-4), zero_grad, their MultiStepLR "
                       "stepped per epoch (milestone 6 is never reached). Their network "
                       "(BiT ResNet-50) is replaced, through a subclass's init_setup, by "
                       "debiaskit's ResNet-20 on 16 x 16 inputs with identity input "
                       "normalisation (their images are already in [-1, 1]); the replay "
                       "trains the same class normalising [0, 1] images by mean = std = 0.5."
                       + (" The head bias of class 0 is raised by 80 at init." if
                          variant == "sat" else "") +
                       " Their published base.py looks get_grad_y up without importing it "
                       "(a NameError with --reg bbox_o): the recorder puts saliency_utils' "
                       "function into base.py's globals (wrapped to keep its input "
                       "gradient). advertorch (imported, unused) gets torch's removed "
                       "zero_gradients. Hooks: Tensor.uniform_, Tensor.normal_ and "
                       "torch.randperm wrapped during each step to record the inpainters' "
                       "draws; the module's inpaint / f_inpaint and counterfact_cri wrapped "
                       "to keep images, logits and labels; per-sample CF losses from their "
                       "counterfactual_ce_loss(reduction='none'). Batches: a seeded shuffle "
                       "per epoch (their DataLoader's shuffle), no augmentation transforms; "
                       "the data is bg_shift in the dict layout of their IN-9 loader.")},
        "data": {"name": "bg_shift 16x16 subset",
                 "selection": (f"debiaskit bg_shift (conflict_ratio 0.05, train_per_class 3, "
                               f"seed 0) training images at positions {meta['order']}, "
                               f"2x2 mean-pooled to 16x16 uint8 (rounded half up), masks: "
                               f">= 2 of 4 pixels; the mask of the sixth image cleared (an "
                               f"image without foreground); {n} images, batch {bs}: "
                               f"{-(-n // bs)} steps per epoch, the last of {n % bs or bs}"),
                 "sha256": meta["sha256"],
                 "sha256_of": "the uint8 images (x) followed by np.packbits(masks)",
                 "stored": "images and masks in the npz",
                 "draw_kinds": meta["draw_kinds"], "buffer_names": meta["buffer_names"],
                 "their_noise_std": 0.2},
        "network": "resnet20",
        "steps": steps,
        "replay": "cff",
        "options": options,
        "negative_control": {"options": {**options, "hparams": {**hp, **negative}},
                             "why": why},
        "compared": compared,
        "tolerances": dict(TOLERANCES),
        "measured": {"options": {}, "negative_control": {}},
        "divergences": DIVERGENCES,
        "deviations": DEVIATIONS,
        "notes": (f"{spec['what'].format(**{**meta['hparams'], **record_cfg})}. Their "
                  f"hyper-parameters: {json.dumps(meta['hparams'])}. "
                  "Per step their p_max over counterfactuals: "
                  f"{[round(p, 6) for p in meta['p_max_cf']]}."),
    }
    manifest["data"] = {k: manifest["data"][k] for k in manifest["data"]}
    path = FIXTURES / name
    write_fixture(path, arrays, manifest)
    import replay_cff  # noqa: E402  (tests/parity on the path)
    torch.set_num_threads(1)
    fixture = load_fixture(path.with_suffix(".json"))
    for which, opts in (("options", options), ("negative_control",
                                                manifest["negative_control"]["options"])):
        result = replay_cff.replay(fixture, opts, stop_early=False)
        manifest["measured"][which] = result.as_record()
        print(which, result.summary())
    extra = {}
    for label, change in (("sal_range unit", {"sal_range": "unit"}),
                          ("grad_clip off", {"grad_clip": 0.0}),
                          ("cf_logp_code off", {"cf_logp_code": False}),
                          ("sal_variant paper", {"sal_variant": "paper"})):
        if all(hp.get(k) == v for k, v in change.items()) or \
                (variant == "sat" and label.startswith("sal")):
            continue
        result = replay_cff.replay(fixture, {**options, "hparams": {**hp, **change}})
        fail = result.first_failure
        extra[label] = ("passes" if fail is None else
                        f"fails at step {fail[0]} on {fail[1]} ({fail[2]:.2g})")
    # robustness: the faithful options from initial weights perturbed at rounding level
    rng = np.random.default_rng(1)
    shaken = {k: (v * (1 + 1e-7 * rng.standard_normal(v.shape))).astype(v.dtype)
              if k.startswith("init/") and v.dtype == np.float32 and "running" not in k
              and k not in ("init/mean", "init/std") else v for k, v in arrays.items()}
    result = replay_cff.replay(dataclasses.replace(fixture, arrays=shaken), options,
                               stop_early=False)
    with torch.backends.mkldnn.flags(enabled=False):
        other_kernels = replay_cff.replay(fixture, options, stop_early=False)
    fail = other_kernels.first_failure
    manifest["notes"] += (
        " Bitwise on the recording machine's kernels. Other convolution kernels (replay with "
        "oneDNN off; step-0 CE differs by about 1e-6): " + (
            "within tolerance" if fail is None else
            f"first failure at step {fail[0]} on {fail[1]} ({fail[2]:.2g})") +
        ("; the input gradient of a ReLU network jumps where rounding flips an activation, "
         "so the saliency terms are the first to leave 1e-5" if variant == "sal" else
         "; this record's logits are about 56 (float32 spacing 3.8e-6), so its "
         "cross-entropies have little room under 1e-5") +
        ". A platform whose convolutions round differently may need a re-record "
        "(README.md).")
    manifest["notes"] += (" Other wrong options (replay stopped at the first failure): "
                          + "; ".join(f"{k} {v}" for k, v in extra.items()) + ". "
                          "Rounding sensitivity: the faithful options from initial weights "
                          "perturbed by a relative 1e-7 (float32 rounding): "
                          + result.summary() + ".")
    write_fixture(path, arrays, manifest)
    print(json.dumps(extra, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "tests" / "parity"))
    main(sys.argv[1], sys.argv[2])
