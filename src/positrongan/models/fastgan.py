"""A FastGAN-style generator and discriminator sized for small images (Liu et al. 2021,
"Towards faster and stabilized GAN training for high-fidelity few-shot image synthesis",
ICLR; the few-shot anchor of the study).

Kept from the paper: the generator's upsampling blocks (nearest 2x, 3x3 conv, batch norm, GLU),
its skip-layer excitation (SLE: a low-resolution map gates the channels of a high-resolution
one through pool 4 -> 4x4 conv -> LeakyReLU -> 1x1 conv -> sigmoid), and the discriminator's
self-supervision: small decoders reconstruct the whole real image from the 8x8 map and a
random quarter of it from the matching quarter of the 16x16 map (an auto-encoding loss only
on real images). Changed for 64 px grey images on a CPU budget: one SLE pair per factor 8
(4 -> 32 and 8 -> 64 px; the paper's 256 px network has three), L1 instead of LPIPS for the
reconstruction (no pretrained network), and no spectral norm (the paper's code uses it; its
discriminator's batch norm is kept).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_weights


def _check(image_size: int) -> int:
    if image_size < 32 or image_size & (image_size - 1):
        raise ValueError(f"FastGAN needs a power-of-two image size >= 32, got {image_size}")
    return int(math.log2(image_size))


class GLU(nn.Module):
    """Gated linear unit over channels: a * sigmoid(b), halving the channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    """2x nearest upsampling, 3x3 conv to 2 c_out, batch norm, GLU (-> c_out channels)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, 2 * c_out, 3, 1, 1, bias=False),
        nn.BatchNorm2d(2 * c_out),
        GLU(),
    )


class SLE(nn.Module):
    """Skip-layer excitation: channel gates for a high-resolution map from a low-resolution one."""

    def __init__(self, c_small: int, c_big: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(c_small, c_big, 4, 1, 0, bias=False),
            nn.LeakyReLU(0.1),
            nn.Conv2d(c_big, c_big, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.body(small)


def _gen_channels(levels: int, channels: int) -> dict[int, int]:
    # Channels per resolution 2^l: 4c at 4 px, halving per level, never below c / 2 (the
    # paper's 256 px network is wider; this keeps G near DCGAN's size at 64 px).
    return {l: max(channels // 2, channels * 4 >> (l - 2)) for l in range(2, levels + 1)}


class FastGANGenerator(nn.Module):
    """z (B, d) -> (B, 1, S, S) in [-1, 1].

    Params:
        latent_dim: d.
        image_size: S, a power of two >= 32.
        channels: width c (4c channels at 4 px, halved per doubling, at least c / 2).
    """

    def __init__(self, latent_dim: int, image_size: int, channels: int):
        super().__init__()
        self.hparams = {"latent_dim": latent_dim, "image_size": image_size, "channels": channels}
        self.latent_dim = latent_dim
        levels = _check(image_size)
        ch = _gen_channels(levels, channels)
        self.init = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * ch[2], 4, 1, 0, bias=False), nn.BatchNorm2d(2 * ch[2]), GLU()
        )
        self.ups = nn.ModuleList([up_block(ch[l - 1], ch[l]) for l in range(3, levels + 1)])
        # SLE from level l to level l + 3 (4 -> 32 px, 8 -> 64 px at 64 px).
        self.sle = nn.ModuleDict({str(l): SLE(ch[l], ch[l + 3]) for l in range(2, levels - 2)})
        self.out = nn.Conv2d(ch[levels], 1, 3, 1, 1)
        self.levels = levels
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        feats = {2: self.init(z[:, :, None, None])}
        h = feats[2]
        for l, up in zip(range(3, self.levels + 1), self.ups):
            h = up(h)
            if str(l - 3) in self.sle:
                h = self.sle[str(l - 3)](feats[l - 3], h)
            feats[l] = h
        return torch.tanh(self.out(h))


def _decoder(c_in: int, channels: int) -> nn.Sequential:
    # 8x8 -> 32x32 grey reconstruction (two upsampling blocks), as the paper's small decoders.
    return nn.Sequential(
        up_block(c_in, channels * 2), up_block(channels * 2, channels), nn.Conv2d(channels, 1, 3, 1, 1), nn.Tanh()
    )


class FastGANDiscriminator(nn.Module):
    """Strided 4x4 convs (batch norm, LeakyReLU 0.2) down to 8x8, logits from a 4x4 map, and
    the self-supervised decoders.

    Params:
        image_size: S, a power of two >= 32.
        channels: width c (c at full resolution, doubled per halving, capped at 8c).
    """

    RECON = 32  # side of the reconstructions (and of the targets they are compared with)

    def __init__(self, image_size: int, channels: int):
        super().__init__()
        self.hparams = {"image_size": image_size, "channels": channels}
        levels = _check(image_size)
        blocks, c_in = [], 1
        self.chans = {}
        for i, l in enumerate(range(levels, 3, -1)):  # S -> 8 px
            c = channels * 2 ** min(i, 3)
            layers: list[nn.Module] = [nn.Conv2d(c_in, c, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            blocks.append(nn.Sequential(*layers))
            self.chans[l - 1] = c
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(
            nn.Conv2d(c_in, c_in, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(c_in, 1, 1)
        )
        self.decode_all = _decoder(self.chans[3], channels)
        self.decode_part = _decoder(self.chans[4], channels)
        init_weights(self)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Params: x (B, 1, S, S). Returns: logits (B,) (the mean of a 2x2 logit map), and with
        ``features`` the list of stage outputs (for the "+APG" feature matching)."""
        feats = []
        h = x
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        logits = self.head(h).mean(dim=(1, 2, 3))
        return (logits, feats) if features else logits

    def reconstruction_loss(self, x: torch.Tensor, part: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's logits on real images x and its self-supervised L1 loss: the
        whole image from the 8x8 map and quarter ``part`` (0..3, row-major) from the matching
        quarter of the 16x16 map, each at 32 px.

        Returns:
            (logits (B,), reconstruction loss scalar).
        """
        feats = []
        h = x
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        logits = self.head(h).mean(dim=(1, 2, 3))
        f8, f16 = feats[-1], feats[-2]
        r, c = divmod(part, 2)
        crop16 = f16[:, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8]
        s = x.shape[-1] // 2
        target_all = F.interpolate(x, size=self.RECON, mode="area")
        target_part = F.interpolate(x[:, :, r * s : (r + 1) * s, c * s : (c + 1) * s], size=self.RECON, mode="area")
        rec = (self.decode_all(f8) - target_all).abs().mean() + (self.decode_part(crop16) - target_part).abs().mean()
        return logits, rec
