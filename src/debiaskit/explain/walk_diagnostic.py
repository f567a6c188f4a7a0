"""Why does LAD's latent walk remap a class's cue instead of removing it? A walk diagnostic.

``debiaskit explain lad-walk RUN_DIR`` re-walks a seeded sample of the run's training
images with the run's own VQ-VAE, bias classifier ``f`` and walk settings (LAD,
Algorithm 1; :class:`debiaskit.methods.lad.LAD`) and records, before the walk (step 0) and
after every step:

- ``entropy``: ``f``'s mean predictive entropy (nats, at temperature 1) of the walked
  latents, the quantity Eq. 5 maximises (LAD's aim: ``log(classes)``, f unsure);
- ``changed_digit`` / ``changed_background``: the share of latent positions whose code
  differs from the start, over positions that do / do not cover a pixel of the digit (the
  dataset's foreground mask, max-pooled to the latent grid);
- ``step_norm`` and ``code_gap``: the mean length of a step per latent position, next to
  the mean distance from each position's current code to the nearest other code (a step
  much shorter than the gap is undone by re-quantisation; much longer jumps past codes),
  and ``step_spacings``, their ratio: the step's length in code spacings;
- ``class_bias_nmi`` / ``bias_kept``: the normalised mutual information of class and the
  bias attribute read by a bias probe from the decoded images
  (:mod:`debiaskit.explain.bias_probe`; 0 when the cue is independent of the class, 1 when
  it is kept or remapped), and the share of images whose probed bias is unchanged;
- ``shape_iou``: the mean intersection over union of the digit's stroke in the decoded
  image and in the original image (the stroke read by a per-dataset colour rule,
  :mod:`debiaskit.data.strokes`), i.e. whether the walk keeps the digit.

A walk is "good" (:data:`GOOD`) when after the last step the entropy is at least 80 % of
``log(classes)``, the NMI at most 0.05 and the shape IoU at least 0.8.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import runs
from ..data.strokes import mask_iou, stroke_rule
from ..errors import ConfigError, DebiaskitError
from ..methods.lad import to_uint8
from ..methods.lad.walk import nearest_other_distance, predictive_entropy
from ..stages import StageStore
from .bias_probe import (bias_dependence, most_independent_split, predict, probe_reads_bias,
                         train_probe)
from .curves import save_png

#: The acceptance bars of a good walk: (entropy share of log(classes), max NMI, min IoU).
GOOD = {"entropy_share": 0.8, "class_bias_nmi": 0.05, "shape_iou": 0.8}

RECORDED = ("entropy", "changed_digit", "changed_background", "step_norm", "code_gap",
            "class_bias_nmi", "bias_kept", "shape_iou")


def digit_positions(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Latent positions (N x h x w, bool) whose patch holds a pixel of the digit mask."""
    pooled = F.adaptive_max_pool2d(mask[:, None].float(), grid)
    return pooled[:, 0] > 0


def verdict(final: dict, num_classes: int) -> dict:
    """Per criterion of :data:`GOOD`, whether the walk's last step meets it; and ``good``."""
    checks = {
        "entropy": final["entropy"] >= GOOD["entropy_share"] * math.log(num_classes),
        "class_bias_nmi": final["class_bias_nmi"] <= GOOD["class_bias_nmi"],
        "shape_iou": final["shape_iou"] >= GOOD["shape_iou"],
    }
    return {**checks, "good": all(checks.values())}


def bias_probe(evals: dict, seed: int = 0) -> tuple:
    """``(bias probe, its held-out accuracy, split)``: the probe of
    :mod:`~debiaskit.explain.bias_probe` trained on the evaluation split whose bias is most
    independent of the class (one probe can serve several diagnostics of the same data)."""
    split = most_independent_split(evals)
    net, accuracy = train_probe(evals[split], "b", seed=seed)
    return net, accuracy, split


