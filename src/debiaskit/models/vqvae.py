"""The VQ-VAE of LAD (LAD, Section 4.1; van den Oord et al., NeurIPS 2017).

LAD gives only the codebook (MNIST 20 codes, CIFAR 2048, each of length 64); the rest is
our choice, the common van den Oord layout (docs/methods/lad.md), with every size an option:

- encoder: Conv 4x4 stride 2, ReLU, Conv 4x4 stride 2, ReLU, Conv 3x3, a residual stack,
  ReLU, Conv 1x1 to the code length: 28 x 28 images give a 7 x 7 grid of latents, 32 x 32
  images an 8 x 8 grid;
- quantiser: nearest codebook vector per grid position, straight-through gradients,
  commitment cost 0.25, codebook updated by exponential moving averages (decay 0.99);
- decoder: Conv 3x3, a residual stack, ReLU, two transposed 4x4 stride-2 convolutions,
  linear output, clamped to [0, 1] when decoding images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualStack(nn.Module):
    """``layers`` x (x + Conv1x1(ReLU(Conv3x3(ReLU(x))))), then ReLU."""

    def __init__(self, channels: int, hidden: int, layers: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(hidden, channels, 1))
            for _ in range(layers))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return F.relu(x)


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with an EMA-updated codebook (van den Oord, Appendix A.1).

    ``codebook`` is K x D. ``quantize(z)`` maps every D-vector of a B x D x H x W latent to
    its nearest code (Euclidean); in training mode the forward pass also moves the codes
    towards the mean of the vectors assigned to them (decay ``decay``, Laplace smoothing).
    The first training batch initialises the codes to randomly drawn latent vectors of
    that batch, so no code starts far from the data. ``restart_below`` > 0 also restarts
    dead codes (Dhariwal et al. 2020, Jukebox): a code whose EMA usage (expected
    assignments per batch) falls below it moves to a random latent vector of the current
    batch, so a small codebook (LAD's 20 codes) does not collapse to a few codes.
    """

    def __init__(self, codebook_size: int, code_dim: int, decay: float = 0.99,
                 epsilon: float = 1e-5, restart_below: float = 0.0) -> None:
        super().__init__()
        self.decay, self.epsilon, self.restart_below = decay, epsilon, restart_below
        codebook = torch.randn(codebook_size, code_dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("code_sum", codebook.clone())
        self.register_buffer("initialised", torch.tensor(False))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each position of a B x D x H x W latent (B x H x W).

        ``argmin_k |z - c_k|^2 = argmin_k (|c_k|^2 / 2 - z . c_k)``: the term ``|z|^2`` is
        the same for every code; the products are one batched matrix product that reads
        the latent in place (transposed view, no copy)."""
        b, d, h, w = z.shape
        scores = torch.matmul(z.reshape(b, d, h * w).transpose(1, 2), self.codebook.t())
        half_norms = self.codebook.pow(2).sum(1).mul_(0.5)                # scores: B x HW x K
        return (half_norms - scores).argmin(2).view(b, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices B x H x W -> latent B x D x H x W made of codebook vectors."""
        return self.codebook[codes].permute(0, 3, 1, 2).contiguous()

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """``quantise(h, G)`` of LAD's Eq. 5: every latent vector replaced by its nearest code."""
        return self.lookup(self.nearest(z))

    @torch.no_grad()
    def _initialise(self, z: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        pick = torch.randint(len(flat), (self.codebook.shape[0],), device=flat.device)
        self.codebook.copy_(flat[pick])
        self.code_sum.copy_(flat[pick])
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        onehot = F.one_hot(codes.reshape(-1), self.codebook.shape[0]).type_as(flat)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + len(self.cluster_size)
                                                         * self.epsilon) * n
        self.codebook.copy_(self.code_sum / smoothed.unsqueeze(1))
        dead = self.cluster_size < self.restart_below
        if dead.any():
            pick = torch.randint(len(flat), (int(dead.sum()),), device=flat.device)
            self.codebook[dead] = flat[pick]
            self.code_sum[dead] = flat[pick]
            self.cluster_size[dead] = 1.0

    def codes_in_use(self, threshold: float = 1.0) -> int:
        """Codes whose EMA usage is at least ``threshold`` assignments per batch."""
        return int((self.cluster_size >= threshold).sum())

    def forward(self, z: torch.Tensor):
        """``(quantised with straight-through gradient, commitment loss, code indices)``."""
        if self.training and not bool(self.initialised):
            self._initialise(z.detach())
        codes = self.nearest(z)
        if self.training:
            self._ema_update(z.detach(), codes)
        quantized = self.lookup(codes)
        commitment = F.mse_loss(z, quantized.detach())
        return z + (quantized - z).detach(), commitment, codes


class VQVAE(nn.Module):
    """Encoder, vector quantiser and decoder for C x H x W images with H, W divisible by
    ``downsample`` (4: van den Oord's two stride-2 convolutions; 2: one, a grid of 2 x 2
    patches, e.g. 14 x 14 latents for MNIST)."""

    #: Version of the layout and output convention; cached LAD stages are keyed on it, so a
    #: run resumed after a change retrains instead of loading an incompatible model.
    LAYOUT = 2
    #: Image side / latent side the layout can build (two stride-2 stages, or one).
    DOWNSAMPLES = (2, 4)

    def __init__(self, input_shape, codebook_size: int = 20, code_dim: int = 64,
                 hidden: int = 64, residual_hidden: int = 32, residual_layers: int = 2,
                 commitment_cost: float = 0.25, decay: float = 0.99,
                 restart_below: float = 0.0, downsample: int = 4) -> None:
        super().__init__()
        channels, height, width = input_shape
        if downsample not in self.DOWNSAMPLES:
            raise ValueError(f"VQ-VAE downsample must be one of {self.DOWNSAMPLES}, "
                             f"got {downsample}")
        if height % downsample or width % downsample:
            raise ValueError(f"VQ-VAE with downsample {downsample} needs image sides "
                             f"divisible by it, got {height}x{width}")
        self.input_shape = tuple(input_shape)
        self.latent_shape = (code_dim, height // downsample, width // downsample)
        self.commitment_cost = commitment_cost
        # the second stride-2 stage of van den Oord's layout, or a stride-1 one in its place
        second_down = (nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1) if downsample == 4
                       else nn.Conv2d(hidden // 2, hidden, 3, padding=1))
        second_up = (nn.ConvTranspose2d(hidden // 2, channels, 4, stride=2, padding=1)
                     if downsample == 4 else nn.Conv2d(hidden // 2, channels, 3, padding=1))
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            second_down, nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            ResidualStack(hidden, residual_hidden, residual_layers),
            nn.Conv2d(hidden, code_dim, 1))
        self.quantizer = VectorQuantizer(codebook_size, code_dim, decay,
                                         restart_below=restart_below)
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, hidden, 3, padding=1),
            ResidualStack(hidden, residual_hidden, residual_layers),
            nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            second_up)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous (pre-quantisation) latent, B x D x H/downsample x W/downsample."""
        return self.encoder(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from a latent (LAD's Eq. 7: ``x_delta = dec(h_delta)``)."""
        return self._decode_raw(h).clamp(0, 1)

    def _decode_raw(self, h: torch.Tensor) -> torch.Tensor:
        # the decoder works on images centred at 0 (van den Oord: pixels in [-0.5, 0.5])
        return self.decoder(h) + 0.5

    def forward(self, x: torch.Tensor):
        """``(reconstruction in [0, 1], loss)``: MSE of the decoder's unclamped output +
        commitment cost x commitment. The output layer is linear, as van den Oord's: a
        sigmoid there saturates on mostly-black images (foreground-coloured MNIST) and the
        reconstruction stalls at an all-black image."""
        quantized, commitment, _ = self.quantizer(self.encode(x))
        raw = self._decode_raw(quantized)
        return raw.clamp(0, 1), F.mse_loss(raw, x) + self.commitment_cost * commitment
