"""The PatchGAN discriminator (paper §3.4, eq. 8; pix2pix's NLayerDiscriminator).

``n_layers`` strided 4x4 convolutions, then two 4x4 convolutions of stride 1, the last one
giving a map of patch logits; the discriminator's output is the mean of that map. Eq. 8,
size_in = (size_out - 1) * stride + kernel, applied from one output pixel back to the input,
gives the receptive field: 70 px for n_layers = 3. The paper uses 70x70 at 256 px; at other
resolutions the depth is the one whose field is closest to the same fraction of the image.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL = 4


def layer_specs(n_layers: int) -> list[tuple[int, int]]:
    """(kernel, stride) of each convolution of a PatchGAN with ``n_layers`` strided layers."""
    return [(KERNEL, 2)] * n_layers + [(KERNEL, 1), (KERNEL, 1)]


def receptive_field(specs: list[tuple[int, int]]) -> int:
    """Receptive field of one output pixel by eq. 8, applied from the last layer to the first.

    Params:
        specs: (kernel, stride) per layer, input to output.
    Returns:
        The side in input pixels.
    """
    size = 1
    for kernel, stride in reversed(specs):
        size = (size - 1) * stride + kernel
    return size


def depth_for(image_size: int, field_at_256: int = 70) -> int:
    """Strided layers whose receptive field (eq. 8) is closest to field_at_256 * image_size / 256.

    Params:
        image_size: the side of the training images.
        field_at_256: the wanted receptive field at 256 px (the paper's 70).
    Returns:
        n_layers >= 1 (ties go to the shallower network).
    """
    target = field_at_256 * image_size / 256
    best = min(range(1, 9), key=lambda n: (abs(receptive_field(layer_specs(n)) - target), n))
    return best


class PatchDiscriminator(nn.Module):
    """PatchGAN on (B, 1, S, S) images.

    Params:
        channels: channels of the first layer (doubled per layer, capped at 8x).
        n_layers: strided layers (see :func:`depth_for`).
    """

    def __init__(self, channels: int, n_layers: int):
        super().__init__()
        self.hparams = {"channels": channels, "n_layers": n_layers}
        specs = layer_specs(n_layers)
        blocks: list[nn.Module] = []
        c_in, c = 1, channels
        for i, (k, s) in enumerate(specs[:-1]):
            c = channels * 2 ** min(i, 3)
            layers: list[nn.Module] = [nn.Conv2d(c_in, c, k, stride=s, padding=1, bias=i == 0)]
            if i > 0:  # no normalisation on the image itself (pix2pix)
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            blocks.append(nn.Sequential(*layers))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c_in, 1, specs[-1][0], stride=specs[-1][1], padding=1)
        self.receptive_field = receptive_field(specs)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Params: x (B, 1, S, S); features: also return every intermediate layer's output.

        Returns:
            The mean patch logit (B,), and with ``features`` the list of layer outputs
            (for L_APG).
        """
        feats = []
        h = x
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        logits = self.head(h).mean(dim=(1, 2, 3))
        return (logits, feats) if features else logits
