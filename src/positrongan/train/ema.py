"""Exponential moving average of a generator's weights (a separate variant when enabled)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a copy of ``model`` whose parameters follow
    shadow <- decay * shadow + (1 - decay) * model after every update; buffers (batch-norm
    statistics) are copied as they are.

    Params:
        model: the network being trained.
        decay: in [0, 1); 0.999 averages over ~1000 updates.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1 - self.decay)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)
