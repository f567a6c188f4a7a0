"""The gradient ratio on the one-pixel problem (LAD, Section 2.1-2.2, Figure 2).

``GR(z+, z-) = ||dL/dz+||_2 / ||dL/dz-||_2`` (Eq. 1), with z+ the causal pixels (the whole
image except the first row's first K pixels) and z- the confounding ones (those K pixels,
of which the k-th is set in every training image of class k). GR > 1 means the training
gradient favours the causal signal, GR < 1 the confounder. LAD saw GR fall below 1 after
230 minibatch iterations on MNIST.

``track_gradient_ratio`` trains a plain classifier (Vanilla) on the one-pixel problem and
records, for every minibatch iteration, the loss, the batch accuracy, both gradient norms
(of the mean minibatch loss with respect to the input pixels) and their ratio; it then
evaluates on the independent and conditioned test splits (and every ``eval_every``
iterations if given: the paper reports the test accuracy of Figure 2 without saying after
how many iterations). The paper does not name the
network or optimiser of Figure 2: the defaults here are the MLP and Adam 1e-3, batch 256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import runs
from ..data.loader import InMemoryLoader
from ..data.protocols import build_data
from ..data.protocols.one_pixel import confounding_mask
from ..errors import ConfigError
from ..metrics import gradient_ratio
from ..models import build_model
from ..train import EVAL_BATCH
from .curves import ACCURACY_YLIM, save_png

DATASETS = ("one_pixel_mnist", "one_pixel_cifar10")
OPTIMIZERS = {"adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
              "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr)}


@dataclass
class GradientRatioTrace:
    """Per-iteration records of one run, test accuracies at the end, and the settings."""

    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    causal_norm: list[float] = field(default_factory=list)
    confounding_norm: list[float] = field(default_factory=list)
    test_accuracy: dict[str, float] = field(default_factory=dict)
    test_curve: dict[int, dict[str, float]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def ratio(self) -> list[float]:
        return [c / max(z, 1e-30) for c, z in zip(self.causal_norm, self.confounding_norm)]

    def first_below_one(self) -> int | None:
        """The first iteration at which GR < 1 (the confounder dominates), or None."""
        return next((i for i, r in zip(self.iterations, self.ratio) if r < 1.0), None)

    def to_json(self) -> dict:
        return {"settings": self.settings, "test_accuracy": self.test_accuracy,
                "test_accuracy_by_iteration": self.test_curve,
                "first_iteration_gr_below_1": self.first_below_one(),
                "final_train_accuracy": self.accuracy[-1] if self.accuracy else None,
                "records": [{"iteration": i, "loss": l, "accuracy": a, "causal_norm": c,
                             "confounding_norm": z, "gradient_ratio": r}
                            for i, l, a, c, z, r in zip(
                                self.iterations, self.loss, self.accuracy, self.causal_norm,
                                self.confounding_norm, self.ratio)]}


def track_gradient_ratio(dataset: str = "one_pixel_mnist", model: str = "mlp",
                         iterations: int = 1000, batch_size: int = 256, lr: float = 1e-3,
                         optimizer: str = "adam", seed: int = 0, value: int = 255, data_dir=None,
                         download: bool = False,
                         eval_every: int | None = None) -> GradientRatioTrace:
    """Train ``model`` on the one-pixel problem for ``iterations`` minibatches, tracking GR
    (and the test accuracies every ``eval_every`` iterations)."""
    if dataset not in DATASETS:
        raise ConfigError(f"the gradient ratio needs a one-pixel dataset ({', '.join(DATASETS)}), "
                          f"got {dataset}")
    if iterations < 1 or batch_size < 1 or lr <= 0 or (eval_every is not None
                                                        and eval_every < 1):
        raise ConfigError("iterations, batch size and eval-every must be >= 1 and the "
                          "learning rate > 0")
    bundle = build_data(dataset, data_dir, download, value=value, seed=seed)
    train = bundle.train
    torch.manual_seed(seed)
    net = build_model(model, train.image_shape, train.num_classes)
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    opt = OPTIMIZERS[optimizer](net.parameters(), lr)
    confounding = confounding_mask(train.image_shape, train.num_classes)
    loader = InMemoryLoader(train, batch_size, shuffle=True, seed=seed)
    trace = GradientRatioTrace(settings={
        "dataset": dataset, "model": model, "iterations": iterations, "batch_size": batch_size,
        "optimizer": f"{optimizer} lr {lr}", "seed": seed, "pixel_value": value,
        "num_classes": train.num_classes, "data_checksum": train.checksum()})

    def evaluate() -> dict[str, float]:
        net.eval()
        accuracy = {}
        with torch.inference_mode():
            for split, ds in bundle.evals.items():
                correct = sum((net(b.x).argmax(1) == b.y).sum().item()
                              for b in InMemoryLoader(ds, EVAL_BATCH, shuffle=False).epoch(0))
                accuracy[split] = 100.0 * correct / len(ds)
        net.train()
        return accuracy

    step, epoch = 0, 0
    net.train()
    while step < iterations:
        for batch in loader.epoch(epoch):
            x = batch.x.requires_grad_(True)
            logits = net(x)
            loss = F.cross_entropy(logits, batch.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            causal, confound, _ = gradient_ratio(x.grad, confounding)
            opt.step()
            step += 1
            trace.iterations.append(step)
            trace.loss.append(loss.item())
            trace.accuracy.append((logits.argmax(1) == batch.y).float().mean().item() * 100)
            trace.causal_norm.append(causal)
            trace.confounding_norm.append(confound)
            if eval_every and step % eval_every == 0 and step != iterations:
                trace.test_curve[step] = evaluate()
            if step == iterations:
                break
        epoch += 1
    trace.test_accuracy = evaluate()
    if eval_every:
        trace.test_curve[iterations] = trace.test_accuracy
    return trace


def plot_gradient_ratio(trace: GradientRatioTrace, path: Path) -> Path:
    """Figure 2 of LAD: (b) loss and training accuracy, (c) the two gradient norms, (d) GR."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 4 if trace.test_curve else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.7 * panels, 3.8))
    it = trace.iterations
    ax = axes[0]
    ax.plot(it, trace.loss, color="tab:red", label="training loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    twin = ax.twinx()
    twin.plot(it, trace.accuracy, color="tab:blue", label="training accuracy (%)")
    twin.set_ylabel("accuracy (%)")
    ax.set_title("loss and accuracy")
    ax.legend(loc="center right", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    ax = axes[1]
    ax.plot(it, trace.causal_norm, label="image pixels (causal)")
    ax.plot(it, trace.confounding_norm, label="class pixels (confounding)")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_title("L2 norm of dL/dx")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(it, trace.ratio, color="k")
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    crossing = trace.first_below_one()
    if crossing is not None:
        ax.axvline(crossing, color="tab:red", ls=":", lw=1,
                   label=f"GR < 1 from iteration {crossing}")
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_title("gradient ratio GR (Eq. 1)")
    if trace.test_curve:
        ax = axes[3]
        steps = sorted(trace.test_curve)
        for split in trace.test_accuracy:
            ax.plot(steps, [trace.test_curve[s][split] for s in steps], marker=".",
                    label=split)
        ax.axhline(100.0 / trace.settings["num_classes"], color="grey", ls="--", lw=1,
                   label="chance")
        ax.set_ylim(*ACCURACY_YLIM)
        ax.set_xlabel("iteration")
        ax.set_title("test accuracy (%)")
        ax.legend(fontsize=8)
    tests = ", ".join(f"{k} {v:.1f} %" for k, v in trace.test_accuracy.items())
    fig.suptitle(f"One-pixel problem, {trace.settings['dataset']}, {trace.settings['model']}; "
                 f"test accuracy: {tests}", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    return Path(path)


def explain_gradient_ratio(out_dir, **options) -> GradientRatioTrace:
    """Run :func:`track_gradient_ratio` and write ``gradient_ratio.png`` and ``.json``."""
    out = Path(out_dir)
    trace = track_gradient_ratio(**options)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / "gradient_ratio.json", trace.to_json())
    plot_gradient_ratio(trace, out / "gradient_ratio.png")
    return trace
