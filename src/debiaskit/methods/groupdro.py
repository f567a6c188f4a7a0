"""Group DRO (Sagawa et al., ICLR 2020): minimise the worst group's loss.

Groups are the (class, bias) cells, so the method needs bias labels. The group weights
``q`` follow the exponentiated-gradient update of Algorithm 1 (``q_g <- q_g exp(eta L_g)``,
then normalised); the model minimises ``sum_g q_g L_g``. ``adjustment`` is the paper's
generalisation adjustment ``C / sqrt(n_g)`` added to each group's loss (0 = off), with
``n_g`` the group's size in the training set.

A minibatch misses some groups. Algorithm 1 moves the weight of the group it sampled only,
so by default a group absent from the batch keeps its weight (before normalisation). The
authors' code (kohpangwei/group_DRO, loss.py) updates every group: an absent group's loss
counts as 0 but its adjustment does not, so with the adjustment on its weight grows by
``exp(eta C / sqrt(n_g))`` every batch that misses it; ``adjust_absent=True`` does that
(tests/parity/fixtures/groupdro-*). Without the adjustment both agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, register
from .hparams import HParam, log_uniform, optimiser_hparams


def group_dro_step(model, optimizer, batch, groups, q, eta: float, adjustment=None,
                   adjust_absent: bool = False) -> dict:
    """One step of Algorithm 1 on ``batch`` whose samples belong to ``groups``: the mean
    cross-entropy ``L_g`` of every group present (plus ``adjustment[g]``), the
    exponentiated-gradient update ``q_g <- q_g exp(eta L_g)`` of the weights ``q`` (in
    place, normalised), and one ``optimizer`` step on ``sum_g q_g L_g``.

    ``adjust_absent`` (the authors' code, with an ``adjustment``): groups absent from the
    batch are updated too, with ``L_g = 0`` plus their adjustment, and their (constant)
    ``q_g adjustment[g]`` counts in the returned loss."""
    logits = model(batch.x)
    per_sample = F.cross_entropy(logits, batch.y, reduction="none")
    num_groups = len(q)
    sums = torch.zeros(num_groups, device=logits.device).index_add(0, groups, per_sample)
    counts = torch.bincount(groups, minlength=num_groups).float()
    present = counts > 0
    group_loss = sums / counts.clamp_min(1)
    if adjustment is not None:
        group_loss = group_loss + adjustment
        if adjust_absent:
            present = torch.ones_like(present)
    with torch.no_grad():
        q[present] *= torch.exp(eta * group_loss[present].detach())
        q /= q.sum()
    loss = (q * group_loss * present).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "mean_loss": per_sample.mean().item(),
            "max_group_weight": q.max().item()}


@register
class GroupDRO(Method):
    name = "groupdro"
    requires = frozenset({"bias"})
    declared_hparams = {
        **optimiser_hparams(1e-3),
        "eta": HParam(0.01, "step size of the group weights (eta_q)", 0.0, 10.0,
                      search=log_uniform(1e-3, 1e-1)),
        "adjustment": HParam(0.0, "generalisation adjustment C (0 = off)", 0.0, 100.0),
        "adjust_absent": HParam(False, "with the adjustment on, groups missing from a batch "
                                "still get q_g *= exp(eta C / sqrt(n_g)) (their loss taken "
                                "as 0), as the authors' code does; Algorithm 1 updates only "
                                "the groups sampled", authors_code=True),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.num_groups = spec.num_classes * spec.num_bias
        self.add_network("model", make_network())
        device = spec.train_targets.device
        # the adversary's distribution over groups (state: saved and resumed with the method)
        self.register_buffer("q", torch.full((self.num_groups,), 1.0 / self.num_groups,
                                             device=device))
        groups = spec.train_targets * spec.num_bias + spec.train_bias
        self.register_buffer("group_counts", torch.bincount(
            groups, minlength=self.num_groups).float(), persistent=False)

    def update(self, batch):
        adjustment = (self.hp["adjustment"] / self.group_counts.sqrt().clamp_min(1)
                      if self.hp["adjustment"] else None)
        return group_dro_step(self.networks["model"], self.optimizers["model"], batch,
                              batch.y * self.spec.num_bias + batch.b, self.q, self.hp["eta"],
                              adjustment, self.hp["adjust_absent"])

    def predict(self, x):
        return self.networks["model"](x)
