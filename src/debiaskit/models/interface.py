"""The feature interface every registered network has (the one timm models have).

- ``forward_features(x)`` -> ``(N, num_features)``: the pooled features, i.e. the input to
  the final linear layer (for the MLP: its last hidden layer);
- ``forward_head(f)`` -> logits: the final linear layer (the classifier);
  ``forward_head(f, pre_logits=True)`` returns ``f``, as in timm;
- ``num_features``: the feature width;
- ``forward(x) == forward_head(forward_features(x))``;
- ``get_classifier()`` / ``reset_classifier(num_classes)`` (0: ``nn.Identity``, so that
  ``forward`` returns the features).

Older names stay as aliases: ``features(x)`` is ``forward_features(x)`` and
``feature_dim`` is ``num_features``. The classifier keeps the attribute name it always had
(``head`` for this package's own networks, ``fc`` for the torchvision-based ResNets), so
the state-dict keys of saved checkpoints do not depend on this interface.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class FeatureClassifier(nn.Module):
    """Mixin base: subclasses set ``num_features`` and the attribute named
    ``classifier_name``, and implement :meth:`forward_features`."""

    #: Attribute holding the final linear layer.
    classifier_name = "head"
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The logits of pooled ``features`` (``pre_logits``: the features themselves)."""
        return features if pre_logits else self.get_classifier()(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh ``Linear(num_features, num_classes)`` head, or ``nn.Identity`` for 0."""
        setattr(self, self.classifier_name,
                nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity())

    def register_normalisation(self, mean, std, channels: int) -> None:
        """``mean`` / ``std`` buffers (one value per channel; default: identity) that
        :meth:`normalise` applies to the [0, 1] input, so every caller feeds the same
        [0, 1] images; a wrong length is a one-line ConfigError."""
        for name, values, default in (("mean", mean, 0.0), ("std", std, 1.0)):
            values = [default] * channels if values is None else list(values)
            if len(values) != channels:
                raise ConfigError(f"{type(self).__name__}: {name} needs one value per channel "
                                  f"({channels}), got {len(values)}; e.g. --model-opt "
                                  f"'{name}=[...]'")
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    # Aliases of the names earlier code uses.
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    @property
    def feature_dim(self) -> int:
        return self.num_features
