"""Weight initialisation of every network, in one helper (as pix2pix's ``init_weights``)."""

from __future__ import annotations

from torch import nn

INIT_KINDS = ("normal", "xavier", "kaiming")


def init_weights(net: nn.Module, kind: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise convolutions (and linear layers) and batch-norm scales of ``net`` in place.

    ``normal`` is the DCGAN paper's N(0, gain) for weights; every kind sets biases to 0 and
    batch-norm scales to N(1, gain), shifts to 0.

    Params:
        net: the network.
        kind: ``normal``, ``xavier`` (normal, with ``gain``) or ``kaiming`` (fan-in).
        gain: the standard deviation (``normal``) or gain (``xavier``).
    Returns:
        ``net``, for chaining.
    """
    if kind not in INIT_KINDS:
        raise ValueError(f"kind must be one of {INIT_KINDS}, got {kind!r}")
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if kind == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif kind == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            else:
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net
