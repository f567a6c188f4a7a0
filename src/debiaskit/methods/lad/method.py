"""The LAD method: its cached stages (VQ-VAE, f, walk-length rule, walk) and training
``f_strong`` on the walked images (see :mod:`debiaskit.methods.lad`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...data.augment import AUGMENTATIONS
from ...data.dataset import BiasedDataset
from ...data.loader import InMemoryLoader, as_float_images
from ...errors import ConfigError
from ...models.vqvae import VQVAE
from ...optim import OptimizerSpec, build_optimizer
from ..base import adam, register
from ..erm import ERM
from .options import (DIAGNOSTIC, F_STOP_WINDOW, F_SETTINGS, IMPLIED_BEFORE, PAPER, RULE,
                      RULE_SETTINGS, VQ_SETTINGS, WALK_BATCH, WALK_SETTINGS)
from .rule import parse_alphas, walk_rule
from .walk import latent_walk, predictive_entropy, spacing_scale


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
    declared_hparams = {**ERM.declared_hparams, **PAPER, **RULE, **DIAGNOSTIC}

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
        return {**{name: param.default for name, param in cls.declared_hparams.items()},
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
        (:mod:`debiaskit.methods.lad.rule`), run (or loaded) as stage ``walk_rule``."""
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
