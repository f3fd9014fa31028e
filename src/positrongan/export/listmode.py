"""Chunked reading of a simulation ROOT file's pair trees for the exporters.

The crystal of each single is found exactly as the reconstruction finds it
(:func:`positrongan.recon.lors.read_coincidences`): the ``CrystalID`` branch, or the crystal
located from ``PostPosition`` when a file has no such branch; pairs outside the axial extent
are dropped. So an exported file holds the same crystal pairs, in the same order, as the
reconstruction reads.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import ArtifactError
from ..geometry.scanner import Scanner
from ..rootfile import open_tree

log = logging.getLogger(__name__)

# Entries per chunk: ~100 bytes per pair and branch group, so a chunk stays at tens of MB.
STEP_ENTRIES = 200_000


def crystal_box_mm(scanner: Scanner) -> tuple[float, float, float]:
    """Crystal box (radial depth, tangential width, axial width) in mm: the opengate engine's
    (``simulate.gate.crystal_box_mm``, checked equal in tests/test_export.py), restated here so
    the exports do not import the gate engine module (its lazy opengate/ITK imports would count
    against the export rules' environment)."""
    width = 2 * scanner.inner_radius_mm * math.sin(math.pi / scanner.crystals_per_ring) * 0.999
    return scanner.crystal_depth_mm, width, scanner.axial_pitch_mm * 0.999


def has_tree(path: str | Path, tree: str) -> bool:
    """Whether the file holds ``tree`` (with or without entries): the exporters copy every tree present."""
    import uproot

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        with uproot.open(path) as f:
            return tree in f
    except Exception as exc:  # uproot raises many types on a truncated/corrupt file
        raise ArtifactError(
            f"{path}: not a readable ROOT file ({type(exc).__name__}); it may be truncated or corrupt"
        ) from None


def _ids(chunk: dict, suffix: str, scanner: Scanner) -> np.ndarray:
    if f"CrystalID{suffix}" in chunk:
        return np.asarray(chunk[f"CrystalID{suffix}"], dtype=np.int64)
    x, y, z = (np.asarray(chunk[f"PostPosition_{c}{suffix}"], dtype=np.float64) for c in "XYZ")
    return scanner.locate(x, y, z)


def iter_chunks(
    path: str | Path,
    tree: str,
    scanner: Scanner,
    suffixes: tuple[str, ...] = ("1", "2"),
    step: int = STEP_ENTRIES,
) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of a tree as numpy arrays, each with ``CrystalID<suffix>`` filled and checked.

    Params:
        path: the simulation ROOT file.
        tree: ``Coincidences``, ``Delayed`` (suffixes "1", "2") or ``Singles`` (suffix "").
        scanner: the configured scanner (ids are checked against it).
        suffixes: branch suffixes of the singles in one entry.
        step: entries per chunk.
    Yields:
        dict branch -> array for the entries whose crystals are all inside the scanner.
    Raises:
        ArtifactError: missing file/tree/branches, or ids beyond the configured scanner.
    """
    path = Path(path)
    dropped = 0
    with open_tree(path, tree) as t:
        keys = set(t.keys())
        for s in suffixes:
            pos = {f"PostPosition_{c}{s}" for c in "XYZ"}
            if f"CrystalID{s}" not in keys and not pos <= keys:
                raise ArtifactError(
                    f"{path}: tree '{tree}' has neither CrystalID{s} nor PostPosition_X/Y/Z{s}; cannot find the crystals"
                )
        # open_tree turns a failing read (a truncated file) into an ArtifactError naming the file.
        for chunk in t.iterate(step_size=step, library="np"):
            chunk = {k: np.asarray(v) for k, v in chunk.items()}
            ids = [_ids(chunk, s, scanner) for s in suffixes]
            ok = np.logical_and.reduce([i >= 0 for i in ids])
            top = max(int(i.max(initial=-1)) for i in ids)
            if top >= scanner.n_crystals:
                raise ArtifactError(
                    f"{path}: CrystalID {top} but the configured scanner has {scanner.n_crystals} crystals; "
                    "was it simulated with another scanner config?"
                )
            for s, i in zip(suffixes, ids):
                chunk[f"CrystalID{s}"] = i
            if not ok.all():
                dropped += int((~ok).sum())
                chunk = {k: v[ok] for k, v in chunk.items()}
            yield chunk
    if dropped:
        log.warning("%s:%s: %d entries outside the scanner's axial extent dropped", path.name, tree, dropped)
