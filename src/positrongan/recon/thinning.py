"""Short-scan twins: a scan f times as long, made from one simulated scan by list-mode thinning.

Prompts and delayed coincidences of a scan are Poisson processes; keeping each event
independently with probability f gives Poisson processes of f times the rate (Poisson
thinning), which is exactly what a scan f times as long records: same phantom, same truth,
fewer counts. Prompts and delayed events are thinned independently, as they would be.
"""

from __future__ import annotations

import numpy as np


def fraction_tag(fraction: float) -> str:
    """The fraction as it appears in file names (``0.1`` -> ``f0.1``): ``%g`` round-trips
    every fraction a config can hold and never contains a path separator."""
    return f"f{fraction:g}"


def thin(arrays: tuple[np.ndarray, ...], fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Keep each event (the same index in every array) with probability ``fraction``.

    Params:
        arrays: per-event columns of equal length (e.g. the two crystal ids of each pair).
        fraction: 0 < f <= 1; 1 returns the arrays unchanged.
        rng: the twin's own seeded generator.
    Returns:
        The kept events of every array, in their original order.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"thinning fraction must be in (0, 1], got {fraction}")
    if fraction == 1 or not arrays:
        return tuple(arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("thinning needs per-event arrays of equal length")
    keep = np.flatnonzero(rng.random(n) < fraction)
    return tuple(a.take(keep, axis=0) for a in arrays)
