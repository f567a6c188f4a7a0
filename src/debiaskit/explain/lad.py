"""LAD's training images next to their reconstructions (LAD, Figure 4).

``debiaskit explain lad RUN_DIR`` reads the run's cached stages (the VQ-VAE and the decoded
walked images) and draws, for training images picked at random: the original ``x``, the
plain VQ-VAE reconstruction ``dec(quantise(enc(x)))`` and the LAD reconstruction
``x_delta = dec(h_delta)`` that ``f_strong`` trains on.

When the data have bias labels, it also probes whether the walk removed the bias or only
remapped it (:mod:`debiaskit.explain.bias_probe`): ``lad_bias.json`` and ``lad_bias.png``
(class x probed bias of the original and of the walked training images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import runs
from ..data.loader import as_float_images
from ..errors import DebiaskitError
from .bias_probe import (bias_dependence, most_independent_split, predict, probe_reads_bias,
                         train_probe)
from .curves import save_png
from .images import save_image_grid


def explain_lad_run(run_dir, n: int = 24, seed: int = 0, out=None, data_dir=None,
                    probe: bool = True) -> tuple[Path, dict | None]:
    """Write ``RUN_DIR/lad.png`` (or ``out``): rows original / reconstruction / LAD; and,
    if ``probe`` and the data have bias labels, the bias probe's ``lad_bias.json`` and
    ``.png`` beside it. Returns the PNG's path and the probe's results (or None)."""
    from ..train import config_from_run, prepare

    run_dir = runs.require_run_dir(run_dir)
    stages = run_dir / runs.STAGES
    if not (run_dir / runs.CONFIG).exists() or not (stages / "walk.json").exists():
        raise DebiaskitError(f"{run_dir} holds no LAD run whose walk stage has finished; "
                             "train one with --method lad first")
    cfg = config_from_run(runs.read_json(run_dir / runs.CONFIG), data_dir)
    prep = prepare(cfg)
    train = prep.train
    walked = runs.load_torch(stages / "walk.pt")["images"]
    if len(walked) != len(train):
        raise DebiaskitError(f"{run_dir}: the walk stage holds {len(walked)} images but the "
                             f"run's training set has {len(train)}; the data changed")
    vqvae = prep.method.new_vqvae()
    vqvae.load_state_dict(runs.load_torch(stages / "vqvae.pt")["vqvae"])
    vqvae.eval()
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    x = as_float_images(train.x[pick])
    with torch.inference_mode():
        recon = vqvae.decode(vqvae.quantizer.quantize(vqvae.encode(x)))
    rows = (("original", x), ("VQ-VAE\nreconstruction", recon),
            ("LAD\n(walked)", as_float_images(walked[pick])))
    walk = runs.read_json(stages / "walk.json")["stats"]
    png = Path(out) if out else run_dir / "lad.png"
    probed = (probe_walk(train, walked, prep.evals, seed, png.with_name("lad_bias"))
              if probe and train.has_bias and any(ds.has_bias for ds in prep.evals.values())
              else None)
    return save_image_grid(
        rows, [f"y={train.y[i].item()}" for i in pick], png, cell_width=0.8, height=3.2,
        title=f"LAD on {cfg.dataset}: entropy of f {walk['entropy_before']:.2f} -> "
              f"{walk['entropy_after']:.2f} nats (max {walk['max_entropy']:.2f}); "
              f"{100 * walk['codes_changed_fraction']:.0f} % of codes changed"), probed


def probe_walk(train, walked: torch.Tensor, evals: dict, seed: int, stem: Path) -> dict:
    """Train a bias probe and a signal probe (on the evaluation split whose bias is most
    independent of the class) and compare class x probed bias and the signal probe's
    accuracy on the original and the walked training images; write ``stem.json`` and
    ``stem.png``."""
    split = most_independent_split(evals)
    bias_net, bias_accuracy = train_probe(evals[split], "b", seed=seed)
    signal_net, signal_accuracy = train_probe(evals[split], "y", seed=seed)
    result = {"probe_split": split, "probe_heldout_accuracy": bias_accuracy,
              "probe_reads_bias": probe_reads_bias(bias_accuracy, evals[split].num_bias),
              "signal_probe_heldout_accuracy": signal_accuracy,
              "protocol": f"two MLPs (bias label, class), Adam 1e-3, 5 epochs, on 80 % of "
                          f"the {split!r} split (seed {seed}); accuracy on the other 20 %"}
    for name, images in (("original", train.x), ("walked", walked)):
        result[name] = bias_dependence(train.y, predict(bias_net, images), train.num_classes,
                                       train.num_bias, train.b)
        result[name]["signal_accuracy"] = 100.0 * (
            predict(signal_net, images) == train.y).float().mean().item()
    runs.write_json(stem.with_suffix(".json"), result)
    plot_bias_tables(result, stem.with_suffix(".png"))
    return result


def plot_bias_tables(result: dict, path: Path) -> Path:
    """Two heat maps, original and walked images: per class, the share of each probed bias."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, name in zip(axes, ("original", "walked")):
        table = np.asarray(result[name]["class_by_probed_bias"], dtype=float)
        shares = 100 * table / np.maximum(table.sum(1, keepdims=True), 1)
        ax.imshow(shares, vmin=0, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(shares):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                    color="w" if v < 50 else "k")
        ax.set_xticks(range(shares.shape[1]))
        ax.set_yticks(range(shares.shape[0]))
        ax.set_xlabel("probed bias")
        ax.set_ylabel("class")
        ax.set_title(f"{name}: NMI(class, bias) {result[name]['class_bias_nmi']:.2f}, "
                     f"bias kept {result[name]['bias_kept']:.0f} %, signal probe "
                     f"{result[name]['signal_accuracy']:.0f} %", fontsize=9)
    caveat = ("" if result["probe_reads_bias"] else "\nTHE BIAS PROBE IS NEAR CHANCE: these "
              "tables do not show whether the walk removed the bias")
    fig.suptitle(f"Probes trained on the {result['probe_split']} split (held-out accuracy: "
                 f"bias {result['probe_heldout_accuracy']:.1f} %, class "
                 f"{result['signal_probe_heldout_accuracy']:.1f} %); cells: % of each class's "
                 f"images per probed bias value{caveat}", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
    return path
