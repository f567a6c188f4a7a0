"""Does generated training data remove a bias, or only remap it? A bias probe.

A debiasing data generator such as LAD's latent walk (LAD, Sections 4.2-4.3) helps
the final classifier only if, in the images it makes, the bias attribute no longer tells
the class. Its own objective cannot show this: the bias classifier ``f`` may be unsure of
an image whose new background colour is still a function of the class (every seven moved
from pink to purple), and a classifier trained on such images learns the new colour.

The probe reads the bias attribute from the images themselves:

1. a classifier learns the bias label ``b`` on an evaluation split in which ``b`` tells the
   least about the class (lowest normalised mutual information of class and bias, e.g.
   coloured MNIST's "independent" split), so it learns the attribute and not the digit;
   its accuracy on a held-out fifth of that split says how far to trust it (a probe that
   does not get halfway from chance to 100 % cannot read the attribute, e.g. one pixel
   blurred away by a VQ-VAE, and its readings of the generated images mean nothing);
2. on the generated images its predictions ``b_hat`` give ``bias_kept`` (% of images
   whose ``b_hat`` is still their original bias label), ``class_bias_nmi`` (normalised
   mutual information of class and ``b_hat``, scikit-learn's arithmetic normalisation: 1
   when ``b_hat`` is a function of the class, i.e. the bias is kept or remapped, 0 when it
   is independent of the class) and the class x ``b_hat`` contingency table.

A second probe, trained on the same split to predict the class, reads how much of the
causal signal the generated images keep (``signal_accuracy``: its accuracy on them): a
generator can remove the bias by destroying the signal too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, normalized_mutual_info_score

from ..data.dataset import BiasedDataset
from ..data.loader import InMemoryLoader, as_float_images
from ..errors import DebiaskitError
from ..methods.base import adam
from ..models import build_model

#: Held-out share of the probe's split on which its accuracy is measured.
PROBE_HELDOUT = 0.2


def class_bias_nmi(y, b) -> float:
    """Normalised mutual information of class labels ``y`` and bias labels ``b``."""
    return float(normalized_mutual_info_score(torch.as_tensor(y).cpu().numpy(),
                                              torch.as_tensor(b).cpu().numpy()))


def probe_reads_bias(heldout_accuracy: float, num_bias: int) -> bool:
    """Whether a bias probe's held-out accuracy (%) is at least halfway from chance
    (``100 / num_bias``) to 100 %, i.e. whether its readings can be trusted."""
    chance = 100.0 / num_bias
    return heldout_accuracy >= chance + (100.0 - chance) / 2


def most_independent_split(evals: dict[str, BiasedDataset]) -> str:
    """The evaluation split with bias labels whose bias tells the least about the class."""
    labelled = {name: ds for name, ds in evals.items() if ds.has_bias}
    if not labelled:
        raise DebiaskitError("no evaluation split has bias labels, so no bias probe can be "
                             "trained; the probe needs data whose bias attribute is labelled")
    return min(labelled, key=lambda name: class_bias_nmi(labelled[name].y, labelled[name].b))


def train_probe(ds: BiasedDataset, label: str = "b", model: str = "mlp", epochs: int = 5,
                lr: float = 1e-3, batch_size: int = 128, seed: int = 0):
    """A ``model`` trained with cross-entropy to predict ``ds.b`` (``label="b"``) or
    ``ds.y`` (``"y"``) from ``ds.x`` on a seeded 80 % of ``ds``; returns ``(probe,
    accuracy % on the other 20 %)``."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    n_held = max(1, int(round(len(ds) * PROBE_HELDOUT)))
    fit, held = ds.subset(order[n_held:].sort().values), ds.subset(order[:n_held].sort().values)
    classes = ds.num_bias if label == "b" else ds.num_classes
    fit = BiasedDataset(name=f"{ds.name}/{label}", x=fit.x, y=getattr(fit, label),
                        num_classes=classes)
    torch.manual_seed(seed)
    probe = build_model(model, ds.image_shape, classes)
    optimizer = adam(probe, lr)
    probe.train()
    loader = InMemoryLoader(fit, batch_size, shuffle=True, seed=seed)
    for epoch in range(epochs):
        for batch in loader.epoch(epoch):
            loss = F.cross_entropy(probe(batch.x), batch.y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    probe.eval()
    accuracy = 100.0 * (predict(probe, held.x) == getattr(held, label)).float().mean().item()
    return probe, accuracy


@torch.inference_mode()
def predict(probe, images: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    """The probe's predicted label (bias or class) for each of the uint8 ``images``."""
    return torch.cat([probe(as_float_images(images[lo:lo + batch])).argmax(1)
                      for lo in range(0, len(images), batch)])


def bias_dependence(y: torch.Tensor, b_hat: torch.Tensor, num_classes: int, num_bias: int,
                    b: torch.Tensor | None = None) -> dict:
    """How much the probed bias ``b_hat`` of a set of images says about their class ``y``
    (and, given their original bias ``b``, how often it is unchanged)."""
    table = confusion_matrix(y.cpu().numpy(), b_hat.cpu().numpy(),
                             labels=range(max(num_classes, num_bias)))
    out = {"class_bias_nmi": class_bias_nmi(y, b_hat),
           "class_by_probed_bias": table[:num_classes, :num_bias].tolist()}
    if b is not None:
        out["bias_kept"] = 100.0 * (b_hat.cpu() == b.cpu()).float().mean().item()
    return out
