"""The DenseNet-style generator (paper §3.4, eq. 7).

The input vector [z; c; noise] is projected to a 4x4 map, then each resolution has a dense
block (layers BN-ReLU-3x3 conv, layer l sees the concatenation [X_0, ..., X_{l-1}] of all
previous outputs, eq. 7) followed by a transition (BN-ReLU-1x1 conv that compresses the
channels) and a 2x nearest upsampling — the generator's mirror of DenseNet's downsampling
transitions. The dense blocks work at 4 .. S/2 px; the last transition brings the map to
S px, where a BN-ReLU-3x3 conv gives one channel through tanh.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .memory import AttentionMemory


class DenseLayer(nn.Module):
    """BN-ReLU-3x3 conv producing ``growth`` new channels, appended to its input."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseBlock(nn.Sequential):
    """``layers`` dense layers: the output has in_channels + layers * growth channels."""

    def __init__(self, in_channels: int, layers: int, growth: int):
        super().__init__(*[DenseLayer(in_channels + i * growth, growth) for i in range(layers)])
        self.out_channels = in_channels + layers * growth


class UpTransition(nn.Sequential):
    """BN-ReLU-1x1 conv (channel compression) then 2x nearest upsampling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.Upsample(scale_factor=2, mode="nearest"),
        )


class DenseGenerator(nn.Module):
    """DenseNet generator from an input vector to a (1, S, S) image in [-1, 1].

    Params:
        in_dim: length of the input vector ([z; c; noise]).
        image_size: output side, a power of two >= 8.
        channels: channels of the 4x4 map; halved by each transition (never below ``growth``).
        growth: growth rate k of the dense layers.
        layers: dense layers per block.
    """

    def __init__(self, in_dim: int, image_size: int, channels: int, growth: int, layers: int):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        self.hparams = {
            "in_dim": in_dim,
            "image_size": image_size,
            "channels": channels,
            "growth": growth,
            "layers": layers,
        }
        self.channels = channels
        self.project = nn.Linear(in_dim, channels * 16)
        stages = []
        c = channels
        for _ in range(int(math.log2(image_size)) - 2):
            block = DenseBlock(c, layers, growth)
            c_next = max(growth, c // 2)
            stages += [block, UpTransition(block.out_channels, c_next)]
            c = c_next
        # No dense block at full resolution: it would cost as much as all the others together.
        self.body = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, 1, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Params: v (B, in_dim). Returns: (B, 1, S, S) in [-1, 1]."""
        h = self.project(v).view(-1, self.channels, 4, 4)
        return self.head(self.body(h))


class MemoryGenerator(nn.Module):
    """The full generator of "ours": attention memory then DenseNet, G([z; c; noise]).

    Params:
        latent_dim: dimension of the CT latent z.
        memory: (M, k) memory vectors (or zeros of that shape before loading a state dict).
        noise_dim: extra N(0, I) noise concatenated to [z; c].
        image_size, channels, growth, layers: see :class:`DenseGenerator`.
        train_memory: make the memory a parameter.
        memory_mode: ``attention``, ``mean`` or ``none`` (see :class:`AttentionMemory`).
        temperature, normalise: the attention's score scaling (see :class:`AttentionMemory`).
    """

    def __init__(
        self,
        latent_dim: int,
        memory: torch.Tensor,
        noise_dim: int,
        image_size: int,
        channels: int,
        growth: int,
        layers: int,
        train_memory: bool = False,
        memory_mode: str = "attention",
        temperature: float = 1.0,
        normalise: bool = False,
    ):
        super().__init__()
        self.attention = AttentionMemory(
            latent_dim, memory, trainable=train_memory, mode=memory_mode, temperature=temperature, normalise=normalise
        )
        self.noise_dim = noise_dim
        self.latent_dim = latent_dim
        self.dense = DenseGenerator(self.attention.out_dim + noise_dim, image_size, channels, growth, layers)
        self.hparams = {
            "latent_dim": latent_dim,
            "memory_shape": list(self.attention.memory.shape),
            "noise_dim": noise_dim,
            "image_size": image_size,
            "channels": channels,
            "growth": growth,
            "layers": layers,
            "train_memory": train_memory,
            "memory_mode": memory_mode,
            "temperature": temperature,
            "normalise": normalise,
        }

    def forward(self, z: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Params: z (B, latent_dim); noise (B, noise_dim) or None for zeros. Returns (B, 1, S, S)."""
        zc, _ = self.attention(z)
        if self.noise_dim:
            if noise is None:
                noise = torch.zeros(z.shape[0], self.noise_dim, device=z.device, dtype=z.dtype)
            zc = torch.cat([zc, noise], dim=1)
        return self.dense(zc)

    @classmethod
    def from_hparams(cls, hparams: dict) -> MemoryGenerator:
        """An untrained instance of the right shape, to load a state dict into."""
        hp = dict(hparams)
        memory = torch.zeros(*hp.pop("memory_shape"))
        return cls(memory=memory, **hp)
