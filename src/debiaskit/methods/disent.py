"""DisEnt (Lee et al., NeurIPS 2021, "Learning debiased representation via disentangled
feature augmentation"), label-free.

Two encoders give intrinsic features z_i and bias features z_b; two linear classifiers
C_i and C_b both read the concatenation [z_i, z_b]. C_i's loss reaches only z_i and C_b's
only z_b (the other half is detached). As in LfF, C_b is trained with GCE and C_i with
cross-entropy weighted by the relative difficulty W = CE_b / (CE_b + CE_i) from per-sample
EMAs (decay 0.7) normalised by their class maximum (Eq. 2, L_dis). After ``swap_start``
optimisation steps the bias features are permuted within the batch, giving
[z_i, z_b(perm)] with label y for C_i and label y(perm) for C_b (Eq. 3, L_swap); the
objective is L_dis + lambda_swap * L_swap (Eq. 4). Predictions are C_i([z_i, z_b]).

Defaults are the authors' Colored MNIST settings (their code; docs/methods/sih.md): Adam lr
0.01, lambda_dis = 10, lambda_swap_b = 10, lambda_swap = 1, swapping once more than
``swap_start`` (10k) steps are done, the learning rate halved every 10k steps of a
schedule that starts counting at step ``lr_decay_start`` (10k; so 0.01 until step 20k,
then 0.005, ...), the last incomplete batch of every epoch dropped, 50k steps (214 epochs
of 234 full batches of 256 from 60k images, rounded up; set by the preset). Their network is 2352-100-100-16
per branch (``--model-opt feature_dim=16`` with the MLP; the sih-cmnist preset sets it)
and divides its [0, 1] inputs by 255 once more (``--model-opt input_scale_quirk=true``).
Their GCE (LfF's class) returns CE * p_y^q * q, whose gradient is q times the paper's GCE
gradient; ``gce_code_scale=true`` does the same (the bias branch's Adam steps then match
theirs: tests/parity/fixtures/disent-cmnist-mlp-24steps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import PerSampleEMA, generalized_cross_entropy, relative_difficulty
from ..models import feature_extractor
from .base import Method, aligned_conflicting_means, register
from .hparams import HParam, log_uniform, optimiser_hparams


@register
class DisEnt(Method):
    name = "disent"
    relative_cost = 2.2
    declared_hparams = {
        **optimiser_hparams(0.01, of="both branches"),
        "q": HParam(0.7, "GCE exponent q of the bias branch", 0.0, 1.0),
        "ema": HParam(0.7, "per-sample EMA decay of both branches' CE", 0.0, 1.0),
        "lambda_dis": HParam(10.0, "weight of the bias branch's GCE in L_dis (Eq. 2)", 0.0, 1e4),
        "lambda_swap_b": HParam(10.0, "weight of the bias branch's GCE in L_swap (Eq. 3)",
                                0.0, 1e4),
        "lambda_swap": HParam(1.0, "weight of L_swap in the objective (Eq. 4)", 0.0, 1e4,
                              search=log_uniform(0.1, 10.0)),
        "swap_start": HParam(10_000, "feature swapping starts after this many optimisation "
                             "steps", 0, 10**9),
        "lr_decay_step": HParam(10_000, "steps between learning-rate decays (0: none)", 0, 10**9),
        "lr_decay": HParam(0.5, "learning-rate factor at every decay", 0.0, 1.0),
        "lr_decay_start": HParam(10_000, "step from which the decay schedule counts (the "
                                 "first decay comes lr_decay_step steps later)", 0, 10**9),
        "drop_last": HParam(True, "drop each epoch's last incomplete batch (authors' loader)"),
        "gce_code_scale": HParam(False, "multiply both GCE terms by q as the authors' code "
                                 "does (LfF's GCE class)", authors_code=True),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        for role in ("intrinsic", "bias"):
            encoder, dim = feature_extractor(make_network())
            self.add_network(role, nn.ModuleDict({
                "encoder": encoder, "classifier": nn.Linear(2 * dim, spec.num_classes)}))
            self.tables[role] = PerSampleEMA(spec.train_targets, spec.num_classes, self.hp["ema"])
        # optimisation steps taken so far (a buffer, so resumed runs keep counting)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @property
    def drop_last(self) -> bool:
        return self.hp["drop_last"]

    def _classify(self, role: str, z_i, z_b):
        """C_role on [z_i, z_b], the gradient reaching only the role's own features."""
        pair = (z_i, z_b.detach()) if role == "intrinsic" else (z_i.detach(), z_b)
        return self.networks[role]["classifier"](torch.cat(pair, dim=1))

    def sample_weights(self, index):
        return relative_difficulty(self.tables["bias"].normalized(index),
                                   self.tables["intrinsic"].normalized(index))

    def _set_lr(self) -> None:
        counted = max(0, int(self.steps) - self.hp["lr_decay_start"])
        every = self.hp["lr_decay_step"]
        lr = self.hp["lr"] * (self.hp["lr_decay"] ** (counted // every) if every else 1.0)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def _features(self, x):
        """(z_i, z_b); both encoders read ``x``: their first layers as one product (packed)."""
        return self.forward_shared([self.networks["intrinsic"]["encoder"],
                                    self.networks["bias"]["encoder"]], x)

    def loss(self, batch, training=True):
        z_i, z_b = self._features(batch.x)
        logits_i, logits_b = self._classify("intrinsic", z_i, z_b), self._classify("bias", z_i, z_b)
        ce_i = F.cross_entropy(logits_i, batch.y, reduction="none")
        ce_b = F.cross_entropy(logits_b, batch.y, reduction="none")
        if training:
            self.tables["intrinsic"].update(batch.index, ce_i)
            self.tables["bias"].update(batch.index, ce_b)
            weight = self.sample_weights(batch.index)
        else:  # held-out samples have no EMA: the instantaneous relative difficulty
            weight = relative_difficulty(ce_b.detach(), ce_i.detach())
        q, code_scale = self.hp["q"], self.hp["gce_code_scale"]
        loss_dis = ((weight * ce_i).mean() + self.hp["lambda_dis"]
                    * generalized_cross_entropy(logits_b, batch.y, q, code_scale, ce=ce_b).mean())
        stats = {"loss_dis": loss_dis.item(), "weight_mean": weight.mean().item()}
        loss = loss_dis
        if int(self.steps) > self.hp["swap_start"]:  # the authors' `step > curr_step`
            perm = torch.randperm(len(batch.y), device=batch.y.device)
            z_b_swap, y_swap = z_b[perm], batch.y[perm]
            swap_i = self._classify("intrinsic", z_i, z_b_swap)
            swap_b = self._classify("bias", z_i, z_b_swap)
            loss_swap = ((weight * F.cross_entropy(swap_i, batch.y, reduction="none")).mean()
                         + self.hp["lambda_swap_b"]
                         * generalized_cross_entropy(swap_b, y_swap, q, code_scale).mean())
            loss = loss + self.hp["lambda_swap"] * loss_swap
            stats["loss_swap"] = loss_swap.item()
        stats["loss"] = loss.item()
        return loss, stats

    def update(self, batch):
        self._set_lr()
        stats = super().update(batch)
        self.steps += 1
        return stats

    def predict(self, x):
        z_i, z_b = self._features(x)
        return self.networks["intrinsic"]["classifier"](torch.cat([z_i, z_b], dim=1))

    def auxiliary_predictors(self):
        def biased(x):
            z_i, z_b = self._features(x)
            return self.networks["bias"]["classifier"](torch.cat([z_i, z_b], dim=1))
        return {"biased": biased}

    def epoch_stats(self, train):
        """Optimisation steps so far and the learning rate (the schedule runs in steps),
        and with bias labels the mean weight of aligned and conflicting samples."""
        stats = {"steps": int(self.steps),
                 "lr": self.optimizers["intrinsic"].param_groups[0]["lr"]}
        if train.b is not None:
            device = self.tables["bias"].values.device
            stats.update(aligned_conflicting_means(
                self.sample_weights(torch.arange(len(train), device=device)), train))
        return stats
