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
        compared: the images whose distance to the real reference is measured (the generated
            samples; for the ``real`` floor, the training images; for the ``real_split`` floor,
            one half of the held-out scans).
        seed: the training seed of the row (metric randomness is drawn per (name, seed)).
        reference: the real images the distances are measured against; None: the held-out test
            set (``real_split``: the other half of the held-out scans).
    """

    name: str
    images: np.ndarray
    compared: np.ndarray
    seed: int = 0
    reference: np.ndarray | None = None


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

    def reference(self, subject: Subject) -> np.ndarray:
        """The real images ``subject`` is compared with."""
        return self.test if subject.reference is None else subject.reference

    def row_seed(self, metric: str, subject: Subject) -> int:
        """A stable seed for one metric of one row (method and training seed)."""
        return self.seed(metric, subject.name, subject.seed)
