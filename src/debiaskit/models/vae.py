"""SiH's two-encoder VAE (SiH, Section 3 and Appendix B; docs/methods/sih.md).

Two Gaussian encoders map an image to a *signal* and a *bias* latent (mean and
log-variance each); one decoder reconstructs the image from their concatenation
``[z_signal, z_bias]``; a classifier head (ReLU, then Linear) sits on each latent.

- ``mlp`` (Colored MNIST): encoders D-100-100 with two Linear(100, 100) heads, decoder
  200-512-1024-D, sigmoid output.
- ``resnet18`` (32 x 32 colour images): torchvision's ResNet-18 with a 4 x 4 stride-2 stem
  and no max-pool, 512-d latents, log-variance clamped at 5; a ResNet-18-like decoder made
  of torchvision basic blocks with nearest-neighbour upsampling.

The decoder returns logits; :meth:`TwoEncoderVAE.decode` applies the sigmoid.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ..errors import ConfigError
from .resnet18 import resnet18_small_images


class GaussianMLPEncoder(nn.Module):
    """x -> (mean, log-variance): Flatten, Linear(D, h), ReLU, Linear(h, h), ReLU, heads."""

    def __init__(self, input_shape, latent_dim: int = 100, hidden: int = 100) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden),
                                  nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_var = nn.Linear(hidden, latent_dim)

    def forward(self, x):
        h = self.body(x)
        return self.mean(h), self.log_var(h)


class MLPDecoder(nn.Module):
    """z -> image logits: Linear(z, 512), ReLU, Linear(512, 1024), ReLU, Linear(1024, D)."""

    def __init__(self, input_shape, latent_in: int) -> None:
        super().__init__()
        self.shape = tuple(input_shape)
        self.net = nn.Sequential(nn.Linear(latent_in, 512), nn.ReLU(), nn.Linear(512, 1024),
                                 nn.ReLU(), nn.Linear(1024, math.prod(input_shape)))

    def forward(self, z):
        return self.net(z).view(-1, *self.shape)


class GaussianResNet18Encoder(nn.Module):
    """torchvision ResNet-18, 4 x 4 stride-2 stem, no max-pool; 512-d mean and log-variance
    (clamped at ``max_log_var`` as SiH's code does)."""

    def __init__(self, input_shape, latent_dim: int = 512, max_log_var: float = 5.0) -> None:
        super().__init__()
        self.body = resnet18_small_images(input_shape, num_classes=1)
        self.body.fc = nn.Identity()
        self.mean = nn.Linear(512, latent_dim)
        self.log_var = nn.Linear(512, latent_dim)
        self.max_log_var = max_log_var

    def forward(self, x):
        h = self.body(x)
        return self.mean(h), self.log_var(h).clamp(max=self.max_log_var)


class ResNet18Decoder(nn.Module):
    """z -> image logits: Linear to 512 x H/8 x W/8, then three (upsample x2, basic block)
    stages 512 -> 256 -> 128 -> 64 channels, and a 3 x 3 convolution to the image channels."""

    def __init__(self, input_shape, latent_in: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height % 8 or width % 8:
            raise ConfigError(f"the resnet18 VAE needs image sides divisible by 8, got "
                              f"{height} x {width}; use the mlp VAE")
        self.start = (512, height // 8, width // 8)
        self.project = nn.Linear(latent_in, math.prod(self.start))
        stages = []
        for cin, cout in ((512, 256), (256, 128), (128, 64)):
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
            stages += [nn.Upsample(scale_factor=2, mode="nearest"),
                       BasicBlock(cin, cout, downsample=shortcut)]
        self.blocks = nn.Sequential(*stages)
        self.out = nn.Conv2d(64, channels, kernel_size=3, padding=1)

    def forward(self, z):
        h = torch.relu(self.project(z)).view(-1, *self.start)
        return self.out(self.blocks(h))


def _classifier_head(latent_dim: int, num_classes: int) -> nn.Module:
    """SiH's classifier on a latent: ReLU, then one Linear layer (docs/methods/sih.md)."""
    return nn.Sequential(nn.ReLU(), nn.Linear(latent_dim, num_classes))


class TwoEncoderVAE(nn.Module):
    """Signal and bias encoders, one decoder on ``[z_signal, z_bias]``, a head on each."""

    def __init__(self, signal_encoder, bias_encoder, decoder, latent_dim: int,
                 num_classes: int) -> None:
        super().__init__()
        self.signal_encoder = signal_encoder
        self.bias_encoder = bias_encoder
        self.decoder = decoder
        self.signal_head = _classifier_head(latent_dim, num_classes)
        self.bias_head = _classifier_head(latent_dim, num_classes)
        self.latent_dim = latent_dim

    def encode(self, x):
        """``(mean_signal, log_var_signal, mean_bias, log_var_bias)``."""
        return (*self.signal_encoder(x), *self.bias_encoder(x))

    def decode_logits(self, z_signal, z_bias):
        return self.decoder(torch.cat([z_signal, z_bias], dim=1))

    def decode(self, z_signal, z_bias):
        """The reconstruction in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z_signal, z_bias))


def build_two_encoder_vae(model: str, input_shape, num_classes: int,
                          latent_dim: int | None = None) -> TwoEncoderVAE:
    """SiH's VAE for the classifier architecture ``model`` ("mlp" or "resnet18")."""
    if model == "mlp":
        dim = latent_dim or 100
        make = lambda: GaussianMLPEncoder(input_shape, dim)  # noqa: E731
        decoder = MLPDecoder(input_shape, 2 * dim)
    elif model == "resnet18":
        dim = latent_dim or 512
        make = lambda: GaussianResNet18Encoder(input_shape, dim)  # noqa: E731
        decoder = ResNet18Decoder(input_shape, 2 * dim)
    else:
        raise ConfigError(f"SiH's VAE exists for models mlp and resnet18, not {model!r}; "
                          "use --model mlp or --model resnet18")
    return TwoEncoderVAE(make(), make(), decoder, dim, num_classes)
