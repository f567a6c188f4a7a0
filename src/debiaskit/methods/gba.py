"""Gradient-Based Activations (GBA) and its adversarial baseline.

Networks (GBA, Eq. 1): a feature extractor ``F`` (the run's ``--model`` without its
final layer: ``forward_features``), a classifier ``C`` on the features and a
discriminator ``D`` that predicts the bias label from the features through a gradient
reversal layer (Ganin & Lempitsky 2015), so that one backward pass of
``L_c + L_d`` trains ``D`` to minimise ``L_d`` and ``F`` to maximise ``lambda * L_d``:
the cost ``C = L_c - lambda * L_d`` of Eq. 3.

GBA's mask (Eq. 4-8; docs/methods/gba.md): ``ind = +1`` where ``D``'s argmax is the true bias
label, else ``-1`` (Eq. 4); ``g`` = gradient of ``D``'s MAXIMAL logit w.r.t. the features
(Eq. 5-6); ``a = 0`` where ``g * ind > 0``, else 1 (Eq. 7; ``g = 0`` keeps the feature);
the classifier sees ``f * a`` (Eq. 8), ``D`` the raw ``f``; the mask is a constant (no
gradient flows through it). Ablations (Table 5): ``gba_n`` masks ``g > 0`` regardless of
``D``'s correctness, ``gba_c`` masks ``g > 0`` only where ``D`` is right and passes the raw
features otherwise. ``none`` (no mask) is the Adversarial baseline.

Choices the paper leaves open, each an option (defaults in brackets):
- ``lambda_adv`` [0.1] and ``lambda_schedule`` [constant; ``dann``: Ganin's ramp
  ``2 / (1 + exp(-10 p)) - 1`` over the run's progress ``p``]. 0.1 is the largest value of
  the training-data sweep at which GBA's masked features keep training on Colored MNIST;
  1.0 (the authors' earlier gradient-reversal code) stays an option: there the reversed
  loss drives F's ReLU features to zero and C ends at chance (docs/methods/gba.md);
- ``D``'s depth and width [one hidden layer of 100 ReLU units] and dropout [0];
- ``reversal`` [``features``: the reversal layer between F and D; ``none``: D learns on
  detached features and F never sees ``L_d``: the mask alone];
- ``disc_features`` [``raw``: D (through the reversal) sees the raw ``f``, as we read the
  paper; ``masked``: D sees ``f * a`` as well, the other reading of "f_cls is
  now used for the training in the adversarial manner"];
- ``mask_disc_mode`` [``eval``]: ``D``'s mode while the mask gradient is taken (matters with
  dropout);
- ``test_mask`` [``none``]: what C sees at test time, where the bias label is unknown.
  ``none`` classifies the raw features. ``predicted`` builds the mask of Eq. 7 taking
  ``D``'s prediction as correct (``ind = +1``: the features ``D`` relies on are dropped);
  on a bias-conflicting image D is mostly wrong, so this applies the opposite of the mask
  that image would have had in training. ``label`` uses the true bias labels of the
  evaluation data (an oracle, for analysis). ``none`` is the default because it is the
  only one that neither needs bias labels nor inverts the training mask on the images the
  method is for;
- ``classifier_hidden`` [0: one linear layer]: the paper's ResNet-18 has its last fully
  connected layer replaced by two (width not given); a positive value gives ``C`` a hidden
  layer of that width.
The results depend on ``lambda_adv``, ``test_mask`` and ``classifier_hidden`` most.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import as_float_images
from ..errors import ConfigError
from .base import Method, register
from .hparams import HParam, log_uniform, optimiser_hparams

MASK_RULES = {
    "gba": "Eq. 7: drop features whose gradient sign agrees with D's correctness",
    "gba_n": "GBA-n: drop features with a positive gradient regardless of D's correctness",
    "gba_c": "GBA-c: drop positive-gradient features where D is right, raw features otherwise",
    "none": "no mask (the Adversarial baseline)",
}
TEST_MASKS = ("none", "predicted", "label")
LAMBDA_SCHEDULES = ("constant", "dann")
REVERSALS = ("features", "none")
DISC_MODES = ("eval", "train")
DISC_FEATURES = ("raw", "masked")


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by ``-scale``."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, scale)


def gba_mask(grad: torch.Tensor, correct: torch.Tensor | None, rule: str) -> torch.Tensor:
    """The float mask ``a`` (1 keep, 0 drop) of features with gradient ``grad`` (N x d) of
    D's maximal logit, given whether D is right per sample (``correct``, N bools)."""
    if rule == "none":
        return torch.ones_like(grad)
    if rule == "gba_n" or correct is None:
        return (grad <= 0).to(grad.dtype)
    if rule == "gba":
        ind = torch.where(correct, 1.0, -1.0).to(grad.dtype)[:, None]
        return (grad * ind <= 0).to(grad.dtype)
    if rule == "gba_c":
        return torch.where(correct[:, None], grad <= 0, True).to(grad.dtype)
    raise ConfigError(f"unknown GBA mask rule {rule!r}; use one of {', '.join(MASK_RULES)}")