def diagnose_walk(method, vqvae, f, codes: torch.Tensor, train, evals: dict, dataset: str,
                  images: int = 2000, seed: int = 0, probe=None) -> dict:
    """Walk a seeded sample of ``images`` training images (first walk view) with
    ``method``'s settings and record :data:`RECORDED` per step (module docstring).

    ``probe`` is ``(bias_probe, held-out accuracy, split)``; trained on the evaluation
    split whose bias is most independent of the class if not given.
    """
    if train.mask is None:
        raise ConfigError(f"{train.name} has no foreground masks; the walk diagnostic needs "
                          "them to tell digit from background positions")
    read_stroke = stroke_rule(dataset, "the walk diagnostic",
                              "run it on a LAD run of one of those")
    probe = probe or bias_probe(evals, seed)
    bias_net = probe[0]
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    pick = pick[:images].sort().values
    x, y, b = train.x[pick], train.y[pick], train.b[pick]
    unit = method.step_unit(vqvae, codes)
    gaps = nearest_other_distance(vqvae.quantizer.codebook)
    gen = method.view_generator(seed, 0)
    sums = {name: [0.0] * (method.hp["walk_steps"] + 1) for name in RECORDED}
    b_hats = [[] for _ in range(method.hp["walk_steps"] + 1)]  # probed bias per step
    n = len(pick)
    for lo in range(0, n, 500):
        hi = min(lo + 500, n)
        # (the walk, its augmentation and the masks on the run's device)
        start, mask = method.start_latents(vqvae, x[lo:hi], codes[pick[lo:hi]], unit, gen,
                                           train.mask[pick[lo:hi]].to(codes.device))
        with torch.inference_mode():
            start_codes = vqvae.quantizer.nearest(start)
        digit = digit_positions(mask, tuple(start_codes.shape[1:]))

        def record(step: int, delta, walked) -> None:
            with torch.inference_mode():
                now = vqvae.quantizer.nearest(walked)
                diff = now != start_codes
                sums["entropy"][step] += predictive_entropy(f(walked)).sum().item()
                sums["changed_digit"][step] += (
                    (diff & digit).flatten(1).sum(1) / digit.flatten(1).sum(1).clamp(min=1)
                ).sum().item()
                sums["changed_background"][step] += (
                    (diff & ~digit).flatten(1).sum(1) / (~digit).flatten(1).sum(1).clamp(min=1)
                ).sum().item()
                sums["step_norm"][step] += (0.0 if delta is None else
                                            delta.norm(dim=1).mean((1, 2)).sum().item())
                sums["code_gap"][step] += gaps[now].mean((1, 2)).sum().item()
                decoded = vqvae.decode(walked)
                sums["shape_iou"][step] += mask_iou(read_stroke(decoded), mask).sum().item()
                b_hats[step].append(predict(bias_net, to_uint8(decoded)))

        with torch.inference_mode():
            record(0, None, vqvae.quantizer.quantize(start))
        method.walk_latents(vqvae, f, start, unit,
                            on_step=lambda step, delta, walked: record(step + 1, delta, walked))
    steps = []
    for step in range(method.hp["walk_steps"] + 1):
        row = {"step": step, **{k: sums[k][step] / n for k in RECORDED
                                if k not in ("class_bias_nmi", "bias_kept")}}
        # the step's length in code spacings (the unit of alpha_units=spacing)
        row["step_spacings"] = row["step_norm"] / row["code_gap"] if row["code_gap"] else 0.0
        dependence = bias_dependence(y, torch.cat(b_hats[step]), train.num_classes,
                                     train.num_bias, b)
        row["class_bias_nmi"] = dependence["class_bias_nmi"]
        row["bias_kept"] = dependence["bias_kept"]
        steps.append(row)
    final = steps[-1]
    return {
        "images": n, "seed": seed, "dataset": dataset,
        "max_entropy": math.log(train.num_classes),
        "settings": dict(method.hp), "steps": steps, "final": final,
        "verdict": verdict(final, train.num_classes),
        "probe_split": probe[2], "probe_heldout_accuracy": probe[1],
        "probe_reads_bias": probe_reads_bias(probe[1], train.num_bias),
        "protocol": (f"{n} training images drawn with seed {seed}, first walk view; bias probe "
                     f"an MLP (Adam 1e-3, 5 epochs) on 80 % of the {probe[2]!r} split; stroke "
                     f"read by the {dataset} colour rule; entropy at temperature 1"),
    }


def diagnose_config(cfg, out_dir, reuse_from=None, images: int = 2000, seed: int = 0,
                    probe=None) -> dict:
    """Prepare the LAD run ``cfg`` (a :class:`debiaskit.train.RunConfig`), fit or load its
    VQ-VAE, ``f`` and (if the walk's length is not given) the walk-length rule's choice
    under ``out_dir/stages`` (loading matching stages from ``reuse_from``)
    and diagnose its walk; writes ``out_dir/walk_diagnostic.json`` and ``.png``."""
    from ..train import prepare

    if cfg.method != "lad":
        raise ConfigError(f"the walk diagnostic is for LAD runs, not {cfg.method}")
    prep = prepare(cfg)
    out_dir = Path(out_dir)
    store = StageStore(out_dir / runs.STAGES, reuse_from)
    device = torch.device(prep.cfg.device)  # (resolved: auto -> cuda or cpu)
    vqvae, codes, f = prep.method.fit_stages(prep.train, prep.evals, store, cfg.seed, device)
    prep.method.choose_walk(vqvae, codes, prep.train, store, cfg.seed, device)
    result = diagnose_walk(prep.method, vqvae, f, codes, prep.train, prep.evals, cfg.dataset,
                           images, seed, probe)
    result["stages"] = {name: record.get("stats", {}) for name, record in store.records.items()}
    runs.write_json(out_dir / "walk_diagnostic.json", result)
    plot_walk_diagnostic(result, out_dir / "walk_diagnostic.png")
    return result


