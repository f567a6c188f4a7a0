"""Saliency focus (CF/F, Sec. 4.1; docs/explain.md, saliency): how much of a model's
saliency falls on the foreground.

- maps: captum's DeepLiftShap (target = the true label, baselines = training images; the
  authors use 20 random ones) or plain input gradients of the target logit;
- pixel score: the L2 norm of the map over the channels (the paper's; the authors' code
  sums the squares, a monotone transform that leaves the AUPR unchanged);
- AUPR: scikit-learn's average precision of the pixel scores against the foreground mask,
  per image, averaged over images; images whose mask is all foreground or all background
  are skipped (as the authors do). A map equal to the mask scores 1.0; a constant map
  scores the image's foreground share.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import ConfigError

SALIENCY_METHODS = ("deeplift_shap", "gradient")


def check_saliency_method(method: str) -> None:
    if method not in SALIENCY_METHODS:
        raise ConfigError(f"unknown saliency method {method!r}; use one of "
                          f"{', '.join(SALIENCY_METHODS)}")


def saliency_maps(model, x: torch.Tensor, y: torch.Tensor, method: str = "deeplift_shap",
                  baselines: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel scores (N x H x W): the L2 norm over channels of the attribution of the
    target logit ``y`` to ``x`` (float images)."""
    check_saliency_method(method)
    was = model.training
    model.train(False)
    x = x.detach().clone()
    try:
        if method == "gradient":
            x.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x)
                attr, = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x)
        else:
            from captum.attr import DeepLiftShap
            if baselines is None or len(baselines) < 2:
                raise ConfigError("DeepLiftShap needs at least two baseline images")
            with torch.enable_grad(), warnings.catch_warnings():
                # captum announces the hooks it sets on every call; nothing to act on
                warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
                attr = DeepLiftShap(model).attribute(x, baselines=baselines.detach(), target=y)
    finally:
        model.train(was)
    return attr.detach().pow(2).sum(1).sqrt()


def saliency_aupr(scores: torch.Tensor, masks: torch.Tensor) -> tuple[float, int]:
    """(mean per-image average precision of ``scores`` against ``masks`` (%), images
    scored); images whose mask is all True or all False are skipped."""
    from sklearn.metrics import average_precision_score
    if scores.shape != masks.shape:
        raise ConfigError(f"saliency scores have shape {tuple(scores.shape)}, masks "
                          f"{tuple(masks.shape)}; give one (H, W) mask per map")
    values = []
    for s, m in zip(scores.cpu().double().numpy(), masks.cpu().numpy()):
        if m.all() or not m.any():
            continue
        values.append(average_precision_score(m.ravel(), s.ravel()))
    return (100.0 * float(np.mean(values)) if values else float("nan")), len(values)


