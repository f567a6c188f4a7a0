"""Signal is Harder (SiH, Section 3 and Appendix B; docs/methods/sih.md).

A two-encoder VAE (:mod:`debiaskit.models.vae`) trained with four terms, summed:

- biased classifier on the bias latent, generalized cross-entropy (no extra q factor);
- unbiased classifier on the signal latent, cross-entropy weighted by the focal factor
  ``(1 - p_b,y)^q`` of the biased classifier's probability of the true class, detached
  (Eq. 4);
- reconstruction: BCE (or MSE, for colour datasets as SiH did on CIFAR) summed over the
  pixels, divided by C*H*W and multiplied by 100 (Appendix B);
- KL divergence of both latents to N(0, I), summed over latent dimensions, divided by C*H*W.

``sih_rds`` is the paper's ablation (Table 2): the same model with LfF's relative
difficulty score (per-sample EMA, class-wise max normalisation) as the weight.

Choices the paper leaves open, as options: the classifiers see a reparameterised sample
of the latent while training and its mean when evaluating (``classify_sample``); held-out
losses (early stopping) use the latent means. Selection by default is SiH's label-free
protocol: early stopping on this loss over a 10 % held-out split (``early_stop``).

Where SiH's code differs from the paper, options reproduce it (``authors_code``; step
parity with it in tests/parity/fixtures/sih-*): ``gce_code_value`` gives the biased term
the value CE * p_y^q (same gradient as GCE, another objective for early stopping) and
``drop_last`` drops each epoch's incomplete last batch. ``SiH.noise`` can supply the
reparameterisation noise from outside (default ``torch.randn_like``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.loader import as_float_images
from ..losses import PerSampleEMA, generalized_cross_entropy, relative_difficulty
from ..models.vae import TwoEncoderVAE, build_two_encoder_vae
from ..errors import unknown_name
from .base import Method, aligned_conflicting_means, register
from .hparams import HParam, optimiser_hparams

#: Reconstruction likelihoods: name -> per-sample loss summed over pixels, from logits.
RECONSTRUCTION = {
    "bce": lambda logits, x: F.binary_cross_entropy_with_logits(
        logits, x, reduction="none").flatten(1).sum(1),
    "mse": lambda logits, x: (torch.sigmoid(logits) - x).square().flatten(1).sum(1),
}


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(1)


def focal_weight(ce_biased: torch.Tensor, q: float) -> torch.Tensor:
    """SiH Eq. (4): ``(1 - p_b,y)^q`` from the biased classifier's per-sample CE
    (``p_b,y = exp(-CE)``), detached; large where the biased classifier fails."""
    return (-torch.expm1(-ce_biased.detach())).pow(q)


@register
class SiH(Method):
    name = "sih"
    default_selection = "early_stop"
    relative_cost = 14.0  # two encoders and a 200-512-1024-2352 decoder vs a 3-layer MLP
    declared_hparams = {
        **optimiser_hparams(1e-3, weight_decay=None),
        "q": HParam(0.7, "focal exponent q of the unbiased classifier's weight (Eq. 4)",
                    0.0, 1.0),
        "gce_q": HParam(0.7, "GCE exponent q of the biased classifier", 0.0, 1.0),
        "reconstruction": HParam("bce", "reconstruction loss: bce (MNIST) or mse (CIFAR)"),
        "reconstruction_weight": HParam(100.0, "factor on the reconstruction term after "
                                        "dividing by C*H*W (Appendix B)", 0.0, 1e6),
        "kl_weight": HParam(1.0, "factor on the KL term after dividing by C*H*W", 0.0, 1e6),
        "latent_dim": HParam(0, "latent size per encoder (0: 100 for mlp, 512 for resnet18)",
                             0, 4096),
        "classify_sample": HParam(True, "classifiers see a latent sample while training "
                                  "(False: the mean)"),
        "gce_code_value": HParam(False, "the biased classifier's term takes the value "
                                 "CE * p_y^q (p_y detached) as SiH's code computes it, not "
                                 "GCE (1 - p_y^q) / q: the same gradient, another value of the "
                                 "objective (held-out early stopping and the LR plateaus "
                                 "compare it)", authors_code=True),
        "drop_last": HParam(False, "drop each epoch's last incomplete batch, as SiH's "
                            "training loader does", authors_code=True),
    }

    #: The reparameterisation noise: a function of a latent mean returning standard normal
    #: noise of its shape (default ``torch.randn_like``, looked up at each call). A parity
    #: replay sets it on an instance to inject a reference code's recorded draws
    #: (tests/parity/replay_sih.py); it is called for the signal latent, then the bias one.
    noise = None

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        if self.hp["reconstruction"] not in RECONSTRUCTION:
            raise unknown_name("reconstruction loss", self.hp["reconstruction"], RECONSTRUCTION)
        self.add_network("vae", build_two_encoder_vae(
            make_network.name, spec.input_shape, spec.num_classes, self.hp["latent_dim"] or None))
        self.pixels = math.prod(spec.input_shape)

    @property
    def drop_last(self) -> bool:
        return self.hp["drop_last"]

    @property
    def vae(self) -> TwoEncoderVAE:
        return self.networks["vae"]

    def _latent(self, mean, log_var, training: bool):
        if training and self.hp["classify_sample"]:
            noise = (self.noise or torch.randn_like)(mean)
            return mean + noise * (0.5 * log_var).exp()
        return mean

    def weights(self, batch, ce_signal, ce_bias, training: bool):
        """The unbiased classifier's per-sample weight (focal factor, Eq. 4), detached."""
        return focal_weight(ce_bias, self.hp["q"])

    def bias_loss(self, logits_b, y, ce_b):
        """The biased classifier's per-sample term: GCE (1 - p_y^q) / q, or with
        ``gce_code_value`` the value SiH's code gives it, CE * p_y^q with p_y detached (the
        same gradient)."""
        q = self.hp["gce_q"]
        if self.hp["gce_code_value"]:
            return ce_b * torch.exp(-q * ce_b.detach())
        return generalized_cross_entropy(logits_b, y, q, ce=ce_b)

    def loss(self, batch, training=True):
        mean_s, log_var_s, mean_b, log_var_b = self.vae.encode(batch.x)
        z_s = self._latent(mean_s, log_var_s, training)
        z_b = self._latent(mean_b, log_var_b, training)
        logits_s, logits_b = self.vae.signal_head(z_s), self.vae.bias_head(z_b)
        ce_s = F.cross_entropy(logits_s, batch.y, reduction="none")
        ce_b = F.cross_entropy(logits_b, batch.y, reduction="none")
        weight = self.weights(batch, ce_s, ce_b, training)

        loss_signal = (weight * ce_s).mean()
        loss_bias = self.bias_loss(logits_b, batch.y, ce_b).mean()
        recon_logits = self.vae.decode_logits(z_s, z_b)
        recon = RECONSTRUCTION[self.hp["reconstruction"]](recon_logits, batch.x).mean()
        kl = (gaussian_kl(mean_s, log_var_s) + gaussian_kl(mean_b, log_var_b)).mean()
        loss = (loss_signal + loss_bias + self.hp["reconstruction_weight"] * recon / self.pixels
                + self.hp["kl_weight"] * kl / self.pixels)
        return loss, {"loss": loss.item(), "loss_signal": loss_signal.item(),
                      "loss_bias": loss_bias.item(), "reconstruction": recon.item(),
                      "kl": kl.item(), "weight_mean": weight.mean().item()}

    def predict(self, x):
        return self.vae.signal_head(self.vae.signal_encoder(x)[0])

    def predict_biased(self, x):
        return self.vae.bias_head(self.vae.bias_encoder(x)[0])

    def auxiliary_predictors(self):
        return {"biased": self.predict_biased}

    @torch.no_grad()
    def training_weights(self, train):
        """The focal weight (Eq. 4) of every training sample, from the biased classifier on
        latent means."""
        device = next(self.vae.parameters()).device
        was_training = self.vae.training
        self.vae.eval()
        weights = []
        for lo in range(0, len(train), 2048):
            x = as_float_images(train.x[lo:lo + 2048], device)
            y = train.y[lo:lo + 2048].to(device)
            ce = F.cross_entropy(self.predict_biased(x), y, reduction="none")
            weights.append(focal_weight(ce, self.hp["q"]).cpu())
        self.vae.train(was_training)
        return torch.cat(weights)

    def epoch_stats(self, train):
        """Mean focal weight over aligned and conflicting training samples (needs bias
        labels; only reported)."""
        if train.b is None:
            return {}
        return aligned_conflicting_means(self.training_weights(train), train)


