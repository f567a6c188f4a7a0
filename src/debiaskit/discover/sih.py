"""``--sih``: a second label-free biased model, SiH trained by the library's trainer into
the discovery's ``sih`` run folder; its biased classifier's ranking and bias
visualisation."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import runs
from ..data.dataset import BiasedDataset
from ..data.loader import as_float_images
from ..errors import ConfigError, DebiaskitError
from ..methods.discovered import training_checksum
from .config import (SIH_CAPTION, SIH_COLUMNS, SIH_DIR, SIH_IMAGE_SIZE, SIH_IOU_THRESHOLD,
                     SIH_PNG, SIH_POOL, SIH_VISUALISED, DiscoverConfig)
from .inputs import DiscoveryInput
from .ranking import Ranking


def check_sih_input(inp: DiscoveryInput, cfg: DiscoverConfig) -> None:
    """``--sih`` needs images SiH's MLP VAE is built for (28 x 28) and data the trainer
    can build again and report on (a built-in protocol, or a labels CSV with an
    evaluation split)."""
    h, w = inp.data.image_shape[1:]
    if (h, w) != SIH_IMAGE_SIZE:
        folder = inp.source.get("dataset") == "folder"
        raise ConfigError(
            f"--sih trains SiH's MLP VAE, which is built for MNIST-size "
            f"{SIH_IMAGE_SIZE[0]} x {SIH_IMAGE_SIZE[1]} images, and these are {h} x {w}; "
            + ("resize them with --image-size 28, or " if folder else "")
            + "leave --sih out (for larger colour images train SiH's ResNet-18 VAE with "
            "'debiaskit train --method sih --model resnet18', then 'debiaskit explain bias')")
    if not inp.eval_splits:
        raise ConfigError("--sih trains SiH with debiaskit's trainer, which needs an "
                          "evaluation split to report on, and these images have none; give "
                          "FOLDER --labels CSV with a split column putting some images in "
                          "split test")
    if inp.source.get("train_subset") and inp.source.get("seed") != cfg.seed:
        raise ConfigError(f"the training subset was drawn with seed {inp.source.get('seed')}"
                          f" and the discovery has seed {cfg.seed}; load the input with the "
                          "discovery's seed (SiH's run draws the same subset with it)")


def sih_run_config(inp: DiscoveryInput, cfg: DiscoverConfig, device="cpu"):
    """The :class:`~debiaskit.train.RunConfig` of the SiH run: method ``sih`` (its default
    hyper-parameters and the trainer's batch size), the ``mlp`` VAE, ``cfg.sih_epochs``
    epochs with selection "last" (evaluated after the last epoch only), seeded by
    ``cfg.seed``, on the same training images with their bias labels dropped."""
    from ..train import RunConfig

    src = inp.source
    return RunConfig(dataset=src["dataset"], data_params=dict(src.get("params") or {}),
                     method="sih", model="mlp", epochs=cfg.sih_epochs, selection="last",
                     eval_every=cfg.sih_epochs, seed=cfg.seed, drop_bias_labels=True,
                     train_subset=src.get("train_subset"), device=str(device),
                     progress=False, data_dir=inp.data_dir, download=inp.download)


class SiHBiasedNet(nn.Module):
    """SiH's biased classifier as a network: ``forward_features`` is the bias encoder's
    latent mean, ``forward_head`` the bias head on it (``forward`` both, as
    ``predict_biased``); float images in [0, 1] as the library's models take them."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.bias_encoder(x)[0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.vae.bias_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@torch.no_grad()
def sih_biased_outputs(method, data: BiasedDataset, device="cpu", chunk: int = 2048):
    """Cross-entropy and prediction of SiH's biased classifier (``predict_biased``: the
    bias head on the bias encoder's latent mean) on every image of ``data``, in order."""
    ce, pred = [], []
    for lo in range(0, len(data), chunk):
        x = as_float_images(data.x[lo:lo + chunk], device)
        y = data.y[lo:lo + chunk].to(device)
        logits = method.predict_biased(x).float()
        ce.append(F.cross_entropy(logits, y, reduction="none").cpu())
        pred.append(logits.argmax(1).cpu())
    return torch.cat(ce), torch.cat(pred)


def sih_visualisation(vae, data: BiasedDataset, cfg: DiscoverConfig, device="cpu"):
    """SiH's bias visualisation (:func:`debiaskit.explain.bias.visualise_bias`) on a
    seeded random pool of :data:`SIH_POOL` training images: the PNG grid (bytes) and its
    scores (with foreground masks, the colour shift; always the shape IoU). When no pool
    image is classified correctly by both of SiH's classifiers (too short a training),
    there is nothing to visualise: the PNG is None and the scores say why."""
    from ..explain.bias import save_grid, visualise_bias

    gen = torch.Generator().manual_seed(cfg.seed)
    pool = torch.randperm(len(data), generator=gen)[:SIH_POOL].sort().values
    masks = None if data.mask is None else data.mask[pool].to(device)
    try:
        vis = visualise_bias(vae, as_float_images(data.x[pool], device),
                             data.y[pool].to(device), masks, n=SIH_VISUALISED, seed=cfg.seed)
    except DebiaskitError:
        return None, {"pool": len(pool), "split": "train", "error": (
            f"none of {len(pool)} training images is classified correctly by both of SiH's "
            f"classifiers after {cfg.sih_epochs} epochs, so there is no bias to show; give "
            "more --sih-epochs")}
    with tempfile.TemporaryDirectory(prefix="debiaskit-sih-") as tmp:
        png = save_grid(vis, Path(tmp) / SIH_PNG, columns=SIH_COLUMNS, title=(
            f"SiH ({cfg.sih_epochs} epochs): bias visualisation on training images "
            "(DeepFool on the bias latent vs DisEnt-style swap)")).read_bytes()
    scores = {"pool": len(pool), "split": "train", **vis.scores(SIH_IOU_THRESHOLD)}
    return png, scores


def train_sih(inp: DiscoveryInput, cfg: DiscoverConfig, run_dir, device="cpu"):
    """Train SiH label-free into the run folder ``run_dir`` with :func:`debiaskit.train.train`
    (an unfinished run of the same settings there is resumed, a finished one reused), then
    rank every training image by its biased classifier's cross-entropy and render its bias
    visualisation. Returns the :class:`Ranking`, the run's record for discovery.json and the
    visualisation's PNG bytes."""
    from ..train import check_config as check_run_config
    from ..train import load_trained, same_run, train

    data, run_dir = inp.data, Path(run_dir)
    run_cfg = check_run_config(sih_run_config(inp, cfg, device))
    seconds = {}
    t0 = time.perf_counter()
    reused = runs.is_finished(run_dir)
    if reused:
        if not same_run(run_cfg, runs.read_json(run_dir / runs.CONFIG)):
            raise ConfigError(f"{run_dir} holds a finished SiH run of other settings; choose "
                              "a new --out folder")
        summary = runs.read_json(run_dir / runs.SUMMARY)
    else:
        summary = train(run_cfg, run_dir)
    seconds["train"] = time.perf_counter() - t0
    stored = runs.read_json(run_dir / runs.CONFIG)
    if stored.get("data", {}).get("train_checksum") != training_checksum(data):
        raise DebiaskitError(f"{run_dir}: SiH trained on other images than the discovery's "
                             "(the data or its options changed); choose a new --out folder")
    t1 = time.perf_counter()
    prep = load_trained(run_dir, inp.data_dir, run_cfg.device)
    ce, pred = sih_biased_outputs(prep.method, data, device)
    ranking = Ranking("sih", ce.double().numpy(), pred.numpy(), data.y.numpy(), model="sih",
                      net=SiHBiasedNet(prep.method.vae).eval())
    seconds["score"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    png, vis_scores = sih_visualisation(prep.method.vae, data, cfg, device)
    seconds["visualise"] = time.perf_counter() - t2
    seconds["run_train_seconds"] = summary["train_seconds"]  # every epoch, resumed or not
    record = {
        "run": SIH_DIR, "method": "sih", "model": "mlp",
        "settings": {"epochs": run_cfg.epochs, "selection": run_cfg.selection,
                     "batch_size": run_cfg.batch_size, "seed": run_cfg.seed,
                     "hparams": dict(prep.method.hp), "bias_labels": "dropped"},
        "protocol": summary["protocol"], "reused_finished_run": reused,
        "biased_classifier": {"train_accuracy": ranking.accuracy,
                              "error_set_size": int(ranking.errors.sum())},
        "visualisation": ({"png": SIH_PNG, "caption": SIH_CAPTION, **vis_scores}
                          if png is not None else vis_scores),
        "seconds": seconds,
    }
    return ranking, record, png
