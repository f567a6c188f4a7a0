"""LAD, Latent Adversarial Debiasing (Darlow et al.; paper 000, Section 4, Figure 3).

A pipeline of three cached stages (:mod:`debiaskit.stages`) before ordinary training:

1. ``vqvae``: a VQ-VAE ``g`` learns to reconstruct the biased training images (Eq. 2);
2. ``bias_classifier``: a constrained classifier ``f`` (one hidden layer of 100 units)
   learns the class from the flattened quantised latent ``h`` (Eq. 3); being weak and
   fed the whole latent, it latches onto the easy-to-learn confounder;
3. ``walk``: every training latent walks towards maximal entropy of ``f``, re-quantised
   after each step (Algorithm 1, :mod:`debiaskit.methods.lad_walk`), and is decoded into
   a new training image ``x_delta = dec(h_delta)`` (Eq. 7).

The final classifier ``f_strong`` (the run's ``--model``; ResNet-20 in the paper) then
trains with cross-entropy on the decoded images, like Vanilla on the original ones (use the
run's ``augment`` for the paper's augmentation). The paper leaves open, and the options
below fix: the VQ-VAE layout and training (``vq_*``; van den Oord's layout, EMA codebook,
Adam 1e-3), how ``f`` is optimised (``f_*``; the paper: "standard SGD"), where the walk
starts (``walk_start``: the quantised latent ``f`` was trained on, or the encoder's
continuous output), whether steps accumulate on the continuous latent (Eq. 5) or are
undone by each re-quantisation (Algorithm 1; ``walk_accumulate``), whether ``alpha``
applies twice (``alpha_twice``) and whether ``f_strong`` also sees the original images
(``with_originals``).
``walk_objective="random_class"`` is our variant, not the paper's: each latent walks towards
a random other class of ``f`` (drawn per image from the run's seed) and stops there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import BiasedDataset
from ..data.loader import InMemoryLoader
from ..errors import ConfigError
from ..models.vqvae import VQVAE
from .base import HParam, adam, register
from .erm import ERM
from .lad_walk import latent_walk, predictive_entropy

#: Batch size of encoding, walking and decoding (no gradients to parameters: large batches).
WALK_BATCH = 1000
WALK_STARTS = ("quantized", "continuous")
WALK_OBJECTIVES = ("entropy", "random_class")


def bias_classifier(latent_shape, num_classes: int, hidden: int = 100) -> nn.Module:
    """LAD's ``f``: Flatten, Linear(latent, hidden), ReLU, Linear(hidden, classes) (Sec. 5.1)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(latent_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> uint8 (rounded), as datasets store them."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


