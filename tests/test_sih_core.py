"""SiH's core against hand-computed values, on a hand-made two-encoder VAE (fixed latent
means and log-variances, identity classifier heads, a decoder whose logits are a sum of
the latents), so that every term of the loss is a closed-form number: the
reparameterisation of the latent, the biased term (GCE and the authors' code value) as a
function of the per-sample CE it is given, the four terms and the statistics of
``SiH.loss``, and the SiH_RDS ablation's relative-difficulty weights (per-sample EMA
tables, class-max normalisation; the instantaneous ratio on held-out samples)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from debiaskit.methods.base import DataSpec
from debiaskit.methods.sih import SiH, SiHRDS
from debiaskit.models import NetworkFactory

LN2, LN3 = math.log(2), math.log(3)


class HandVAE(nn.Module):
    """Both encoders return fixed rows (whatever the images); the heads are the identity,
    so the logits are the latents; the decoder's logit at every pixel is
    ``sum(z_signal) - sum(z_bias)``."""

    def __init__(self, mean_s, log_var_s, mean_b, log_var_b):
        super().__init__()
        self.rows = (mean_s, log_var_s, mean_b, log_var_b)
        self.signal_head = nn.Identity()
        self.bias_head = nn.Identity()

    def encode(self, x):
        return self.rows

    def decode_logits(self, z_signal, z_bias):
        logit = z_signal.sum(1) - z_bias.sum(1)
        return logit[:, None, None, None].expand(len(logit), 1, 2, 2)


SPEC = DataSpec(input_shape=(1, 2, 2), num_classes=2, num_train=4,
                train_targets=torch.tensor([1, 0, 1, 0]))


def _method(cls=SiH, **hp):
    torch.manual_seed(0)
    method = cls(SPEC, NetworkFactory("mlp", (1, 2, 2), 2), {"latent_dim": 2, **hp})
    # two samples, y = (0, 1):
    #   signal logits (ln 3, 0), (0, 0): p_s,y = 3/4, 1/2; CE_s = ln(4/3), ln 2
    #   bias logits   (0, 0), (ln 3, 0): p_b,y = 1/2, 1/4; CE_b = ln 2, ln 4
    #   log-variances: signal 0 everywhere; bias (ln 2, 0) for sample 0, 0 for sample 1
    method.networks["vae"] = HandVAE(
        torch.tensor([[LN3, 0.0], [0.0, 0.0]]), torch.zeros(2, 2),
        torch.tensor([[0.0, 0.0], [LN3, 0.0]]), torch.tensor([[LN2, 0.0], [0.0, 0.0]]))
    return method


def _batch():
    # sample 0 all ones, sample 1 all zeros; dataset indices 1 and 2 (classes 0 and 1)
    x = torch.stack([torch.ones(1, 2, 2), torch.zeros(1, 2, 2)])
    return SimpleNamespace(x=x, y=torch.tensor([0, 1]), index=torch.tensor([1, 2]))


# --- the latent: mean + noise * exp(log_var / 2) ----------------------------------------------

def test_latent_is_the_mean_plus_noise_times_the_standard_deviation():
    method = _method()
    mean = torch.tensor([[1.0, -2.0]])
    log_var = torch.tensor([[math.log(4.0), 0.0]])        # standard deviations 2 and 1
    seen = []
    method.noise = lambda m: seen.append(m) or torch.full_like(m, 0.5)
    # 1 + 0.5 * 2 = 2 and -2 + 0.5 * 1 = -1.5 (a variance instead of a standard deviation:
    # 1 + 0.5 * 8 = 5; noise divided by the deviation: 1.25; mean minus noise: 0)
    z = method._latent(mean, log_var, training=True)
    assert torch.equal(z, torch.tensor([[2.0, -1.5]]))
    assert len(seen) == 1 and seen[0] is mean
    # evaluating, or with classify_sample off: the mean itself, no draw
    assert method._latent(mean, log_var, training=False) is mean
    off = _method(classify_sample=False)
    off.noise = method.noise
    assert off._latent(mean, log_var, training=True) is mean
    assert len(seen) == 1


# --- the biased classifier's term --------------------------------------------------------------

def test_bias_term_is_a_function_of_the_given_per_sample_ce():
    """``bias_loss`` reads the per-sample CE the step computed (p_y = exp(-CE)); with
    ``gce_q`` = 0.5 (not the default 0.7, so a dropped ``q`` shows):
    CE = 0, ln 2, ln 4 -> p_y = 1, 1/2, 1/4 ->
    GCE (1 - p^0.5) / 0.5 = 0, 2 - sqrt 2 = 0.5857864, 1;
    code value CE * p^0.5 = 0, ln 2 / sqrt 2 = 0.4901291, ln 4 / 2 = 0.6931472."""
    ce = torch.tensor([0.0, LN2, 2 * LN2])
    gce = _method(gce_q=0.5).bias_loss(None, None, ce)
    assert torch.allclose(gce, torch.tensor([0.0, 0.5857864, 1.0]), atol=1e-6, rtol=0)
    code = _method(gce_q=0.5, gce_code_value=True).bias_loss(None, None, ce)
    assert torch.allclose(code, torch.tensor([0.0, 0.4901291, 0.6931472]), atol=1e-6, rtol=0)


# --- SiH's loss, term by term -----------------------------------------------------------------

def test_sih_loss_on_the_hand_made_vae():
    """q = gce_q = 0.5, reconstruction_weight = 2, kl_weight = 2, C*H*W = 4, latent means.

    - focal weights (1 - p_b,y)^0.5 = sqrt(1/2) = 0.7071068, sqrt(3/4) = 0.8660254;
      signal term mean(w * CE_s) = (0.7071068 ln(4/3) + 0.8660254 ln 2) / 2 = 0.4018525;
    - bias term GCE (1 - p_b,y^0.5) / 0.5: (0.5857864 + 1) / 2 = 0.7928932;
    - reconstruction: decoder logits ln 3 (sample 0, x = 1) and -ln 3 (sample 1, x = 0):
      BCE ln(4/3) per pixel, 4 ln(4/3) = 1.1507283 per sample; term 2 * 1.1507283 / 4;
    - KL: sample 0: signal 0.5 (ln 3)^2 = 0.6034745, bias 0.5 (2 - 1 - ln 2) = 0.1534264;
      sample 1: bias 0.6034745; mean 0.6801877; term 2 * 0.6801877 / 4 = 0.3400938.
    Total 0.4018525 + 0.7928932 + 0.5753641 + 0.3400938 = 2.1102037."""
    method = _method(q=0.5, gce_q=0.5, reconstruction_weight=2.0, kl_weight=2.0)
    loss, stats = method.loss(_batch(), training=False)
    want = {"loss_signal": 0.4018525, "loss_bias": 0.7928932,
            "reconstruction": 1.1507283, "kl": 0.6801877, "weight_mean": 0.7865661,
            "loss": 2.1102037}
    assert set(stats) == set(want)
    for key, value in want.items():
        assert stats[key] == pytest.approx(value, abs=2e-6), key
    assert loss.item() == pytest.approx(2.1102037, abs=2e-6)
    # the authors' value of the biased term, CE * p^0.5: (ln 2 / sqrt 2 + ln 4 / 2) / 2
    code = _method(q=0.5, gce_q=0.5, reconstruction_weight=2.0, kl_weight=2.0,
                   gce_code_value=True)
    loss, stats = code.loss(_batch(), training=False)
    assert stats["loss_bias"] == pytest.approx(0.5916381, abs=2e-6)
    assert loss.item() == pytest.approx(2.1102037 - 0.7928932 + 0.5916381, abs=2e-6)


def test_sih_loss_training_uses_the_latent_sample():
    """While training the classifiers and the decoder see mean + noise * std; a noise of
    -ln 3 on every latent coordinate (std 1 except sample 0's first bias coordinate,
    sqrt 2) moves the signal logits of sample 0 to (0, -ln 3): p_s,y = 3/4 stays, and
    those of sample 1 to (-ln 3, -ln 3): p_s,y = 1/2 stays; the bias logits of sample 0
    become (-sqrt 2 ln 3, -ln 3) and of sample 1 (0, -ln 3). So the signal CE is unchanged
    and only the bias term, the weights and the reconstruction move: a latent that kept
    the mean would give the held-out numbers."""
    method = _method(q=0.5, gce_q=0.5, reconstruction_weight=2.0, kl_weight=2.0)
    method.noise = lambda m: torch.full_like(m, -LN3)
    _, trained = method.loss(_batch(), training=True)
    _, held_out = method.loss(_batch(), training=False)
    # bias, sample 0 (y = 0): logit of class 1 over class 0 a = (sqrt 2 - 1) ln 3, so
    # p_b,y = 1 / (1 + e^a) = 0.3882; sample 1 (y = 1): (1/3) / (1 + 1/3) = 1/4, unchanged
    a = LN3 * (math.sqrt(2) - 1)
    p0 = 1 / (1 + math.exp(a))
    w = [math.sqrt(1 - p0), math.sqrt(3 / 4)]
    assert trained["weight_mean"] == pytest.approx(sum(w) / 2, abs=2e-6)
    assert trained["weight_mean"] != pytest.approx(held_out["weight_mean"], abs=1e-3)
    gce = ((1 - math.sqrt(p0)) / 0.5 + 1.0) / 2
    assert trained["loss_bias"] == pytest.approx(gce, abs=2e-6)
    # KL reads the means and log-variances, not the sample
    assert trained["kl"] == pytest.approx(held_out["kl"], abs=1e-7)


# --- SiH_RDS: LfF's relative difficulty as the weight ------------------------------------------

def test_rds_weights_by_hand():
    """Dataset classes (1, 0, 1, 0); a batch of indices 1 and 3 (both class 0) with
    CE_b = 1, 2 and CE_s = 3, 2. First visit stores the raw CE; each is divided by its
    class maximum (bias 2, signal 3): W = (1/2) / (1/2 + 3/3) = 1/3 and
    (2/2) / (2/2 + 2/3) = 0.6. Held out (no EMA): CE_b / (CE_b + CE_s) = 0.25 and 0.5."""
    method = _method(SiHRDS, ema=0.5)
    batch = SimpleNamespace(index=torch.tensor([1, 3]), y=torch.tensor([0, 0]))
    ce_b, ce_s = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0])
    w = method.weights(batch, ce_s, ce_b, training=True)
    assert w.shape == (2,)
    assert torch.allclose(w, torch.tensor([1 / 3, 0.6]), atol=1e-6, rtol=0)
    assert torch.equal(method.tables["bias"].values, torch.tensor([0.0, 1.0, 0.0, 2.0]))
    assert torch.equal(method.tables["signal"].values, torch.tensor([0.0, 3.0, 0.0, 2.0]))
    assert torch.allclose(method.sample_weights(torch.tensor([3, 1])),
                          torch.tensor([0.6, 1 / 3]), atol=1e-6, rtol=0)
    # held out: the instantaneous ratio, and the tables are left alone
    held = method.weights(batch, ce_s, ce_b, training=False)
    assert torch.allclose(held, torch.tensor([0.25, 0.5]), atol=1e-6, rtol=0)
    assert torch.equal(method.tables["bias"].values, torch.tensor([0.0, 1.0, 0.0, 2.0]))
    # second visit, EMA 0.5: bias (1 + 3) / 2 = 2 and (2 + 0) / 2 = 1 (class max 2),
    # signal (3 + 1) / 2 = 2 and (2 + 2) / 2 = 2 (class max 2):
    # W = (2/2) / (2/2 + 2/2) = 0.5 and (1/2) / (1/2 + 2/2) = 1/3
    w = method.weights(batch, torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]),
                       training=True)
    assert torch.allclose(w, torch.tensor([0.5, 1 / 3]), atol=1e-6, rtol=0)


def test_rds_loss_weights_the_signal_ce_by_the_tables():
    """SiH_RDS's loss on the hand-made VAE (indices 1 and 2, classes 0 and 1;
    CE_b = ln 2, ln 4, CE_s = ln(4/3), ln 2). The tables are filled beforehand at the
    batch's class-mates: bias index 3 (class 0) 2 ln 2, signal index 0 (class 1) ln 4.
    Training, first visit: bias normalised ln 2 / 2 ln 2 = 1/2 and ln 4 / ln 4 = 1,
    signal ln(4/3) / ln(4/3) = 1 and ln 2 / ln 4 = 1/2: W = 1/3 and 2/3, signal term
    (ln(4/3) / 3 + 2 ln 2 / 3) / 2 = 0.2789961. Held out: W = CE_b / (CE_b + CE_s) =
    0.7066951 and 2/3, signal term 0.3327008, the tables untouched."""
    method = _method(SiHRDS, classify_sample=False)
    method.tables["bias"].update(torch.tensor([3]), torch.tensor([2 * LN2]))
    method.tables["signal"].update(torch.tensor([0]), torch.tensor([2 * LN2]))
    _, held = method.loss(_batch(), training=False)
    assert held["weight_mean"] == pytest.approx((0.7066951 + 2 / 3) / 2, abs=2e-6)
    assert held["loss_signal"] == pytest.approx(0.3327008, abs=2e-6)
    assert not bool(method.tables["bias"].seen[[1, 2]].any())
    _, trained = method.loss(_batch(), training=True)
    assert trained["weight_mean"] == pytest.approx(0.5, abs=2e-6)
    assert trained["loss_signal"] == pytest.approx(0.2789961, abs=2e-6)
    assert torch.allclose(method.tables["bias"].values,
                          torch.tensor([0.0, LN2, 2 * LN2, 2 * LN2]), atol=1e-6, rtol=0)
    assert torch.allclose(method.tables["signal"].values,
                          torch.tensor([2 * LN2, math.log(4 / 3), LN2, 0.0]), atol=1e-6,
                          rtol=0)
