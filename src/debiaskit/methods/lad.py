"""LAD, Latent Adversarial Debiasing (Darlow et al.; LAD, Section 4, Figure 3).

A pipeline of cached stages (:mod:`debiaskit.stages`) before ordinary training:

1. ``vqvae``: a VQ-VAE ``g`` learns to reconstruct the biased training images (Eq. 2);
2. ``bias_classifier``: a constrained classifier ``f`` (one hidden layer of 100 units)
   learns the class from the flattened quantised latent ``h`` (Eq. 3) with plain SGD (the
   paper's "standard SGD"); being weak and fed the whole latent, it latches onto the
   easy-to-learn confounder;
2b. ``walk_rule`` (only when ``alpha`` or ``walk_steps`` is 0, the defaults): the
   walk-length rule of :mod:`debiaskit.methods.lad_rule` chooses them on held-out training
   images, as the paper's cross-validation did on its own latent scale;
3. ``walk``: every training latent walks towards maximal entropy of ``f``, re-quantised
   after each step (Algorithm 1, :mod:`debiaskit.methods.lad_walk`), and is decoded into
   a new training image ``x_delta = dec(h_delta)`` (Eq. 7).

The final classifier ``f_strong`` (the run's ``--model``; ResNet-20 in the paper) then
trains with cross-entropy on the decoded images, like Vanilla on the original ones (use the
run's ``augment`` for the paper's augmentation). The paper leaves open, and the options
below fix: the VQ-VAE layout and training (``vq_*``; van den Oord's layout, EMA codebook,
Adam 1e-3), how ``f`` is optimised and constrained (``f_*``), where the walk
starts (``walk_start``: the quantised latent ``f`` was trained on, or the encoder's
continuous output), whether steps accumulate on the continuous latent (Eq. 5) or are
undone by each re-quantisation (Algorithm 1; ``walk_accumulate``), whether ``alpha``
applies twice (``alpha_twice``) and whether ``f_strong`` also sees the original images
(``with_originals``).
``walk_objective="random_class"`` is our variant, not the paper's: each latent walks towards
a random other class of ``f`` (drawn per image from the run's seed) and stops there.

Options that test why a walk remaps a class's cue instead of removing it (each default
keeps the walk as before; :mod:`debiaskit.explain.walk_diagnostic` measures them):
``f_optimizer`` / ``f_momentum`` / ``f_steps`` / ``f_label_smoothing`` (an ``f`` that is
not saturated), ``f_temperature`` (the walk reads ``f``'s logits divided by it),
``walk_augment`` / ``walk_jitter`` / ``walk_views`` (walks that start from different
points for images of one class, several per image) and ``alpha_units`` (steps measured in
the codebook's spacing instead of gradient standard deviations).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import AUGMENTATIONS
from ..data.dataset import BiasedDataset
from ..data.loader import InMemoryLoader, as_float_images
from ..errors import ConfigError
from ..models.vqvae import VQVAE
from ..optim import OptimizerSpec, build_optimizer
from .base import HParam, adam, register
from .erm import ERM
from .lad_rule import parse_alphas, walk_rule
from .lad_walk import latent_walk, predictive_entropy, spacing_scale

#: Batch size of encoding, walking and decoding (no gradients to parameters: large batches).
WALK_BATCH = 1000
#: f's default SGD learning rate, chosen on training images with the walk diagnostic
#: (docs/lad-findings.md, "The diagnostic table over the new region").
F_LR = 0.01
WALK_STARTS = ("quantized", "continuous")
WALK_OBJECTIVES = ("entropy", "random_class")
F_OPTIMIZERS = ("adam", "sgd")
ALPHA_UNITS = ("std", "spacing")
#: Settings of each stage, in its cache key (a stage reruns when one of them changes).
VQ_SETTINGS = ("codebook_size", "code_dim", "vq_downsample", "vq_hidden", "vq_epochs", "vq_lr",
               "vq_batch", "commitment", "vq_decay", "vq_restart")
F_SETTINGS = ("f_hidden", "f_epochs", "f_lr", "f_optimizer", "f_momentum", "f_steps",
              "f_label_smoothing", "f_stop_accuracy", "f_stop_entropy", "f_l1")
#: Batches over which f's stopping rule averages its training accuracy and entropy.
F_STOP_WINDOW = 10
WALK_SETTINGS = ("walk_steps", "alpha", "alpha_twice", "walk_start", "walk_accumulate",
                 "walk_objective", "f_temperature", "walk_augment", "walk_jitter", "walk_views",
                 "alpha_units")
#: Settings of the walk-length rule (:mod:`debiaskit.methods.lad_rule`), in its stage's key.
RULE_SETTINGS = ("walk_rule_alphas", "walk_rule_max_steps", "walk_rule_images",
                 "walk_rule_entropy", "walk_rule_iou")
#: What a stage key written before an option existed implies for it, where that differs
#: from the option's current default (f was trained with Adam before SGD became the default).
IMPLIED_BEFORE = {"f_optimizer": "adam"}


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
        "f_lr": HParam(F_LR, "learning rate of f", 0.0, 10.0),
        "f_optimizer": HParam("sgd", "optimiser of f: sgd (the paper's \"standard SGD\"), or "
                              "adam (learns the weak cue too and saturates f; use f_lr=0.001 "
                              "with it)", choices=F_OPTIMIZERS),
        "f_momentum": HParam(0.0, "SGD momentum of f (f_optimizer=sgd)", 0.0, 1.0),
        "f_steps": HParam(0, "stop f's training after this many steps of batch 256 (0: all "
                          "f_epochs)", 0, 10**9),
        "f_label_smoothing": HParam(0.0, "label smoothing of f's cross-entropy (keeps f "
                                    "from saturating)", 0.0, 1.0),
        "f_stop_accuracy": HParam(0.0, "the paper's \"we also constrain f\" as a stopping "
                                  "rule: stop f once its training accuracy (%, mean of the "
                                  "last 10 batches, before each step) reaches this (0: off)",
                                  0.0, 100.0),
        "f_stop_entropy": HParam(0.0, "stop f once its mean predictive entropy on the last 10 "
                                 "batches falls to this (nats; 0: off): f confident but "
                                 "not saturated", 0.0, 100.0),
        "f_l1": HParam(0.0, "constrain f: L1 penalty, this times the sum of |weights| of "
                       "f's first layer, added to its loss (0: none)", 0.0, 100.0),
        "f_temperature": HParam(1.0, "the walk reads f's logits divided by this (above 1: "
                                "a saturated f gives the walk gradients)", 1e-3, 1e6),
        "walk_steps": HParam(0, "walk steps (paper: BG MNIST 20, FG MNIST 7, CIFAR 4; 0: "
                             "chosen by the walk-length rule)", 0, 10000),
        "alpha": HParam(0.0, "walk step size (paper: 0.1 MNIST, 0.07 CIFAR; 0: chosen by "
                        "the walk-length rule, in code spacings)", 0.0, 100.0),
        "walk_rule_alphas": HParam("0.05,0.1,0.2,0.3,0.5,1", "the walk-length rule's step "
                                   "sizes to try, in code spacings (comma-separated)"),
        "walk_rule_max_steps": HParam(40, "the walk-length rule's longest walk (steps)", 1,
                                      10000),
        "walk_rule_images": HParam(1000, "training images the walk-length rule holds out "
                                   "from f' and walks", 10, 10**7),
        "walk_rule_entropy": HParam(0.8, "the rule's end state: f' unsure, mean entropy at "
                                    "least this share of log(classes)", 0.0, 1.0),
        "walk_rule_iou": HParam(0.8, "the rule keeps the digit: mean stroke IoU of the "
                                "walked and the start image, decoded, at least this",
                                0.0, 1.0),
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
        "walk_augment": HParam("none", "augmentation of the image each walk starts from "
                               "(one of the training augmentations): images of a class no "
                               "longer start from the same code", choices=tuple(AUGMENTATIONS)),
        "walk_jitter": HParam(0.0, "Gaussian noise on each start latent, about this many code "
                              "spacings per latent position (0: none)", 0.0, 100.0),
        "walk_views": HParam(1, "walks per training image, each from its own draw of "
                             "walk_augment / walk_jitter; f_strong trains on all of them "
                             "(an epoch costs walk_views times as much)", 1, 64),
        "rewalk_every": HParam(0, "0: f_strong trains on every walk view each epoch; k: "
                               "on one view per epoch, the next view every k epochs (a "
                               "re-walk every k epochs, the walks computed once)", 0, 10**6),
        "alpha_units": HParam("std", "std: alpha in standard deviations of the gradient "
                              "(Eq. 6); spacing: each latent position moves about alpha "
                              "times the median distance between neighbouring codes",
                              choices=ALPHA_UNITS),
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
        hp = self.hp
        if hp["walk_views"] > 1 and hp["walk_augment"] == "none" and not hp["walk_jitter"]:
            raise ConfigError("walk_views > 1 makes identical walks without walk_augment or "
                              "walk_jitter; give one of them (e.g. --hp walk_augment=crop_affine)")
        if hp["walk_objective"] == "random_class" and hp["walk_views"] > 1:
            raise ConfigError("walk_views > 1 is for the entropy walk; use walk_views=1 with "
                              "walk_objective=random_class")
        if not hp["alpha"]:
            parse_alphas(hp["walk_rule_alphas"])
        #: how the walk's alpha and steps were set: "given", or "rule" once chosen
        self.walk_chosen_by = "given" if hp["alpha"] and hp["walk_steps"] else None
        self.rule_met: bool | None = None  # whether the rule's choice met its bars

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

    def train_bias_classifier(self, vqvae: VQVAE, codes: torch.Tensor, train: BiasedDataset,
                              seed: int, device) -> tuple[dict, dict]:
        """Stage 2: fit ``f`` on the flattened quantised latents (``codes`` of ``train``)
        with cross-entropy."""
        hp = self.hp
        gen = torch.Generator().manual_seed(seed)
        f = bias_classifier(vqvae.latent_shape, train.num_classes, hp["f_hidden"]).to(device)
        optimizer = build_optimizer(f.parameters(), OptimizerSpec(
            name=hp["f_optimizer"], lr=hp["f_lr"], momentum=hp["f_momentum"]))
        y = train.y.to(device)
        correct, seen, steps = 0, 0, 0
        limit = hp["f_steps"] or math.inf
        recent_accuracy, recent_entropy, stopped_by = [], [], None
        for _ in range(hp["f_epochs"]):
            order = torch.randperm(len(codes), generator=gen).to(device)
            correct, seen = 0, 0
            for lo in range(0, len(order), 256):
                if steps >= limit or stopped_by:
                    break
                idx = order[lo:lo + 256]
                logits = f(vqvae.quantizer.lookup(codes[idx]))
                loss = F.cross_entropy(logits, y[idx], label_smoothing=hp["f_label_smoothing"])
                if hp["f_l1"]:
                    loss = loss + hp["f_l1"] * f[1].weight.abs().sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                hits = (logits.argmax(1) == y[idx]).sum().item()
                correct += hits
                seen += len(idx)
                steps += 1
                stopped_by = self._f_stop(recent_accuracy, recent_entropy,
                                          100.0 * hits / len(idx),
                                          predictive_entropy(logits.detach()).mean().item())
        stats = {"f_last_epoch_train_accuracy": 100.0 * correct / max(seen, 1), "f_steps": steps,
                 "f_stopped_by": stopped_by or ("f_steps" if steps >= limit else "f_epochs")}
        if train.b is not None:  # reported only: how much f follows the bias
            with torch.inference_mode():
                pred = torch.cat([f(vqvae.quantizer.lookup(codes[lo:lo + WALK_BATCH])).argmax(1)
                                  for lo in range(0, len(codes), WALK_BATCH)]).cpu()
            stats["f_agrees_with_bias"] = 100.0 * (pred == train.b).float().mean().item()
        return {"f": f.state_dict()}, stats

    def load_bias_classifier(self, vqvae: VQVAE, num_classes: int, artefact: dict,
                             device) -> nn.Module:
        """``f`` (eval mode) from a bias-classifier stage's artefact."""
        f = bias_classifier(vqvae.latent_shape, num_classes, self.hp["f_hidden"]).to(device)
        f.load_state_dict(artefact["f"])
        f.eval()
        return f

    def _f_stop(self, accuracies: list, entropies: list, accuracy: float,
                entropy: float) -> str | None:
        """f's stopping rule (``f_stop_accuracy`` / ``f_stop_entropy``): adds one batch's
        training accuracy and mean entropy to the windows of the last
        :data:`F_STOP_WINDOW` batches and names the rule that stops f, if one does (only
        once the window is full)."""
        for window, value in ((accuracies, accuracy), (entropies, entropy)):
            window.append(value)
            del window[:-F_STOP_WINDOW]
        if len(accuracies) < F_STOP_WINDOW:
            return None
        hp = self.hp
        if hp["f_stop_accuracy"] and sum(accuracies) / F_STOP_WINDOW >= hp["f_stop_accuracy"]:
            return "f_stop_accuracy"
        if hp["f_stop_entropy"] and sum(entropies) / F_STOP_WINDOW <= hp["f_stop_entropy"]:
            return "f_stop_entropy"
        return None

    # --- the walk ---------------------------------------------------------------------
    def step_unit(self, vqvae: VQVAE, codes: torch.Tensor) -> float:
        """Per-element size of one "code spacing" (:func:`spacing_scale` over the codes in
        use): the unit of ``walk_jitter``, and of ``alpha`` with ``alpha_units="spacing"``."""
        return spacing_scale(vqvae.quantizer.codebook, torch.unique(codes))

    def walk_classifier(self, f: nn.Module):
        """``f`` as the walk reads it: logits divided by ``f_temperature``."""
        temperature = self.hp["f_temperature"]
        return f if temperature == 1.0 else (lambda h: f(h) / temperature)

    def start_latents(self, vqvae: VQVAE, x: torch.Tensor, codes: torch.Tensor, unit: float,
                      gen: torch.Generator, mask: torch.Tensor | None = None):
        """Where the walks of a batch start: the cached quantised latent (``codes``) or the
        encoder's output of the uint8 images ``x``, of an augmented view if
        ``walk_augment``, plus ``walk_jitter`` noise drawn from ``gen``. Returns ``(start,
        mask)`` with the foreground ``mask`` moved as the images were (or None)."""
        hp = self.hp
        augment = AUGMENTATIONS[hp["walk_augment"]]()
        with torch.inference_mode():
            if augment is None and hp["walk_start"] == "quantized":
                start = vqvae.quantizer.lookup(codes)
            else:
                images = as_float_images(x, codes.device)
                if augment is not None:
                    images, mask = augment.apply(images, gen, mask)
                start = vqvae.encode(images)
                if hp["walk_start"] == "quantized":
                    start = vqvae.quantizer.quantize(start)
            if hp["walk_jitter"]:
                noise = torch.randn(start.shape, generator=gen).to(start.device)
                start = start + noise * (hp["walk_jitter"] * unit)
        return start.clone(), mask

    def walk_latents(self, vqvae: VQVAE, f: nn.Module, start: torch.Tensor, unit: float,
                     target: torch.Tensor | None = None, on_step=None, alpha: float | None = None,
                     steps: int | None = None, units: str | None = None) -> torch.Tensor:
        """Algorithm 1 (:func:`latent_walk`) from ``start`` with this run's settings
        (``alpha``, ``steps`` and ``units`` replace the run's, for the walk-length rule)."""
        hp = self.hp
        units = units or hp["alpha_units"]
        return latent_walk(self.walk_classifier(f), vqvae.quantizer.quantize, start,
                           steps or hp["walk_steps"], alpha or hp["alpha"], hp["alpha_twice"],
                           hp["walk_accumulate"], target,
                           step_scale=unit if units == "spacing" else 1.0, on_step=on_step)

    @staticmethod
    def view_generator(seed: int, view: int) -> torch.Generator:
        """The random source of walk view ``view`` (augmentation and jitter draws)."""
        return torch.Generator().manual_seed(seed * 1009 + view)

    def walk(self, vqvae: VQVAE, f: nn.Module, codes: torch.Tensor, train: BiasedDataset,
             seed: int, device) -> tuple[dict, dict]:
        """Stage 3: walk every training latent (``codes`` of ``train``; Algorithm 1),
        ``walk_views`` times, and decode it (Eq. 7). The images are view after view."""
        hp = self.hp
        unit = self.step_unit(vqvae, codes)
        images, changed, before, after, follows, reached = [], 0.0, 0.0, 0.0, 0, 0
        y = train.y.to(device)
        targets = None
        if hp["walk_objective"] == "random_class":  # uniform over the other classes
            shift = torch.randint(1, train.num_classes, (len(y),),
                                  generator=torch.Generator().manual_seed(seed))
            targets = (y + shift.to(device)) % train.num_classes
        f.eval()
        for view in range(hp["walk_views"]):
            gen = self.view_generator(seed, view)
            for lo in range(0, len(codes), WALK_BATCH):
                batch_codes = codes[lo:lo + WALK_BATCH]
                start, _ = self.start_latents(vqvae, train.x[lo:lo + WALK_BATCH], batch_codes,
                                              unit, gen)
                target = None if targets is None else targets[lo:lo + WALK_BATCH]
                walked = self.walk_latents(vqvae, f, start, unit, target)
                with torch.inference_mode():
                    start_codes = vqvae.quantizer.nearest(start)
                    before += predictive_entropy(f(vqvae.quantizer.lookup(start_codes))
                                                 ).sum().item()
                    logits = f(walked)
                    after += predictive_entropy(logits).sum().item()
                    follows += (logits.argmax(1) == y[lo:lo + WALK_BATCH]).sum().item()
                    if target is not None:
                        reached += (logits.argmax(1) == target).sum().item()
                    changed += (vqvae.quantizer.nearest(walked) != start_codes
                                ).float().mean((1, 2)).sum().item()
                    images.append(to_uint8(vqvae.decode(walked)).cpu())
        n = len(codes) * hp["walk_views"]
        stats = {"walk_chosen_by": self.walk_chosen_by, "alpha": hp["alpha"],
                 "alpha_units": hp["alpha_units"], "walk_steps": hp["walk_steps"],
                 "entropy_before": before / n, "entropy_after": after / n,
                 "max_entropy": math.log(train.num_classes),
                 "codes_changed_fraction": changed / n,
                 # f still finds the label in the walked latent: the cue it used survived
                 "f_predicts_label_after": 100.0 * follows / n}
        if targets is not None:
            stats["f_predicts_target_after"] = 100.0 * reached / n
        return {"images": torch.cat(images)}, stats

    @classmethod
    def stage_defaults(cls) -> dict:
        """Default of every option: a stage cached before an option existed was made as
        with its default."""
        return {**{name: param.default for name, param in cls.hparams.items()},
                **IMPLIED_BEFORE}

    def fit_stages(self, train: BiasedDataset, evals: dict, store, seed: int, device,
                   base: dict | None = None) -> tuple[VQVAE, torch.Tensor, nn.Module]:
        """Run (or load) stages 1 and 2; return the eval-mode VQ-VAE, the training set's
        code indices and ``f``. ``base`` is the key part every stage shares (the training
        set's checksum and the seed), computed here if not given."""
        hp = self.hp
        base = base or {"train_checksum": train.checksum(), "seed": seed}
        defaults = self.stage_defaults()
        vq_key = {**base, "layout": VQVAE.LAYOUT, **{k: hp[k] for k in VQ_SETTINGS}}
        vq_art = store.run("vqvae", vq_key, seeded(seed, lambda: self.train_vqvae(
            train, evals, seed, device)), defaults)
        vqvae = self.new_vqvae().to(device)
        vqvae.load_state_dict(vq_art["vqvae"])
        vqvae.eval()
        codes = vq_art["codes"].long().to(device)
        f_key = {**base, "vqvae": store.checksum("vqvae"), **{k: hp[k] for k in F_SETTINGS}}
        f_art = store.run("bias_classifier", f_key, seeded(seed, lambda: self.train_bias_classifier(
            vqvae, codes, train, seed, device)), defaults)
        return vqvae, codes, self.load_bias_classifier(vqvae, train.num_classes, f_art, device)

    def choose_walk(self, vqvae: VQVAE, codes: torch.Tensor, train: BiasedDataset, store,
                    seed: int, device, base: dict | None = None) -> None:
        """Set the walk's ``alpha`` / ``walk_steps`` (and ``alpha_units``) in :attr:`hp`:
        as given, or, where one is 0, by the walk-length rule
        (:mod:`debiaskit.methods.lad_rule`), run (or loaded) as stage ``walk_rule``."""
        hp = self.hp
        if hp["alpha"] and hp["walk_steps"]:
            self.walk_chosen_by = "given"
            return
        base = base or {"train_checksum": train.checksum(), "seed": seed}
        key = {**base, "vqvae": store.checksum("vqvae"), **{k: hp[k] for k in F_SETTINGS},
               **{k: hp[k] for k in WALK_SETTINGS}, **{k: hp[k] for k in RULE_SETTINGS}}
        store.run("walk_rule", key, seeded(seed, lambda: walk_rule(
            self, vqvae, codes, train, seed, device)), self.stage_defaults())
        chosen = store.records["walk_rule"]["stats"]
        self.hp = {**hp, "alpha": chosen["alpha"], "alpha_units": chosen["alpha_units"],
                   "walk_steps": chosen["walk_steps"]}
        self.walk_chosen_by = "rule"
        self.rule_met = chosen["met"]

    def prepare_training_data(self, train: BiasedDataset, evals: dict, store, seed: int,
                              device) -> BiasedDataset:
        """Run (or load) the stages; return the decoded walked training set."""
        base = {"train_checksum": train.checksum(), "seed": seed}
        vqvae, codes, f = self.fit_stages(train, evals, store, seed, device, base)
        self.choose_walk(vqvae, codes, train, store, seed, device, base)
        hp = self.hp  # with the walk's alpha and steps as chosen: the walk's key holds them
        walk_key = {**base, "vqvae": store.checksum("vqvae"),
                    "bias_classifier": store.checksum("bias_classifier"),
                    **{k: hp[k] for k in WALK_SETTINGS}}
        walked = store.run("walk", walk_key, lambda: self.walk(vqvae, f, codes, train, seed,
                                                               device), self.stage_defaults())
        views = hp["walk_views"]
        labels = train if views == 1 else BiasedDataset.concatenate([train] * views, train.name)
        decoded = BiasedDataset(name=f"{train.name}+lad", x=walked["images"], y=labels.y,
                                num_classes=train.num_classes, b=labels.b,
                                num_bias=train.num_bias, aligned_bias=train.aligned_bias,
                                meta={**train.meta, "lad": "decoded walked latents"})
        if not hp["with_originals"]:
            return decoded
        return BiasedDataset.concatenate([train, decoded], name=f"{train.name}+lad+originals")

    def protocol_note(self) -> str | None:
        """The walk's length, and whether the walk-length rule chose it (and met its bars)."""
        if self.walk_chosen_by is None:
            return None
        hp = self.hp
        units = "code spacings" if hp["alpha_units"] == "spacing" else "gradient std"
        steps = hp["walk_steps"]
        plural = "" if steps == 1 else "s"
        text = f"LAD walk: {steps} step{plural} of alpha {hp['alpha']:g} {units}"
        if self.walk_chosen_by == "given":
            return text + " (given)"
        met = self.rule_met
        return text + (" chosen by the walk-length rule on held-out training images"
                       + ("" if met else " (no walk met its bars: the most unsure walk "
                          "that keeps the digit)"))

    def begin_epoch(self, epoch: int, train_loader):
        """With ``rewalk_every = k > 0``: this epoch's indices are one walk view's (view
        ``(epoch // k) mod walk_views`` of the data :meth:`prepare_training_data` built,
        after the originals if ``with_originals``)."""
        every = self.hp["rewalk_every"]
        if not every:
            return None
        n, originals = self.spec.num_train, self.hp["with_originals"]
        view = (epoch // every) % self.hp["walk_views"]
        pool = (n if originals else 0) + view * n + torch.arange(n)
        return torch.cat([torch.arange(n), pool]) if originals else pool


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
