"""Golden regression of the fast engine, as opengate's tests do it: one small seeded scan
(numba kernel, a 96 x 8 crystal scanner, 1e5 decays of a defect-free tube) compared with stored
reference statistics under per-quantity statistical tolerances, not bit for bit.

The reference values below are the means over seeds 100..107 of the same scan (not seed 0, the
one tested), produced on 2026-11-27 with the code of issue 14 (per-crystal readout in box
crystals, Levin-Hoffman positron range, F-18 beta+ branching: all on by default; the former
gapless-annulus values were singles 26180, prompts 3841) by::

    rows = [simulate_golden(Path(tmp), seed) for seed in range(100, 108)]
    REFERENCE = {key: mean over rows of info[key]}; REFERENCE_SPECTRUM = mean spectrum, rounded to 1e-4

The seed-to-seed standard deviations were: singles 162, prompts 27, trues 33, scatters 13,
randoms 6, delayed 7, scatter fraction 0.0086 -- each within its tolerance below. A change of
the physics, the digitizer or the sorter that moves a quantity by more than its tolerance (about
five standard deviations of one scan) fails here; a change of the random stream alone does not.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from positrongan import config as configlib
from positrongan.rootfile import read_tree
from positrongan.simulate.driver import draw_phantom, run_scan

GOLDEN = {
    "scans": {"count": 1},
    "scanner": {"crystals_per_ring": 96, "rings": 8},
    "simulation": {"engine": "fast", "kernel": "numba", "write_singles": True, "chunk_decays": 50_000},
    "phantom": {
        "activity_bq": 2.0e6,
        "acquisition_s": 0.05,  # 1e5 decays
        "length_mm": 30.0,
        "outer_semi_axes_mm": [20.0, 15.0],
        "wall_thickness_mm": 3.0,
        "defects": {k: {"count": [0, 0]} for k in ("cracks", "pits", "blockages", "bubbles")},
    },
}
EDGES_MEV = np.linspace(0.35, 0.65, 11)  # the energy window in 30 keV bins
SEED = 0

# Means over seeds 100..107 (see the module docstring).
REFERENCE = {
    "decays": 99880.9,
    "singles": 17085.5,
    "prompts": 1673.4,
    "trues": 1429.0,
    "scatters": 202.0,
    "randoms": 42.4,
    "delayed": 46.0,
    "scatter_fraction": 0.12076,
}
# Fraction of the singles per 30 keV bin, 350..650 keV.
REFERENCE_SPECTRUM = [0.0671, 0.0487, 0.0491, 0.1006, 0.2269, 0.2858, 0.1694, 0.0466, 0.0055, 0.0002]


def simulate_golden(tmp: Path, seed: int) -> tuple[dict, np.ndarray]:
    """The golden scan with ``seed``: its counts and the singles' energy spectrum (fractions per bin)."""
    cfg = configlib.validate({**GOLDEN, "seed": seed})
    tube = draw_phantom(cfg, "scan_000")
    root = tmp / f"golden_{seed}.root"
    info = run_scan(cfg, "scan_000", tube, root)
    energy = read_tree(root, "Singles", ["TotalEnergyDeposit"])["TotalEnergyDeposit"]
    hist, _ = np.histogram(energy, EDGES_MEV)
    return info, hist / max(hist.sum(), 1)


def test_golden_scan_counts_scatter_fraction_and_spectrum(tmp_path):
    info, spectrum = simulate_golden(tmp_path, SEED)
    # Decays are Poisson(A T): 5 sigma.
    assert abs(info["decays"] - REFERENCE["decays"]) <= 5 * math.sqrt(REFERENCE["decays"])
    # Counts: the spread of one scan is about Poisson (singles and prompts of one decay are
    # correlated, which widens it a little): 5 sqrt(N), and at least 3 counts for the rare ones.
    for key in ("singles", "prompts", "trues", "scatters", "randoms", "delayed"):
        ref = REFERENCE[key]
        assert abs(info[key] - ref) <= max(5 * math.sqrt(ref), 3), (key, info[key], ref)
    # Scatter fraction: binomial among the prompts.
    sf, n = REFERENCE["scatter_fraction"], REFERENCE["prompts"]
    assert abs(info["scatter_fraction"] - sf) <= 5 * math.sqrt(sf * (1 - sf) / n)
    # Spectrum: each bin's fraction is binomial among the singles.
    ref = np.asarray(REFERENCE_SPECTRUM)
    tol = 5 * np.sqrt(ref * (1 - ref) / REFERENCE["singles"]) + 1e-3
    assert np.all(np.abs(spectrum - ref) <= tol), (spectrum.round(4).tolist(), ref.tolist())
