"""The detector's network: a small 2D U-Net with one output channel per class.

Three resolution levels (S, S/2, S/4) and a bottleneck at S/8, two 3x3 convolutions with
GroupNorm and LeakyReLU per block. GroupNorm rather than BatchNorm: the detector is applied to
images whose statistics differ from the training set's (low-count, enhanced, generated), and
batch statistics would then depend on what else is in the batch. At width 8 it has about 30k
parameters: the training set is about 200 slices.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = min(4, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(groups, cout),
        nn.LeakyReLU(0.1),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(groups, cout),
        nn.LeakyReLU(0.1),
    )


class SmallUNet(nn.Module):
    """U-Net: (B, 1, S, S) images -> (B, classes, S, S) logits; S divisible by 2**levels.

    Params:
        classes: output channels (background + defect types).
        width: channels of the first level; level k has width * 2**k.
        levels: down-sampling steps (the bottleneck is at S / 2**levels).
    """

    def __init__(self, classes: int, width: int = 8, levels: int = 3):
        super().__init__()
        self.levels = levels
        chans = [width * 2**k for k in range(levels + 1)]
        self.down = nn.ModuleList([_block(1 if k == 0 else chans[k - 1], chans[k]) for k in range(levels)])
        self.bottleneck = _block(chans[levels - 1], chans[levels])
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2) for k in reversed(range(levels))]
        )
        self.merge = nn.ModuleList([_block(2 * chans[k], chans[k]) for k in reversed(range(levels))])
        self.head = nn.Conv2d(chans[0], classes, 1)
        self.feature_dim = chans[levels]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The bottleneck activations and the skip connections."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        return self.bottleneck(x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encode(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) global-average-pooled bottleneck activations."""
        return self.encode(x)[0].mean(dim=(2, 3))