def diagnose_run(run_dir, hparams: dict | None = None, out=None, images: int = 2000,
                 seed: int = 0, data_dir=None) -> dict:
    """:func:`diagnose_config` for the LAD run in ``run_dir``, with ``hparams`` over its
    own (a hypothesis); its stages are reused where their settings match, and nothing in
    ``run_dir`` is changed (output in ``out``, default ``RUN_DIR/walk_diagnostic``)."""
    from ..train import config_from_run

    run_dir = runs.require_run_dir(run_dir)
    if not (run_dir / runs.CONFIG).exists() or not (run_dir / runs.STAGES).is_dir():
        raise DebiaskitError(f"{run_dir} holds no LAD run with cached stages; train one with "
                             "--method lad first")
    cfg = config_from_run(runs.read_json(run_dir / runs.CONFIG), data_dir, hparams)
    out = Path(out) if out else run_dir / "walk_diagnostic"
    return {**diagnose_config(cfg, out, run_dir / runs.STAGES, images, seed), "folder": str(out)}


def plot_walk_diagnostic(result: dict, path: Path) -> Path:
    """Five panels against the walk step: entropy, codes changed, step vs code gap, NMI,
    shape IoU; the bars of a good walk dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in result["steps"]]
    col = {k: [row[k] for row in result["steps"]] for k in RECORDED}
    fig, axes = plt.subplots(1, 5, figsize=(19, 3.6))
    axes[0].plot(steps, col["entropy"])
    axes[0].axhline(GOOD["entropy_share"] * result["max_entropy"], ls="--", c="gray")
    axes[0].set_title("entropy of f (nats)")
    axes[1].plot(steps, [100 * v for v in col["changed_background"]], label="background")
    axes[1].plot(steps, [100 * v for v in col["changed_digit"]], label="digit")
    axes[1].set_title("codes changed (%)")
    axes[1].legend(fontsize=8)
    axes[2].plot(steps[1:], col["step_norm"][1:], label="step per position")
    axes[2].plot(steps, col["code_gap"], label="gap to nearest other code")
    axes[2].set_title("step vs code gap (L2)")
    axes[2].legend(fontsize=8)
    axes[3].plot(steps, col["class_bias_nmi"])
    axes[3].axhline(GOOD["class_bias_nmi"], ls="--", c="gray")
    axes[3].set_title("NMI(class, probed bias)")
    axes[4].plot(steps, col["shape_iou"])
    axes[4].axhline(GOOD["shape_iou"], ls="--", c="gray")
    axes[4].set_title("digit-shape IoU")
    for ax in axes:
        ax.set_xlabel("walk step")
    good = result["verdict"]
    fig.suptitle(f"LAD walk on {result['dataset']} ({result['images']} images): "
                 + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in good.items()
                             if k != "good"), fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    return path


def format_table(result: dict) -> str:
    """The per-step record as a plain-text table, with the verdict under it."""
    header = ("step", "entropy", "chg digit %", "chg bg %", "step L2", "code gap",
              "step/gap", "NMI", "bias kept %", "IoU")
    lines = [" ".join(f"{h:>11}" for h in header)]
    for row in result["steps"]:
        values = (row["step"], row["entropy"], 100 * row["changed_digit"],
                  100 * row["changed_background"], row["step_norm"], row["code_gap"],
                  row["step_spacings"], row["class_bias_nmi"], row["bias_kept"],
                  row["shape_iou"])
        lines.append(" ".join(f"{v:>11}" if isinstance(v, int) else f"{v:>11.3f}"
                              for v in values))
    good = result["verdict"]
    lines.append(f"good walk (entropy >= {GOOD['entropy_share']:.0%} of "
                 f"{result['max_entropy']:.2f}, NMI <= {GOOD['class_bias_nmi']}, IoU >= "
                 f"{GOOD['shape_iou']}): " + ("YES" if good["good"] else "no; fails " + ", ".join(
                     k for k, v in good.items() if k != "good" and not v)))
    if not result["probe_reads_bias"]:
        lines.append("warning: the bias probe cannot read the bias, so the NMI means nothing")
    return "\n".join(lines)
