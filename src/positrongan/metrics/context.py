"""What every metric receives: the real image sets, the settings, and a shared cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Subject:
    """One row of the results table.

    Params:
        name: method name (``ours``, ``vae``, ...) or ``real``.
        images: the images whose own properties are measured (diversity, memorisation).
        compared: the images whose distance to the real test set is measured (the generated
            samples; for the ``real`` reference row, the training images).
    """

    name: str
    images: np.ndarray
    compared: np.ndarray


@dataclass
class Context:
    """Shared inputs of the metrics.

    Params:
        test: (N, S, S) held-out real test images in [0, 1].
        train: (M, S, S) real training images in [0, 1].
        ev: the ``evaluation`` config section.
        device: torch device.
        seed: ``seed(*keys)`` -> int, a stable seed per (metric, method).
        cache: per-run storage (e.g. Inception features of the test set), shared by all rows.
    """

    test: np.ndarray
    train: np.ndarray
    ev: dict
    device: Any
    seed: Callable[..., int]
    cache: dict = field(default_factory=dict)
