"""Baseline networks of Table 1: DCGAN (Radford et al. 2016) and the WGAN-GP critic
(Gulrajani et al. 2017). The VAE baseline is :class:`positrongan.models.vae.ConvVAE`
trained on the positron images.

All work on (B, 1, S, S) images in [-1, 1], S a power of two >= 8: one stride-2 stage per
halving between S and 4, channels doubling per stage towards the 4x4 end (capped at 8x).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from .init import init_weights


def _stage_channels(image_size: int, channels: int) -> list[int]:
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    stages = int(math.log2(image_size)) - 2
    return [channels * 2 ** min(i, 3) for i in range(stages)]


class DCGANGenerator(nn.Module):
    """Latent (B, d) -> 4x4 map -> transposed 4x4 stride-2 convs with BN-ReLU -> tanh image."""

    def __init__(self, latent_dim: int, image_size: int, channels: int):
        super().__init__()
        self.hparams = {"latent_dim": latent_dim, "image_size": image_size, "channels": channels}
        chans = _stage_channels(image_size, channels)[::-1]
        self.latent_dim = latent_dim
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, chans[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(inplace=True),
        ]
        for c, c_next in pairwise(chans):
            layers += [
                nn.ConvTranspose2d(c, c_next, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_next),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(chans[-1], 1, 4, 2, 1), nn.Tanh()]
        self.net = init_weights(nn.Sequential(*layers))  # the DCGAN paper's N(0, 0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Params: z (B, d). Returns: (B, 1, S, S) in [-1, 1]."""
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Strided 4x4 convs with LeakyReLU (batch norm after the first, none for a critic)
    down to 4x4, then a 4x4 conv to one logit per image.

    Params:
        image_size: input side.
        channels: first-layer channels.
        norm: ``batch`` (DCGAN) or ``none`` (WGAN-GP: batch norm would break the per-sample
            gradient penalty).
    """

    def __init__(self, image_size: int, channels: int, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        self.hparams = {"image_size": image_size, "channels": channels, "norm": norm}
        chans = _stage_channels(image_size, channels)
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(chans):
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1, bias=not (norm == "batch" and i > 0)))
            if norm == "batch" and i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 4, 1, 0))
        self.net = init_weights(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor, features: bool = False):
        """Params: x (B, 1, S, S); features: also return each stage's output (after its
        LeakyReLU), for the feature-matching loss of the "+APG" variants.

        Returns:
            logits / critic values (B,), and with ``features`` the list of stage outputs.
        """
        if not features:
            return self.net(x).flatten()
        feats = []
        h = x
        for layer in self.net:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(h)
        return h.flatten(), feats


def wgan_critic(image_size: int, channels: int) -> DCGANDiscriminator:
    """The WGAN-GP critic: the DCGAN discriminator without batch norm."""
    return DCGANDiscriminator(image_size, channels, norm="none")