def mlp_head(width: int, hidden: int, layers: int, out: int, dropout: float = 0.0) -> nn.Module:
    """``layers`` hidden Linear-ReLU(-Dropout) layers of ``hidden`` units, then Linear(., out)."""
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = hidden
    return nn.Sequential(*mods, nn.Linear(width, out))


@register
class GBA(Method):
    name = "gba"
    requires = frozenset({"bias"})
    relative_cost = 1.3
    declared_hparams = {
        **optimiser_hparams(1e-3, of="F and C"),
        "disc_lr": HParam(1e-3, "Adam learning rate of the discriminator D", 0.0, 10.0),
        "lambda_adv": HParam(0.1, "lambda of Eq. 3: weight of the reversed D loss for F",
                             0.0, 100.0, search=log_uniform(0.01, 10.0)),
        "lambda_schedule": HParam("constant", "constant | dann (Ganin's 2/(1+exp(-10p))-1 ramp)",
                                  choices=LAMBDA_SCHEDULES),
        "mask_rule": HParam("gba", "gba (Eq. 7) | gba_n | gba_c | none (Adversarial)",
                            choices=tuple(MASK_RULES)),
        "test_mask": HParam("none", "mask at test time: none (raw features) | predicted "
                                    "(D taken as right) | label (oracle)", choices=TEST_MASKS),
        "reversal": HParam("features", "features: reversal layer between F and D | none",
                           choices=REVERSALS),
        "disc_hidden": HParam(100, "hidden units per layer of D", 1, 100_000),
        "disc_layers": HParam(1, "hidden layers of D", 0, 16),
        "disc_dropout": HParam(0.0, "dropout after each hidden layer of D", 0.0, 0.99),
        "mask_disc_mode": HParam("eval", "D's mode while the mask gradient is taken: eval | train",
                                 choices=DISC_MODES),
        "disc_features": HParam("raw", "what D sees through the reversal: raw (f) | "
                                       "masked (f * a)", choices=DISC_FEATURES),
        "classifier_hidden": HParam(0, "hidden units of C (0: one linear layer)", 0, 100_000),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.check_bias_values()
        backbone = make_network()
        if not hasattr(backbone, "forward_features"):
            raise ConfigError(f"{self.name} needs a network with forward_features")
        width = backbone.num_features
        backbone.reset_classifier(0)
        hp = self.hp
        self.add_network("features", backbone)
        self.add_network("classifier", mlp_head(width, hp["classifier_hidden"],
                                                int(hp["classifier_hidden"] > 0),
                                                spec.num_classes))
        self.add_network("discriminator", mlp_head(width, hp["disc_hidden"], hp["disc_layers"],
                                                   spec.num_bias, hp["disc_dropout"]),
                         lr=hp["disc_lr"], weight_decay=0.0)
        # the run's progress for the dann schedule: the trainer's epoch / epochs
        self.register_buffer("progress", torch.zeros(()))

    # --- pieces ------------------------------------------------------------------------
    @property
    def lambda_now(self) -> float:
        if self.hp["lambda_schedule"] == "dann":
            return self.hp["lambda_adv"] * (2.0 / (1.0 + math.exp(-10.0 * float(self.progress)))
                                            - 1.0)
        return self.hp["lambda_adv"]

    def disc_gradient(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, D's argmax): the gradient of D's maximal logit w.r.t. the (detached) features
        (Eq. 5-6), and D's predicted bias value, with D in ``mask_disc_mode``."""
        disc = self.networks["discriminator"]
        was_training = disc.training
        disc.train(self.hp["mask_disc_mode"] == "train")
        with torch.enable_grad():
            fd = f.detach().float().requires_grad_(True)
            logits = disc(fd)
            grad, = torch.autograd.grad(logits.max(1).values.sum(), fd)
        disc.train(was_training)
        return grad, logits.argmax(1).detach()

    def mask(self, f: torch.Tensor, b: torch.Tensor | None, rule: str) -> torch.Tensor:
        """Eq. 4-7 on features ``f`` with true bias labels ``b`` (None: D taken as right)."""
        if rule == "none":
            return torch.ones_like(f)
        grad, predicted = self.disc_gradient(f)
        correct = None if b is None else predicted == b
        return gba_mask(grad, correct, rule).to(f.dtype)

    # --- the contract ------------------------------------------------------------------
    def begin_epoch(self, epoch, train_loader):
        self.progress.fill_(min(epoch / max(self.total_epochs or 1, 1), 1.0))
        return None

    def loss(self, batch, training=True):
        f = self.networks["features"].forward_features(batch.x)
        a = self.mask(f, batch.b, self.hp["mask_rule"])
        logits_c = self.networks["classifier"](f * a)
        f_d = f * a if self.hp["disc_features"] == "masked" else f
        if self.hp["reversal"] == "features":
            f_d = reverse_gradient(f_d, self.lambda_now)
        else:
            f_d = f_d.detach()
        logits_d = self.networks["discriminator"](f_d)
        loss_c = F.cross_entropy(logits_c, batch.y)
        loss_d = F.cross_entropy(logits_d, batch.b)
        stats = {"loss": loss_c.item(), "loss_disc": loss_d.item(),
                 "disc_accuracy": (logits_d.argmax(1) == batch.b).float().mean().item(),
                 "masked": 1.0 - a.mean().item()}
        return loss_c + loss_d, stats

    def predict(self, x, b=None):
        """Logits of C on the test-time mask: ``test_mask`` none (raw features), predicted
        (D taken as right), label (D's correctness from the bias labels ``b``)."""
        test_mask = self.hp["test_mask"]
        if test_mask == "label" and b is None:
            raise ConfigError(f"{self.name}.test_mask=label needs bias labels on the "
                              "evaluation data; use test_mask=none or predicted")
        f = self.networks["features"].forward_features(x)
        rule = "none" if test_mask == "none" else self.hp["mask_rule"]
        return self.networks["classifier"](
            f * self.mask(f, b if test_mask == "label" else None, rule))

    def predict_batch(self, batch):
        return self.predict(batch.x, batch.b)

    @torch.no_grad()
    def epoch_stats(self, train):
        """Share of features masked on aligned vs conflicting training samples, and D's
        accuracy on raw vs masked features (on up to 2,048 training samples; reported)."""
        if train.b is None or self.hp["mask_rule"] == "none":
            return {}
        device = self.progress.device
        gen = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(train), generator=gen)[:2048]
        x = as_float_images(train.x[pick], device)
        b, aligned = train.b[pick].to(device), train.aligned[pick].to(device)
        was = self.training
        self.train(False)
        f = self.networks["features"].forward_features(x)
        a = self.mask(f, b, self.hp["mask_rule"])
        disc = self.networks["discriminator"]
        out = {"masked_aligned": 1.0 - a[aligned].mean().item() if aligned.any() else math.nan,
               "masked_conflicting": (1.0 - a[~aligned].mean().item()) if (~aligned).any()
               else math.nan,
               "disc_accuracy_raw": (disc(f).argmax(1) == b).float().mean().item(),
               "disc_accuracy_masked": (disc(f * a).argmax(1) == b).float().mean().item()}
        self.train(was)
        return out


@register
class Adversarial(GBA):
    """GBA's Adversarial baseline: the same F, C and D with plain gradient reversal and no
    mask (``mask_rule`` none)."""

    name = "adversarial"
    declared_hparams = {**GBA.declared_hparams,
               "mask_rule": HParam("none", "none (the baseline has no mask)",
                                   choices=tuple(MASK_RULES)),
               "test_mask": HParam("none", "none (the baseline has no mask)",
                                   choices=TEST_MASKS)}


@register
class DomainIndependent(Method):
    """Wang et al.'s Domain-Independent classifier (Wang et al. 2020; docs/methods/gba.md):
    one head of ``num_classes`` logits per bias value, a softmax per domain (NLL on the log-softmax of
    the sample's own domain's logits); inference ``sum``: argmax over classes of the sum of
    the raw logits of all domains, or ``conditional``: the known domain's head (needs bias
    labels on the evaluation data)."""

    name = "domain_independent"
    requires = frozenset({"bias"})
    declared_hparams = {
        **optimiser_hparams(1e-3),
        "inference": HParam("sum", "sum (raw logits over domains) | conditional",
                            choices=("sum", "conditional")),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.check_bias_values()
        net = make_network()
        net.reset_classifier(spec.num_classes * spec.num_bias)
        self.add_network("model", net)

    def domain_logits(self, x) -> torch.Tensor:
        """(N, num_bias, num_classes) logits, one row per domain."""
        return self.networks["model"](x).view(len(x), self.spec.num_bias, self.spec.num_classes)

    def loss(self, batch, training=True):
        logits = self.domain_logits(batch.x)[torch.arange(len(batch.y)), batch.b]
        loss = F.cross_entropy(logits, batch.y)
        return loss, {"loss": loss.item()}

    def predict(self, x, b=None):
        logits = self.domain_logits(x)
        if self.hp["inference"] == "conditional":
            if b is None:
                raise ConfigError("domain_independent.inference=conditional needs bias labels "
                                  "on the evaluation data; use inference=sum")
            return logits[torch.arange(len(x)), b]
        return logits.sum(1)

    def predict_batch(self, batch):
        return self.predict(batch.x, batch.b)