@register
class SiHRDS(SiH):
    """SiH with LfF's relative difficulty score as the weight (SiH, Table 2).

    While training the weight comes from per-sample EMAs (decay ``ema``) of both
    classifiers' CE, each divided by its class maximum, as in LfF. Held-out samples have
    no EMA, so there the weight is the instantaneous ``CE_b / (CE_b + CE_s)``.
    """

    name = "sih_rds"
    declared_hparams = {**SiH.declared_hparams,
               "ema": HParam(0.7, "per-sample EMA decay of both classifiers' CE", 0.0, 1.0)}

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        for role in ("bias", "signal"):
            self.tables[role] = PerSampleEMA(spec.train_targets, spec.num_classes, self.hp["ema"])

    def weights(self, batch, ce_signal, ce_bias, training: bool):
        if not training:
            return relative_difficulty(ce_bias.detach(), ce_signal.detach())
        self.tables["bias"].update(batch.index, ce_bias)
        self.tables["signal"].update(batch.index, ce_signal)
        return self.sample_weights(batch.index)

    def sample_weights(self, index: torch.Tensor) -> torch.Tensor:
        """Current relative-difficulty weights of the training samples at ``index``."""
        return relative_difficulty(self.tables["bias"].normalized(index),
                                   self.tables["signal"].normalized(index))

    @torch.no_grad()
    def epoch_stats(self, train):
        if train.b is None:
            return {}
        device = self.tables["bias"].values.device
        return aligned_conflicting_means(
            self.sample_weights(torch.arange(len(train), device=device)), train)