def explain_saliency_run(run_dir, images: int = 8, seed: int = 0, split: str | None = None,
                         method: str = "deeplift_shap", out=None, data_dir=None,
                         aupr_images: int = 500, num_baselines: int = 20) -> dict:
    """A finished run's saliency on an evaluation split with foreground masks: a PNG grid
    (image, mask, saliency) of ``images`` seeded test images and, next to it, a JSON with
    the saliency AUPR over ``aupr_images`` seeded images of the split (DeepLiftShap
    baselines: ``num_baselines`` seeded training images, the authors' 20)."""
    from pathlib import Path

    from .. import runs
    from ..data.loader import as_float_images
    from ..train import load_trained
    from .images import save_image_grid

    if images < 1 or aupr_images < 1 or num_baselines < 2:
        raise ConfigError("--images and --aupr-images must be >= 1 and the baselines >= 2")
    check_saliency_method(method)  # before the run's data is built
    prep = load_trained(run_dir, data_dir)
    with_masks = [k for k, v in prep.evals.items() if v.mask is not None]
    split = split or (with_masks[0] if with_masks else next(iter(prep.evals)))
    if split not in prep.evals:
        raise ConfigError(f"the run has no evaluation split {split!r}; it has: "
                          f"{', '.join(prep.evals)}")
    ds = prep.evals[split]
    if ds.mask is None:
        raise ConfigError(f"split {split!r} has no foreground masks, so saliency focus is "
                          f"undefined; use one of: {', '.join(with_masks) or 'none'}")
    gen = torch.Generator().manual_seed(seed)
    base_idx = torch.randperm(len(prep.train), generator=gen)[:num_baselines]
    device = torch.device(prep.cfg.device)  # where load_trained put the networks
    baselines = as_float_images(prep.train.x[base_idx], device)
    model = prep.method

    def maps(idx):
        out_maps = []
        for chunk in idx.split(64):
            out_maps.append(saliency_maps(model, as_float_images(ds.x[chunk], device),
                                          ds.y[chunk].to(device), method, baselines).cpu())
        return torch.cat(out_maps)

    scored_idx = torch.randperm(len(ds), generator=gen)[:aupr_images]
    scored_maps = maps(scored_idx)
    aupr, scored = saliency_aupr(scored_maps, ds.mask[scored_idx])
    shown = scored_idx[:images]  # the grid shows the first of the scored images
    shown_maps = scored_maps[:images]
    peak = shown_maps.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    x = as_float_images(ds.x[shown], "cpu")
    rows = [("image", list(x)), ("mask", [m[None].float() for m in ds.mask[shown]]),
            (f"saliency\n({method})", [(s / p)[None] for s, p in zip(shown_maps, peak)])]
    png = Path(out) if out else Path(run_dir) / f"saliency-{split}-{method}.png"
    save_image_grid(rows, [f"y={int(v)}" for v in ds.y[shown]], png,
                    title=f"saliency focus on {split}: AUPR {aupr:.1f} % over {scored} images")
    probs = split_probabilities(model, prep.evals, device)
    result = {"split": split, "method": method, "aupr": aupr, "aupr_images": aupr_images,
              "images_scored": scored,
              "next_class_shift": background_reliance(probs, prep.evals),
              "macro_auc": split_auc(probs, prep.evals),
              "baselines": num_baselines if method == "deeplift_shap" else None,
              "pixel_score": "L2 norm over channels", "seed": seed, "png": str(png)}
    runs.write_json(png.with_suffix(".json"), result)
    return result


@torch.no_grad()
def split_probabilities(model, evals: dict, device="cpu") -> dict:
    """Softmax class probabilities of ``model`` (on ``device``) on every evaluation split
    (N x K each, on the CPU)."""
    from ..data.loader import as_float_images

    was = model.training
    model.train(False)
    probs = {}
    for name, ds in evals.items():
        chunks = [torch.softmax(model(as_float_images(ds.x[i:i + 256], device)).float(),
                                1).cpu() for i in range(0, len(ds), 256)]
        probs[name] = torch.cat(chunks)
    model.train(was)
    return probs


def background_reliance(probs: dict, evals: dict) -> float | None:
    """CF/F's next-class shift (Table 3) between the ``original`` and ``mixed_next``
    evaluation splits (``probs``: :func:`split_probabilities`) when both exist and pair
    image i with image i (same foreground, as ``bg_shift`` and IN-9 build them); None
    otherwise."""
    from ..metrics import next_class_shift

    original, mixed = evals.get("original"), evals.get("mixed_next")
    if original is None or mixed is None or len(original) != len(mixed) \
            or not torch.equal(original.y, mixed.y):
        return None
    return next_class_shift(probs["original"], probs["mixed_next"], original.y)


def split_auc(probs: dict, evals: dict) -> dict:
    """Macro one-vs-rest ROC AUC (%) per evaluation split (CF/F's CCT metric)."""
    from ..metrics import macro_auc

    return {name: macro_auc(probs[name], ds.y) for name, ds in evals.items()
            if len(torch.unique(ds.y)) > 1}
