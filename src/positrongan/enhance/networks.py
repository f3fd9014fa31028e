"""Networks of the learned enhancement methods.

- :class:`UNet`: the plain U-Net (Ronneberger et al. 2015) of ``unet`` and ``pix2pix``: per
  level two 3x3 conv-BN-ReLU, 2x max pooling down, 2x nearest upsampling + conv up, skip
  concatenation.
- :class:`DenseMemoryUNet`: ours. The same encoder-decoder layout built from the generation
  generator's DenseNet blocks (``models.generator.DenseBlock``, ``UpTransition``); the encoder
  goes down with DenseNet's own transitions (BN-ReLU-1x1 conv, 2x average pooling). At the
  bottleneck the low-count image's code (global average of the bottleneck map, projected to
  ``query_dim``) queries the positron feature memory (``models.memory.AttentionMemory``, eq. 6)
  and [q; c] is broadcast over the bottleneck map and concatenated to it, so the decoder sees
  which training positron images the low-count slice resembles.
- :func:`conditional_patch_discriminator`: the project's PatchGAN (``models.discriminator``)
  fed the low-count input beside the candidate image, as pix2pix's conditional D.

Every network takes (B, 2, S, S): the low-count slice and a constant plane coding its count
fraction (:func:`fraction_plane`), so one model serves every fraction, and returns (B, 1, S, S)
in [-1, 1] (tanh), the reference slice's [0, 1] mapped to [-1, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models.discriminator import PatchDiscriminator
from ..models.generator import DenseBlock, UpTransition
from ..models.memory import AttentionMemory

IN_CHANNELS = 2


def fraction_code(fraction: float) -> float:
    """The value of the fraction plane: -log10(f) / 2 (0.5 at f = 0.1, 1 at f = 0.01), so the
    network sees how many decades of counts are missing on a unit scale."""
    return -math.log10(fraction) / 2.0


def _check_size(image_size: int, depth: int) -> None:
    if image_size % (2**depth):
        raise ValueError(f"image_size {image_size} is not divisible by 2**depth = {2**depth}")


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Plain U-Net.

    Params:
        image_size: input side (divisible by 2**depth).
        channels: channels of the first level, doubled per level.
        depth: down-sampling steps.
    """

    def __init__(self, image_size: int, channels: int, depth: int):
        super().__init__()
        _check_size(image_size, depth)
        self.hparams = {"kind": "unet", "image_size": image_size, "channels": channels, "depth": depth}
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_in = IN_CHANNELS
        for w in widths[:-1]:
            self.down.append(nn.Sequential(_conv_bn_relu(c_in, w), _conv_bn_relu(w, w)))
            c_in = w
        self.bottom = nn.Sequential(_conv_bn_relu(c_in, widths[-1]), _conv_bn_relu(widths[-1], widths[-1]))
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w_skip, w_low in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv_bn_relu(w_low, w_skip)))
            self.merge.append(nn.Sequential(_conv_bn_relu(2 * w_skip, w_skip), _conv_bn_relu(w_skip, w_skip)))
        self.head = nn.Sequential(nn.Conv2d(widths[0], 1, 1), nn.Tanh())
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Params: x (B, 2, S, S). Returns: (B, 1, S, S) in [-1, 1]."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class DownTransition(nn.Sequential):
    """DenseNet's transition layer: BN-ReLU-1x1 conv (channel compression), 2x average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseMemoryUNet(nn.Module):
    """Ours: DenseNet encoder-decoder with skips, attention memory at the bottleneck.

    Params:
        image_size: input side (divisible by 2**depth).
        channels: channels of the stem (full resolution); each level's transition keeps the
            block's input width plus ``growth`` (so widths grow slowly with depth).
        growth: growth rate k of the dense layers.
        layers: dense layers per block.
        depth: down-sampling steps.
        memory: (M, k) positron feature memory (zeros of that shape before loading a state dict).
        query_dim: dimension of the query code q.
        memory_mode: ``attention``, ``mean`` or ``none`` (``AttentionMemory``'s ablations).
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        growth: int,
        layers: int,
        depth: int,
        memory: torch.Tensor,
        query_dim: int,
        memory_mode: str = "attention",
    ):
        super().__init__()
        _check_size(image_size, depth)
        memory = torch.as_tensor(memory, dtype=torch.float32)
        self.hparams = {
            "kind": "dense_memory_unet",
            "image_size": image_size,
            "channels": channels,
            "growth": growth,
            "layers": layers,
            "depth": depth,
            "memory_shape": list(memory.shape),
            "query_dim": query_dim,
            "memory_mode": memory_mode,
        }
        self.stem = nn.Conv2d(IN_CHANNELS, channels, 3, padding=1, bias=False)
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        widths = []
        c = channels
        for _ in range(depth):
            block = DenseBlock(c, layers, growth)
            self.enc.append(block)
            widths.append(block.out_channels)
            c_next = c + growth
            self.down.append(DownTransition(block.out_channels, c_next))
            c = c_next
        self.bottom = DenseBlock(c, layers, growth)
        c_bottom = self.bottom.out_channels
        self.to_query = nn.Linear(c_bottom, query_dim)
        self.memory = AttentionMemory(query_dim, memory, mode=memory_mode)
        self.from_memory = nn.Linear(self.memory.out_dim, c_bottom)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        c = 2 * c_bottom
        for w_skip in reversed(widths):
            self.up.append(UpTransition(c, w_skip))
            block = DenseBlock(2 * w_skip, layers, growth)
            self.dec.append(block)
            c = block.out_channels
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, 1, 3, padding=1), nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The bottleneck map and the skips of a batch."""
        h = self.stem(x)
        skips = []
        for block, down in zip(self.enc, self.down):
            h = block(h)
            skips.append(h)
            h = down(h)
        return self.bottom(h), skips

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, M) of each image over the memory."""
        h, _ = self.encode(x)
        return self.memory.attention(self.to_query(h.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Params: x (B, 2, S, S). Returns: (B, 1, S, S) in [-1, 1]."""
        h, skips = self.encode(x)
        qc, _ = self.memory(self.to_query(h.mean(dim=(2, 3))))
        ctx = self.from_memory(qc)[:, :, None, None].expand_as(h)
        h = torch.cat([h, ctx], dim=1)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = dec(torch.cat([up(h), skip], dim=1))
        return self.head(h)


def conditional_patch_discriminator(channels: int, n_layers: int) -> PatchDiscriminator:
    """The project's PatchGAN with a first convolution that takes [low-count, fraction plane,
    candidate] (pix2pix's conditional discriminator, which judges the pair, not the image alone).

    Params:
        channels: channels of the first layer.
        n_layers: strided layers (``models.discriminator.depth_for``).
    Returns:
        A PatchDiscriminator on (B, 3, S, S).
    """
    d = PatchDiscriminator(channels, n_layers)
    first = d.blocks[0][0]
    d.blocks[0][0] = nn.Conv2d(
        IN_CHANNELS + 1, first.out_channels, first.kernel_size, stride=first.stride, padding=first.padding, bias=True
    )
    d.hparams = {**d.hparams, "in_channels": IN_CHANNELS + 1}
    return d


def build_generator(hparams: dict, memory: torch.Tensor | None = None) -> nn.Module:
    """An enhancement network from its ``hparams`` (as saved), for loading a state dict.

    Params:
        hparams: ``net.hparams`` of a saved network.
        memory: the memory (only for ours; zeros of the saved shape when None).
    Returns:
        The untrained network.
    """
    hp = dict(hparams)
    kind = hp.pop("kind")
    if kind == "unet":
        return UNet(**hp)
    if kind == "dense_memory_unet":
        shape = hp.pop("memory_shape")
        return DenseMemoryUNet(memory=torch.zeros(*shape) if memory is None else memory, **hp)
    raise ValueError(f"unknown enhancement network kind {kind!r}")
