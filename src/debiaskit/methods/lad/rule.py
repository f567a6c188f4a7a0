"""LAD's walk-length rule: alpha and the number of walk steps chosen without bias labels.

The paper's alpha and step counts were "determined using a brief hyper-parameter search
and cross validation" on the authors' own latent scale (LAD, Sec. 5.1); ours has a
different scale, so :class:`~debiaskit.methods.lad.LAD` repeats the search on the run's
training data when ``alpha`` or ``walk_steps`` is 0 (the defaults). The rule:

1. hold out ``walk_rule_images`` training images (drawn with the run's seed) and fit a
   bias classifier ``f'`` with the run's ``f`` settings on the others; the VQ-VAE, which
   never sees a label, is the run's;
2. walk the held-out latents with ``f'`` and the run's other walk settings, once per
   candidate step size (``walk_rule_alphas``, in code spacings: ``alpha_units="spacing"``)
   for up to ``walk_rule_max_steps`` steps, and record after every step ``f'``'s mean
   predictive entropy and the mean stroke IoU of the decoded walked image against the
   decoded start (:mod:`debiaskit.data.strokes`): whether the walk keeps the digit as the
   VQ-VAE draws it (how well the VQ-VAE draws it is its own matter, reported by the walk
   diagnostic);
3. choose the shortest walk (step size x steps, in code spacings; ties: the smaller step)
   that reaches the paper's end state, ``f'`` unsure (mean entropy >= ``walk_rule_entropy``
   x log K), while keeping the digit (IoU >= ``walk_rule_iou``). If no walk does, the walk
   with the highest entropy among those that keep the digit is chosen (``met`` False);
   if no step keeps it, the smallest step size, one step.

It uses the class labels (as ``f`` does), never bias labels, masks or test data. With
``alpha`` given and ``walk_steps`` 0 only the step count is searched (in the run's
``alpha_units``); with ``walk_steps`` given and ``alpha`` 0 only the step size.
"""

from __future__ import annotations

import math

import torch

from ...data.dataset import BiasedDataset
from ...data.strokes import mask_iou, stroke_rule
from ...errors import ConfigError
from .walk import predictive_entropy

#: Batch of the rule's walks (each step is decoded to read the strokes).
RULE_BATCH = 500


def parse_alphas(text: str) -> list[float]:
    """``"0.05,0.1"`` -> ``[0.05, 0.1]`` (sorted, positive), or a ConfigError saying what to give."""
    try:
        values = sorted(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = []
    if not values or values[0] <= 0:
        raise ConfigError(f"lad.walk_rule_alphas={text!r}: give positive step sizes in code "
                          "spacings separated by commas, e.g. 0.05,0.1,0.2")
    return values


def check_rule_data(train: BiasedDataset):
    """The stroke reader the rule uses on ``train``; a ConfigError for data without one."""
    return stroke_rule(train.name, "LAD's walk-length rule",
                "give --hp alpha=... --hp walk_steps=... (the paper: 0.1 / 20 BG MNIST, "
                "0.1 / 7 FG MNIST, 0.07 / 4 CIFAR)")


def choose(curves: list[dict], entropy_bar: float, iou_bar: float,
           fixed_steps: int | None = None) -> dict:
    """The rule's choice from per-candidate curves (``alpha``, per-step ``entropy`` and
    ``shape_iou``, step 1 first): see the module docstring. ``fixed_steps`` restricts the
    choice to that step."""
    options = []
    for curve in curves:
        for i, (entropy, iou) in enumerate(zip(curve["entropy"], curve["shape_iou"])):
            steps = i + 1
            if fixed_steps is not None and steps != fixed_steps:
                continue
            # rounded: 3 x 0.1 and 1 x 0.3 are the same length
            options.append({"alpha": curve["alpha"], "walk_steps": steps,
                            "length": round(curve["alpha"] * steps, 9), "entropy": entropy,
                            "shape_iou": iou})
    met = [o for o in options if o["entropy"] >= entropy_bar and o["shape_iou"] >= iou_bar]
    if met:
        return {**min(met, key=lambda o: (o["length"], o["alpha"])), "met": True}
    kept = [o for o in options if o["shape_iou"] >= iou_bar]
    if kept:
        return {**max(kept, key=lambda o: (o["entropy"], -o["length"])), "met": False}
    first = min(options, key=lambda o: (o["alpha"], o["walk_steps"]))
    return {**first, "met": False}


def walk_rule(method, vqvae, codes: torch.Tensor, train: BiasedDataset, seed: int,
              device) -> tuple[dict, dict]:
    """Run the rule for ``method`` (a :class:`~debiaskit.methods.lad.LAD`) on ``train``
    (its codes ``codes``); returns ``({}, stats)`` for the stage store, ``stats`` holding
    the choice (``alpha``, ``alpha_units``, ``walk_steps``, ``met``) and every curve."""
    hp = method.hp
    read_stroke = check_rule_data(train)
    n = len(train)
    held = min(hp["walk_rule_images"], n // 2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    held_idx, fit_idx = order[:held].sort().values, order[held:].sort().values
    fit_set = train.subset(fit_idx)
    f_art, f_stats = method.train_bias_classifier(vqvae, codes[fit_idx.to(codes.device)],
                                                  fit_set, seed, device)
    f = method.load_bias_classifier(vqvae, train.num_classes, f_art, device)
    if hp["alpha"]:
        alphas, units = [hp["alpha"]], hp["alpha_units"]
    else:
        alphas, units = parse_alphas(hp["walk_rule_alphas"]), "spacing"
    max_steps = hp["walk_steps"] or hp["walk_rule_max_steps"]
    unit = method.step_unit(vqvae, codes)
    x = train.x[held_idx]
    held_codes = codes[held_idx.to(codes.device)]
    curves = []
    for alpha in alphas:
        sums = {"entropy": [0.0] * max_steps, "shape_iou": [0.0] * max_steps}
        gen = method.view_generator(seed, 0)
        for lo in range(0, held, RULE_BATCH):
            start, _ = method.start_latents(vqvae, x[lo:lo + RULE_BATCH],
                                            held_codes[lo:lo + RULE_BATCH], unit, gen)
            with torch.inference_mode():
                drawn = read_stroke(vqvae.decode(vqvae.quantizer.quantize(start)))

            def record(step, delta, walked, drawn=drawn):
                with torch.inference_mode():
                    # the end state is read at temperature 1, as the walk diagnostic does
                    sums["entropy"][step] += predictive_entropy(f(walked)).sum().item()
                    strokes = read_stroke(vqvae.decode(walked))
                    sums["shape_iou"][step] += mask_iou(strokes, drawn).sum().item()

            method.walk_latents(vqvae, f, start, unit, on_step=record, alpha=alpha,
                                steps=max_steps, units=units)
        curves.append({"alpha": alpha, "entropy": [v / held for v in sums["entropy"]],
                       "shape_iou": [v / held for v in sums["shape_iou"]]})
    entropy_bar = hp["walk_rule_entropy"] * math.log(train.num_classes)
    chosen = choose(curves, entropy_bar, hp["walk_rule_iou"],
                    hp["walk_steps"] if hp["walk_steps"] else None)
    stats = {"alpha": chosen["alpha"], "alpha_units": units,
             "walk_steps": chosen["walk_steps"], "met": chosen["met"],
             "entropy": chosen["entropy"], "entropy_share":
             chosen["entropy"] / math.log(train.num_classes), "shape_iou": chosen["shape_iou"],
             "held_out_images": held, "f_prime_steps": f_stats["f_steps"],
             "curves": curves}
    return {}, stats
