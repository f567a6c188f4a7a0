"""Bias visualisation in a two-encoder VAE (SiH, Section 3 and Appendix B).

For test images that both classifiers get right, DeepFool (Moosavi-Dezfooli et al. 2016)
moves the *bias* latent, by a small L2 step, across the biased classifier's boundary toward
a randomly drawn wrong class; the decoder then renders the perturbed bias latent with the
unchanged signal latent. What differs between the plain reconstruction and this "debiased"
one is what the biased classifier relied on. DisEnt-style swapping (Lee et al. 2021) puts
in the whole bias latent of another image that the biased classifier assigns to the same
target class, for comparison.

Two numbers say whether a visualisation changed the bias and not the signal (for
datasets with foreground masks): the shift of the mean colour of the digit's pixels, and
the IoU of the binarised digit shape with the plain reconstruction's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .. import runs
from ..data.loader import as_float_images
from ..errors import DebiaskitError
from .images import save_image_grid


def latent_deepfool(head, z: torch.Tensor, target: torch.Tensor, overshoot: float = 0.02,
                    max_steps: int = 20):
    """Targeted DeepFool with the L2 norm on latents ``z`` (one row per sample), which
    the head classifies correctly to begin with.

    Each step linearises ``logit_target - logit_k`` at the current point, ``k`` being the
    strongest other class (``y`` at the start), and moves the samples not yet assigned to
    the target onto that linear boundary; the total step is scaled by
    ``1 + overshoot`` (DeepFool's overshoot). Latents are not clamped (SiH, Appendix B).
    Returns ``(z_perturbed, flipped, steps)``: ``flipped`` marks samples the head now
    assigns to ``target``; ``steps`` counts each sample's iterations.
    """
    z = z.detach()
    total = torch.zeros_like(z)
    steps = torch.zeros(len(z), dtype=torch.long, device=z.device)
    rows = torch.arange(len(z), device=z.device)
    z_adv = z
    for _ in range(max_steps):
        with torch.no_grad():
            active = head(z_adv).argmax(1) != target
        if not active.any():
            break
        point = z_adv.clone().requires_grad_(True)
        logits = head(point)
        rival = logits.detach().scatter(1, target[:, None], float("-inf")).argmax(1)
        margin = logits[rows, target] - logits[rows, rival]
        (grad,) = torch.autograd.grad(margin.sum(), point)
        with torch.no_grad():
            step = (margin.abs() + 1e-4) / grad.square().sum(1).clamp_min(1e-12)
            total += torch.where(active[:, None], step[:, None] * grad, torch.zeros_like(grad))
            steps += active.long()
            z_adv = z + (1.0 + overshoot) * total
    with torch.no_grad():
        flipped = head(z_adv).argmax(1) == target
    return z_adv.detach(), flipped, steps


def digit_colour(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean RGB of each image over its foreground-mask pixels (N x C)."""
    m = masks[:, None].float()
    return (images * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1)


def shape_iou(a: torch.Tensor, b: torch.Tensor, threshold: float) -> torch.Tensor:
    """IoU of the binarised shapes (max over channels > ``threshold``) of two image batches."""
    sa, sb = a.amax(1) > threshold, b.amax(1) > threshold
    inter = (sa & sb).flatten(1).sum(1).float()
    union = (sa | sb).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


@dataclass
class BiasVisualisation:
    images: torch.Tensor          # originals
    reconstructions: torch.Tensor
    debiased: torch.Tensor        # DeepFool on the bias latent (SiH)
    swapped: torch.Tensor         # bias latent of another image (DisEnt-style)
    y: torch.Tensor
    target: torch.Tensor
    flipped: torch.Tensor
    steps: torch.Tensor
    perturbation_norm: torch.Tensor
    masks: torch.Tensor | None

    def scores(self, threshold: float = 0.2) -> dict:
        """Colour shift and shape IoU of both visualisations against the reconstruction."""
        out = {"images": len(self.y), "deepfool_flipped": self.flipped.float().mean().item(),
               "deepfool_mean_steps": self.steps.float().mean().item(),
               "deepfool_mean_l2": self.perturbation_norm.mean().item(),
               "binarise_threshold": threshold}
        for name, images in (("deepfool", self.debiased), ("swap", self.swapped)):
            if self.masks is not None:
                shift = (digit_colour(images, self.masks)
                         - digit_colour(self.reconstructions, self.masks)).norm(dim=1)
                out[f"{name}_colour_shift"] = shift.mean().item()
            out[f"{name}_shape_iou"] = shape_iou(images, self.reconstructions,
                                                 threshold).mean().item()
        return out


@torch.no_grad()
def visualise_bias(vae, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None = None,
                   n: int = 100, seed: int = 0, overshoot: float = 0.02,
                   max_steps: int = 20) -> BiasVisualisation:
    """Visualise the bias of a trained :class:`~debiaskit.models.vae.TwoEncoderVAE`.

    ``x`` (float images in [0, 1]), ``y`` and optional ``masks`` are a pool of test images;
    up to ``n`` of those that both classifiers classify correctly are visualised, each
    toward a target class drawn uniformly among the wrong ones (seeded).
    """
    vae.eval()
    mean_s, _, mean_b, _ = vae.encode(x)
    pred_s, pred_b = vae.signal_head(mean_s).argmax(1), vae.bias_head(mean_b).argmax(1)
    gen = torch.Generator().manual_seed(seed)
    correct = torch.nonzero((pred_s == y) & (pred_b == y)).flatten()
    if len(correct) == 0:
        raise DebiaskitError("no image is classified correctly by both classifiers; train the "
                             "model longer before visualising its bias")
    pick = correct[torch.randperm(len(correct), generator=gen)[:n]].sort().values
    num_classes = vae.bias_head[-1].out_features
    shift = torch.randint(1, num_classes, (len(pick),), generator=gen).to(y.device)
    target = (y[pick] + shift) % num_classes

    with torch.enable_grad():
        z_adv, flipped, steps = latent_deepfool(vae.bias_head, mean_b[pick], target,
                                                overshoot, max_steps)
    # DisEnt-style: the bias latent of a random image the biased classifier puts in target
    partner = torch.empty_like(pick)
    for k in range(len(pick)):
        pool = torch.nonzero(pred_b == target[k]).flatten()
        pool = pool[pool != pick[k]] if len(pool) > 1 else torch.nonzero(
            torch.arange(len(x), device=x.device) != pick[k]).flatten()
        partner[k] = pool[torch.randint(len(pool), (1,), generator=gen).item()]

    z_s = mean_s[pick]
    return BiasVisualisation(
        images=x[pick], reconstructions=vae.decode(z_s, mean_b[pick]),
        debiased=vae.decode(z_s, z_adv), swapped=vae.decode(z_s, mean_b[partner]),
        y=y[pick], target=target, flipped=flipped, steps=steps,
        perturbation_norm=(z_adv - mean_b[pick]).norm(dim=1),
        masks=None if masks is None else masks[pick])


def save_grid(vis: BiasVisualisation, path: Path, columns: int = 12, title: str = "") -> Path:
    """PNG: rows original / reconstruction / DeepFool-debiased / bias-swapped."""
    rows = (("original", vis.images), ("reconstruction", vis.reconstructions),
            ("debiased\n(DeepFool)", vis.debiased), ("bias swapped\n(DisEnt)", vis.swapped))
    columns = min(columns, len(vis.y))
    titles = [f"y={vis.y[c].item()}→{vis.target[c].item()}" for c in range(columns)]
    return save_image_grid(rows, titles, path, title)


def explain_bias_run(run_dir, n: int = 100, seed: int = 0, split: str = "test",
                     out: Path | None = None, data_dir=None, threshold: float = 0.2) -> dict:
    """``debiaskit explain bias RUN_DIR``: grid PNG and scores JSON from a finished run."""
    from ..train import load_trained

    prep = load_trained(run_dir, data_dir)
    if "vae" not in prep.method.networks:
        raise DebiaskitError(f"{run_dir} is a run of method {prep.cfg.method}; explain bias "
                             "needs a two-encoder VAE (methods sih, sih_rds)")
    if split not in prep.evals:
        raise DebiaskitError(f"{run_dir} has no evaluation split {split!r}; it has: "
                             f"{', '.join(prep.evals)}")
    ds = prep.evals[split]
    device = torch.device(prep.cfg.device)  # where load_trained put the networks
    vis = visualise_bias(prep.method.networks["vae"], as_float_images(ds.x, device),
                         ds.y.to(device), None if ds.mask is None else ds.mask.to(device),
                         n=n, seed=seed)
    scores = {"run": str(run_dir), "split": split, "seed": seed, **vis.scores(threshold)}
    run_dir = Path(run_dir)
    png = Path(out) if out else run_dir / "bias.png"
    save_grid(vis, png, title=f"{prep.cfg.method}: bias visualisation on {split} "
              f"(DeepFool on the bias latent vs DisEnt-style swap)")
    runs.write_json(png.with_suffix(".json"), scores)
    return {**scores, "png": str(png)}

