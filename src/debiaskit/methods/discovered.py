"""Training from a bias discovery (``debiaskit train --reweight-from DIR``), label-free.

``debiaskit discover`` (:mod:`debiaskit.discover`) ranks the training images by how
likely they conflict with the shortcut a GCE-trained biased model takes, records that
model's error set and clusters the images. This method trains one network on the same
training set from that result, in one of three modes. The selected images are the
discovery's error set (``select=errors``, default: the biased model's misclassified
training images, as JTT's identification model gives) or its ``top`` highest-ranked
images (``select=top``).

- ``reweight`` (default): ERM whose per-image cross-entropy is weighted by ``w_i`` =
  ``upweight`` (lambda_up, JTT's default 50) for the selected images and 1 for the others,
  divided by the training set's mean weight: ``mean_i(w_i CE_i) / mean_j(w_j)``. It is
  JTT's objective as a loss weight, with epochs as long as ERM's;
- ``upsample`` (JTT's second stage, Liu et al. 2021, as :mod:`.jtt` does it): ERM on the
  training set in which every selected image appears ``upweight`` times per epoch;
- ``groupdro`` (Sagawa et al. 2020): Group DRO over inferred groups, the (class,
  cluster) pairs of the discovery's clusters: ``q_g <- q_g exp(eta L_g)``, normalised,
  and the model minimises ``sum_g q_g L_g`` over the groups in the batch.

The discovery must have been made on the same training images (the SHA-256 of images,
targets and masks, bias labels left out, is compared); a run with a held-out split maps
the discovery's indices onto the images it trains on. Without a discovery attached (as
in the method contract test) it is plain ERM.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import Method, register
from .hparams import HParam, choice, optimiser_hparams
from .groupdro import group_dro_step

#: The file a discovery folder holds its result in.
DISCOVERY = "discovery.json"
#: Version of discovery.json's layout.
FORMAT = 1


def training_checksum(train) -> str:
    """The checksum a discovery and a run compare: the training set's images, targets and
    masks, with any bias labels left out (a discovery never sees them)."""
    return train.without_bias().checksum()


def read_discovery(path) -> dict:
    """``discovery.json`` of the discovery folder ``path`` (or the file itself)."""
    path = Path(path)
    file = path / DISCOVERY if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"--reweight-from {path}: no {DISCOVERY} there; name the --out "
                          "folder of a finished 'debiaskit discover'")
    try:
        record = json.loads(file.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
        for key in ("train", "order", "error_set", "clusters"):
            record[key]  # noqa: B018  (presence)
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise ConfigError(f"cannot read {file} ({err}); run 'debiaskit discover' again into "
                          "a new folder") from None
    return record


@register
class Discovered(Method):
    name = "discovered"
    requires = frozenset({"discovery"})
    declared_hparams = {
        **optimiser_hparams(1e-3),
        "mode": HParam("reweight", "reweight: the selected images' loss weighted by "
                       "upweight; upsample: ERM with them repeated upweight times per epoch "
                       "(JTT); groupdro: Group DRO over the (class, cluster) groups of the "
                       "discovery",
                       choices=("upsample", "reweight", "groupdro"),
                       search=choice("upsample", "reweight", "groupdro")),
        "select": HParam("errors", "images weighted up: errors = the discovery's error set "
                         "(the biased model's misclassified training images); top = the "
                         "`top` highest-ranked", choices=("errors", "top")),
        "top": HParam(100, "how many top-ranked images select=top weights up", 1, 10**9),
        "upweight": HParam(50, "lambda_up (JTT's default): a selected image's loss "
                           "weight (reweight) or copies per epoch (upsample)", 1, 100_000, search=choice(5, 20, 50, 100)),
        "eta": HParam(0.01, "Group DRO step size of the group weights (eta_q)", 0.0, 10.0),
    }

    def __init__(self, spec, make_network, hparams=None):
        super().__init__(spec, make_network, hparams)
        self.add_network("model", make_network())
        self.discovery_info: dict | None = None

    @property
    def attached(self) -> bool:
        return self.discovery_info is not None

    def attach_discovery(self, path, full_train, kept: torch.Tensor | None = None) -> None:
        """Read the discovery at ``path`` for ``full_train`` (the training set before any
        held-out split; ``kept``: the indices of it this run trains on, in order). Refuses
        a discovery made on other training data."""
        record = read_discovery(path)
        stored = record["train"].get("checksum")
        current = training_checksum(full_train)
        if stored != current:
            source = record.get("input", {})
            raise ConfigError(
                f"--reweight-from {path}: the discovery was made on other training data "
                f"({source.get('dataset')} {source.get('params', {})}, "
                f"{record['train'].get('size')} images, checksum {str(stored)[:12]}...; this "
                f"run's: {len(full_train)} images, {current[:12]}...); train with the same "
                "--dataset, data options, --train-subset and --seed")
        n = len(full_train)
        device = self.spec.train_targets.device
        position = torch.full((n,), -1, dtype=torch.long)
        kept = torch.arange(n) if kept is None else kept.cpu()
        position[kept] = torch.arange(len(kept))
        if self.hp["select"] == "errors":
            chosen = torch.tensor(record["error_set"], dtype=torch.long)
        else:
            chosen = torch.tensor(record["order"][:self.hp["top"]], dtype=torch.long)
        chosen = position[chosen]
        chosen = chosen[chosen >= 0].sort().values
        self.register_buffer("selected", chosen.to(device), persistent=False)
        weights = torch.ones(len(kept))
        weights[chosen] = float(self.hp["upweight"])
        self.register_buffer("weights", weights.to(device), persistent=False)
        self.mean_weight = float(weights.mean())
        clusters = torch.tensor(record["clusters"], dtype=torch.long)[kept]
        num_clusters = int(clusters.max()) + 1
        self.num_groups = self.spec.num_classes * num_clusters
        groups = self.spec.train_targets.cpu() * num_clusters + clusters
        self.register_buffer("groups", groups.to(device), persistent=False)
        # Group DRO's adversary (saved and resumed with the method)
        self.register_buffer("q", torch.full((self.num_groups,), 1.0 / self.num_groups,
                                             device=device))
        self.discovery_info = {"path": str(path), "selected": len(chosen),
                               "groups": int(torch.unique(groups).numel())}

    def begin_epoch(self, epoch, train_loader):
        """Upsample mode: every image once plus the selected ones ``upweight - 1`` times
        more (JTT's pool); otherwise every image once."""
        if not self.attached or self.hp["mode"] != "upsample":
            return None
        everyone = torch.arange(self.spec.num_train, device=self.selected.device)
        return torch.cat([everyone, self.selected.repeat(self.hp["upweight"] - 1)])

    def loss(self, batch, training=True):
        """The mean cross-entropy (upsample: the repeats are in the pool); reweight: the
        cross-entropy weighted by ``w_i`` (upweight for selected images, else 1), divided
        by the training set's mean weight, ``mean_i(w_i CE_i) / mean_j(w_j)``."""
        ce = F.cross_entropy(self.networks["model"](batch.x), batch.y, reduction="none")
        if self.attached and self.hp["mode"] == "reweight":
            loss = (ce * self.weights[batch.index]).mean() / self.mean_weight
        else:
            loss = ce.mean()
        return loss, {"loss": loss.item()}

    def update(self, batch):
        if not self.attached or self.hp["mode"] != "groupdro":
            return super().update(batch)
        return group_dro_step(self.networks["model"], self.optimizers["model"], batch,
                              self.groups[batch.index], self.q, self.hp["eta"])

    def predict(self, x):
        return self.networks["model"](x)

    def training_weights(self, train):
        """Upsample and reweight modes: lambda_up for the selected images, 1 for the
        others; Group DRO mode: each image's group weight q_g."""
        if not self.attached:
            return None
        if self.hp["mode"] == "groupdro":
            return self.q[self.groups].detach().cpu()
        return self.weights.cpu()

    def epoch_stats(self, train):
        """How many images are weighted up and the number of inferred groups; with bias
        labels the share of conflicting images among the selected ones and the share of
        conflicting images selected (only reported)."""
        if not self.attached:
            return {}
        out = {"selected": float(self.discovery_info["selected"]),
               "inferred_groups": float(self.discovery_info["groups"])}
        if train.b is not None and len(self.selected):
            conflicting = ~train.aligned
            picked = torch.zeros(len(train), dtype=torch.bool)
            picked[self.selected.cpu()] = True
            out["selected_conflicting_share"] = (
                (picked & conflicting).sum() / picked.sum().clamp_min(1)).item()
            out["conflicting_recall"] = (
                (picked & conflicting).sum() / conflicting.sum().clamp_min(1)).item()
        return out
