"""The attention memory of positron features (paper eq. 6).

The CT latent z is the query, the memory vectors y_s (one per training positron image) are
the keys and values: score(z, y_s) = z^T W_a y_s, a = softmax_s(score), c = sum_s a_s y_s.
The generator receives [z; c] (plus noise). W_a is learned jointly with G and D; the memory
can be made trainable too.
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionMemory(nn.Module):
    """Global (Luong "general") attention over a fixed set of memory vectors.

    Params:
        latent_dim: dimension d of the query z.
        memory: (M, k) memory vectors y_s. They are whitened per dimension (divided by the
            standard deviation over the memory) so the scores start on a unit scale whatever
            the PCA coefficients' range.
        trainable: make the (whitened) memory a parameter.
        mode: ``attention`` (eq. 6), ``mean`` (c = the mean memory vector, i.e. uniform
            attention; ablation) or ``none`` (c = 0, the same input shape; ablation).
        temperature: T of softmax(score / T) (1 = eq. 6).
        normalise: score cosine similarities times sqrt(k), z^T W_a y with z W_a and y
            L2-normalised, so a score's scale is set by the angle, not by the norms (the
            values c stay the whitened memory).
    """

    MODES = ("attention", "mean", "none")

    def __init__(
        self,
        latent_dim: int,
        memory: torch.Tensor,
        trainable: bool = False,
        mode: str = "attention",
        temperature: float = 1.0,
        normalise: bool = False,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.normalise = bool(normalise)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        memory = torch.as_tensor(memory, dtype=torch.float32)
        if memory.ndim != 2 or memory.shape[0] < 1:
            raise ValueError(f"memory must be (M, k) with M >= 1, got {tuple(memory.shape)}")
        scale = memory.std(dim=0, unbiased=False) if memory.shape[0] > 1 else torch.ones(memory.shape[1])
        scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))  # constant dims stay as they are
        whitened = memory / scale
        if trainable:
            self.memory = nn.Parameter(whitened)
        else:
            self.register_buffer("memory", whitened)
        self.latent_dim = latent_dim
        self.feature_dim = memory.shape[1]
        # Small initial W_a: attention starts near uniform and sharpens as training needs.
        self.w_a = nn.Parameter(torch.randn(latent_dim, self.feature_dim) / (latent_dim * self.feature_dim) ** 0.5)

    @property
    def out_dim(self) -> int:
        """Dimension of [z; c]."""
        return self.latent_dim + self.feature_dim

    def attention(self, z: torch.Tensor) -> torch.Tensor:
        """Attention weights a (B, M) of queries z (B, d); each row sums to one."""
        q = z @ self.w_a
        keys = self.memory
        if self.normalise:
            q = nn.functional.normalize(q, dim=1) * self.feature_dim**0.5
            keys = nn.functional.normalize(keys, dim=1)
        return torch.softmax(q @ keys.T / self.temperature, dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Params: z (B, d). Returns: ([z; c] (B, d + k), attention weights (B, M))."""
        if self.mode == "attention":
            a = self.attention(z)
        else:
            a = z.new_full((z.shape[0], self.memory.shape[0]), 1.0 / self.memory.shape[0])
        c = a @ self.memory if self.mode != "none" else z.new_zeros(z.shape[0], self.feature_dim)
        return torch.cat([z, c], dim=1), a


def effective_slots(weights: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of each row of attention weights (B, M), averaged over the rows: the number
    of memory slots the attention spreads over (M for uniform weights, 1 for a one-hot row)."""
    w = weights.double().clamp_min(0)
    entropy = -(w * torch.log(w.clamp_min(1e-300))).sum(dim=1)
    return torch.exp(entropy).mean()