@register
class LAD(ERM):
    name = "lad"
    relative_cost = 1.5
    hparams = {
        **ERM.hparams,
        "codebook_size": HParam(20, "VQ-VAE codebook size (paper: 20 for MNIST, 2048 CIFAR)", 2,
                                65536),
        "code_dim": HParam(64, "length of each code (paper: 64)", 1, 4096),
        "vq_downsample": HParam(4, "VQ-VAE grid: image side / latent side (4: van den Oord's "
                                "7 x 7 for MNIST; 2: 14 x 14, patches small enough that a code "
                                "holds colour or stroke, not both)", 2, 4,
                                choices=VQVAE.DOWNSAMPLES),
        "vq_hidden": HParam(64, "VQ-VAE channels (van den Oord used 128; 64 for CPU)", 4, 1024),
        "vq_epochs": HParam(3, "VQ-VAE training epochs", 1, 1000),
        "vq_lr": HParam(1e-3, "VQ-VAE Adam learning rate", 0.0, 10.0),
        "vq_batch": HParam(128, "VQ-VAE batch size", 1, 65536),
        "commitment": HParam(0.25, "VQ-VAE commitment cost", 0.0, 100.0),
        "vq_decay": HParam(0.99, "EMA decay of the codebook", 0.0, 1.0),
        "vq_restart": HParam(1.0, "restart codes used less than this many times per batch "
                             "(EMA) at a random latent of the batch (0: never)", 0.0, 1e9),
        "f_hidden": HParam(100, "hidden units of the bias classifier f (paper: 100)", 1, 100000),
        "f_epochs": HParam(1, "training epochs of f", 1, 1000),
        "f_lr": HParam(1e-3, "Adam learning rate of f", 0.0, 10.0),
        "walk_steps": HParam(20, "walk steps (paper: BG MNIST 20, FG MNIST 7, CIFAR 4)", 0, 10000),
        "alpha": HParam(0.1, "walk step size (paper: 0.1 MNIST, 0.07 CIFAR)", 0.0, 100.0),
        "alpha_twice": HParam(False, "multiply by alpha again as Algorithm 1 does (Eq. 6 "
                              "already has it)"),
        "walk_start": HParam("quantized", "start of the walk: quantized | continuous",
                             choices=WALK_STARTS),
        "walk_accumulate": HParam(False, "Eq. 5: steps accumulate on the continuous latent "
                                  "and f sees its quantisation (False: Algorithm 1, the "
                                  "latent is replaced by its quantisation after every step)"),
        "walk_objective": HParam("entropy", "entropy: the paper's walk to maximal entropy of "
                                 "f (Eq. 5); random_class (ours, not the paper's): towards a "
                                 "random other class of f per image, stopping there",
                                 choices=WALK_OBJECTIVES),
        "with_originals": HParam(False, "train f_strong on the original images as well"),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.input_shape = spec.input_shape
        down = self.hp["vq_downsample"]
        if self.input_shape[1] % down or self.input_shape[2] % down:
            raise ConfigError(f"LAD's VQ-VAE with vq_downsample={down} needs image sides "
                              f"divisible by {down}, got "
                              f"{self.input_shape[1]}x{self.input_shape[2]}")

    # --- the stages -------------------------------------------------------------------
    def new_vqvae(self) -> VQVAE:
        hp = self.hp
        return VQVAE(self.input_shape, hp["codebook_size"], hp["code_dim"], hp["vq_hidden"],
                     commitment_cost=hp["commitment"], decay=hp["vq_decay"],
                     restart_below=hp["vq_restart"], downsample=hp["vq_downsample"])

    def train_vqvae(self, train: BiasedDataset, evals: dict, seed: int,
                    device) -> tuple[dict, dict]:
        """Stage 1: fit the VQ-VAE; report reconstruction MSE and PSNR on the first
        evaluation split."""
        hp = self.hp
        vqvae = self.new_vqvae().to(device)
        optimizer = adam(vqvae, hp["vq_lr"])
        loader = InMemoryLoader(train, hp["vq_batch"], shuffle=True, seed=seed, device=device)
        vqvae.train()
        for epoch in range(hp["vq_epochs"]):
            for batch in loader.epoch(epoch):
                _, loss = vqvae(batch.x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        vqvae.eval()
        codes, quality = reconstruct(vqvae, train, device)
        stats = {"train_" + k: v for k, v in quality.items()}
        if evals:
            split, ds = next(iter(evals.items()))
            stats.update({f"{split}_{k}": v for k, v in reconstruct(vqvae, ds, device)[1].items()})
        stats["codes_in_use"] = int(torch.unique(codes).numel())
        # the training set's codes, kept with the model so later stages need not re-encode
        return {"vqvae": vqvae.state_dict(), "codes": codes.to(torch.int32).cpu()}, stats

    @staticmethod
    def encode_continuous(vqvae: VQVAE, train: BiasedDataset, device) -> torch.Tensor:
        """The encoder's outputs before quantisation (N x D x grid) of every image."""
        with torch.inference_mode():
            return torch.cat([vqvae.encode(batch.x) for batch in InMemoryLoader(
                train, WALK_BATCH, shuffle=False, device=device).epoch(0)])

    def train_bias_classifier(self, vqvae: VQVAE, codes: torch.Tensor, train: BiasedDataset,
                              seed: int, device) -> tuple[dict, dict]:
        """Stage 2: fit ``f`` on the flattened quantised latents (``codes`` of ``train``)
        with cross-entropy."""
        hp = self.hp
        gen = torch.Generator().manual_seed(seed)
        f = bias_classifier(vqvae.latent_shape, train.num_classes, hp["f_hidden"]).to(device)
        optimizer = adam(f, hp["f_lr"])
        y = train.y.to(device)
        correct = 0
        for _ in range(hp["f_epochs"]):
            order = torch.randperm(len(codes), generator=gen).to(device)
            correct = 0
            for lo in range(0, len(order), 256):
                idx = order[lo:lo + 256]
                logits = f(vqvae.quantizer.lookup(codes[idx]))
                loss = F.cross_entropy(logits, y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                correct += (logits.argmax(1) == y[idx]).sum().item()
        stats = {"f_last_epoch_train_accuracy": 100.0 * correct / len(codes)}
        if train.b is not None:  # reported only: how much f follows the bias
            with torch.inference_mode():
                pred = torch.cat([f(vqvae.quantizer.lookup(codes[lo:lo + WALK_BATCH])).argmax(1)
                                  for lo in range(0, len(codes), WALK_BATCH)]).cpu()
            stats["f_agrees_with_bias"] = 100.0 * (pred == train.b).float().mean().item()
        return {"f": f.state_dict()}, stats

    def walk(self, vqvae: VQVAE, f: nn.Module, codes: torch.Tensor, train: BiasedDataset,
             seed: int, device) -> tuple[dict, dict]:
        """Stage 3: walk every training latent (``codes`` of ``train``; Algorithm 1) and
        decode it (Eq. 7)."""
        hp = self.hp
        continuous = (self.encode_continuous(vqvae, train, device)
                      if hp["walk_start"] == "continuous" else None)
        images, changed, before, after, follows, reached = [], 0.0, 0.0, 0.0, 0, 0
        y = train.y.to(device)
        targets = None
        if hp["walk_objective"] == "random_class":  # uniform over the other classes
            shift = torch.randint(1, train.num_classes, (len(y),),
                                  generator=torch.Generator().manual_seed(seed))
            targets = (y + shift.to(device)) % train.num_classes
        f.eval()
        for lo in range(0, len(codes), WALK_BATCH):
            start = (vqvae.quantizer.lookup(codes[lo:lo + WALK_BATCH])
                     if hp["walk_start"] == "quantized" else continuous[lo:lo + WALK_BATCH])
            target = None if targets is None else targets[lo:lo + WALK_BATCH]
            walked = latent_walk(f, vqvae.quantizer.quantize, start, hp["walk_steps"],
                                 hp["alpha"], hp["alpha_twice"], hp["walk_accumulate"], target)
            with torch.inference_mode():
                before += predictive_entropy(f(vqvae.quantizer.lookup(
                    codes[lo:lo + WALK_BATCH]))).sum().item()
                logits = f(walked)
                after += predictive_entropy(logits).sum().item()
                follows += (logits.argmax(1) == y[lo:lo + WALK_BATCH]).sum().item()
                if target is not None:
                    reached += (logits.argmax(1) == target).sum().item()
                changed += (vqvae.quantizer.nearest(walked) != codes[lo:lo + WALK_BATCH]
                            ).float().mean((1, 2)).sum().item()
                images.append(to_uint8(vqvae.decode(walked)).cpu())
        n = len(codes)
        stats = {"entropy_before": before / n, "entropy_after": after / n,
                 "max_entropy": math.log(train.num_classes),
                 "codes_changed_fraction": changed / n,
                 # f still finds the label in the walked latent: the cue it used survived
                 "f_predicts_label_after": 100.0 * follows / n}
        if targets is not None:
            stats["f_predicts_target_after"] = 100.0 * reached / n
        return {"images": torch.cat(images)}, stats

    def prepare_training_data(self, train: BiasedDataset, evals: dict, store, seed: int,
                              device) -> BiasedDataset:
        """Run (or load) the three stages; return the decoded walked training set."""
        hp = self.hp
        base = {"train_checksum": train.checksum(), "seed": seed}
        # a stage cached before an option existed was made as with its default
        defaults = {name: param.default for name, param in self.hparams.items()}
        vq_settings = ("codebook_size", "code_dim", "vq_downsample", "vq_hidden", "vq_epochs",
                       "vq_lr", "vq_batch", "commitment", "vq_decay", "vq_restart")
        vq_key = {**base, "layout": VQVAE.LAYOUT, **{k: hp[k] for k in vq_settings}}
        vq_art = store.run("vqvae", vq_key, seeded(seed, lambda: self.train_vqvae(
            train, evals, seed, device)), defaults)
        vqvae = self.new_vqvae().to(device)
        vqvae.load_state_dict(vq_art["vqvae"])
        vqvae.eval()
        codes = vq_art["codes"].long().to(device)
        f_key = {**base, "vqvae": store.checksum("vqvae"),
                 **{k: hp[k] for k in ("f_hidden", "f_epochs", "f_lr")}}
        f_art = store.run("bias_classifier", f_key, seeded(seed, lambda: self.train_bias_classifier(
            vqvae, codes, train, seed, device)), defaults)
        f = bias_classifier(vqvae.latent_shape, train.num_classes, hp["f_hidden"]).to(device)
        f.load_state_dict(f_art["f"])
        walk_key = {**base, "vqvae": store.checksum("vqvae"),
                    "bias_classifier": store.checksum("bias_classifier"),
                    **{k: hp[k] for k in ("walk_steps", "alpha", "alpha_twice", "walk_start",
                                          "walk_accumulate", "walk_objective")}}
        walked = store.run("walk", walk_key, lambda: self.walk(vqvae, f, codes, train, seed,
                                                               device), defaults)
        decoded = BiasedDataset(name=f"{train.name}+lad", x=walked["images"], y=train.y,
                                num_classes=train.num_classes, b=train.b,
                                num_bias=train.num_bias, aligned_bias=train.aligned_bias,
                                meta={**train.meta, "lad": "decoded walked latents"})
        if not hp["with_originals"]:
            return decoded
        return BiasedDataset.concatenate([train, decoded], name=f"{train.name}+lad+originals")


def seeded(seed: int, compute):
    """``compute`` run with the global RNG seeded by ``seed`` and restored afterwards, so a
    stage's result does not depend on whether earlier stages were computed or loaded."""
    def run():
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return compute()
    return run


@torch.inference_mode()
def reconstruct(vqvae: VQVAE, ds: BiasedDataset, device) -> tuple[torch.Tensor, dict]:
    """One pass of the (eval-mode) VQ-VAE over ``ds``: every image's code indices
    (N x grid) and the mean squared error and PSNR (dB) of its reconstructions."""
    codes, total, n = [], 0.0, 0
    for batch in InMemoryLoader(ds, WALK_BATCH, shuffle=False, device=device).epoch(0):
        quantized, _, batch_codes = vqvae.quantizer(vqvae.encode(batch.x))
        recon = vqvae.decode(quantized)
        total += F.mse_loss(recon, batch.x, reduction="sum").item()
        n += batch.x.numel()
        codes.append(batch_codes)
    mse = total / n
    return torch.cat(codes), {"recon_mse": mse,
                              "recon_psnr_db": 10 * math.log10(1.0 / max(mse, 1e-12))}
