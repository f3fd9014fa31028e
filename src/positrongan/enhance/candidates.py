"""The reconstruction-side classical baselines: pick, per count fraction, the reconstruction
setting whose images score best on the validation scans, and use that setting's images of the
test scans.

- ``osem_early``: more OSEM iterations with early stopping: the iteration count and post-filter
  FWHM among the candidates kept by the low-count reconstructions
  (``recon/lowcount/{scan}_f{f}_iterations.npz``).
- ``map_rdp``: MAP-OSEM with the relative-difference prior: beta among ``enhancement.map_betas``
  (``recon/map/{scan}_f{f}.npz``).

The candidates files (``recon/snapshots.py``) hold the slices of every plane through the part at
the dataset's slice scale; a dataset row (scan, plane) takes its plane, divided by the fraction
and by the row's ``reference_scale`` exactly as ``data/positron.py`` makes ``low_count`` (clipped
at 0). Scored, like every enhanced image, clipped to [0, 1], by the mean PSNR against the
reference slices (``classical.tune_sigma``'s criterion).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..io import load_npz
from .quality import psnr

# Largest difference tolerated between the candidate that is the reconstruction's own setting and
# the dataset's low-count slice (float16 storage: ~1e-3 of the file's largest value).
MATCH_TOLERANCE = 0.02


def _fraction_key(f: float) -> str:
    return f"{float(f):.6g}"


class CandidateFiles:
    """The candidates files of one method, indexed by (scan, fraction).

    Params:
        paths: candidates files (one per scan and fraction; the scans of other splits may be there).
    Raises:
        ArtifactError: naming the file when two files disagree on the candidates, or one repeats.
    """

    def __init__(self, paths):
        self.paths: dict[tuple[str, str], Path] = {}
        self.settings = None
        for p in map(Path, paths):
            head = load_npz(p, required=("scan", "fraction", "iterations", "fwhm_mm", "beta", "planes", "slices"))
            key = (str(head["scan"]), _fraction_key(head["fraction"]))
            if key in self.paths:
                raise ArtifactError(f"{p}: a second candidates file for scan {key[0]} at fraction {key[1]}")
            settings = np.stack([head["iterations"], head["fwhm_mm"], head["beta"]], axis=1).astype(np.float64)
            if self.settings is None:
                self.settings = settings
            elif settings.shape != self.settings.shape or not np.allclose(settings, self.settings):
                raise ArtifactError(
                    f"{p}: its candidates (iterations, fwhm_mm, beta) differ from the other files'; rerun the "
                    "reconstructions with one config"
                )
            self.paths[key] = p
        if self.settings is None:
            raise ArtifactError("no candidates file given (--candidates)")

    def __len__(self) -> int:
        return len(self.settings)

    def stack(self, data: dict, rows: np.ndarray, fractions: np.ndarray, pick=None) -> np.ndarray:
        """Candidate slices of dataset rows on the dataset's scale.

        Params:
            data: the dataset arrays (scan, plane, reference_scale).
            rows: dataset row indices.
            fractions: (F,) the dataset's low-count fractions.
            pick: None (every candidate) or (F,) one candidate index per fraction.
        Returns:
            (len(rows), F, C, S, S) float32, or (len(rows), F, S, S) with ``pick``.
        """
        if "reference_scale" not in data:
            raise ArtifactError(
                "the dataset has no 'reference_scale' (written since the osem_early baseline); rebuild it "
                "(rule build_positron_dataset)"
            )
        scans, planes, scale = data["scan"].astype(str), data["plane"], data["reference_scale"]
        out = None
        for scan in sorted(set(scans[rows])):
            sel = np.flatnonzero(scans[rows] == scan)
            for j, f in enumerate(fractions):
                key = (scan, _fraction_key(f))
                if key not in self.paths:
                    raise ArtifactError(f"no candidates file for scan {scan} at fraction {f:g} (--candidates)")
                arrays = load_npz(self.paths[key])
                cand = unpack(arrays) if pick is None else unpack_one(arrays, int(pick[j]))
                where = {int(p): i for i, p in enumerate(arrays["planes"])}
                missing = [int(p) for p in planes[rows[sel]] if int(p) not in where]
                if missing:
                    raise ArtifactError(
                        f"{self.paths[key]}: planes {missing[:5]} of the dataset are not in it (made with another "
                        "truth or grid?); rerun the reconstruction"
                    )
                idx = [where[int(p)] for p in planes[rows[sel]]]
                block = cand[..., idx, :, :] if pick is None else cand[idx]
                block = np.moveaxis(block, -3, 0) if pick is None else block  # (n, C, S, S) or (n, S, S)
                sc = scale[rows[sel]].astype(np.float64) * float(f)
                shape = (-1,) + (1,) * (block.ndim - 1)
                vals = np.where(
                    sc.reshape(shape) > 0, np.clip(block / np.where(sc > 0, sc, 1.0).reshape(shape), 0, None), 0.0
                ).astype(np.float32)
                if out is None:
                    out = np.zeros((len(rows), len(fractions)) + vals.shape[1:], dtype=np.float32)
                out[sel, j] = vals
        if out is None:
            raise ArtifactError("no dataset row to take candidates for")
        return out


def unpack(arrays: dict) -> np.ndarray:
    """Every candidate of a candidates file in reconstruction units: (C, P, S, S) float32 (the
    format of ``recon/snapshots.py``, read here without importing the reconstruction stack)."""
    return arrays["slices"].astype(np.float32) * np.float32(arrays["unit"])


def unpack_one(arrays: dict, c: int) -> np.ndarray:
    """Candidate c of a candidates file in reconstruction units: (P, S, S) float32."""
    return arrays["slices"][c].astype(np.float32) * np.float32(arrays["unit"])


def tune(candidates: np.ndarray, reference: np.ndarray) -> tuple[int, np.ndarray]:
    """The candidate with the highest mean PSNR (images clipped to [0, 1]) against the reference.

    Params:
        candidates: (N, C, S, S) validation slices at one fraction, one per candidate.
        reference: (N, S, S) their reference slices.
    Returns:
        (index of the best candidate, (C,) mean PSNR per candidate).
    """
    if len(candidates) == 0:
        raise ValueError("no validation slice to choose the reconstruction setting on (the val split is empty)")
    scores = np.array(
        [psnr(np.clip(candidates[:, c], 0.0, 1.0), reference).mean() for c in range(candidates.shape[1])]
    )
    return int(np.argmax(scores)), scores


def check_against_dataset(files: CandidateFiles, cands: np.ndarray, low: np.ndarray, source) -> float | None:
    """The largest difference between the candidate that is the low-count reconstruction's own
    setting (beta 0, its iterations and FWHM) and the dataset's ``low_count`` of the same rows,
    or None when no candidate is that setting. A mismatch means the candidates were made from
    other reconstructions than the dataset's.

    Params:
        files: the candidates files; cands: (N, F, C, S, S) their candidates of some rows;
        low: (N, F, S, S) the dataset's low_count of those rows; source: named in the error.
    Raises:
        ArtifactError: beyond ``MATCH_TOLERANCE``.
    """
    head = load_npz(next(iter(files.paths.values())), required=("reference_iterations", "reference_fwhm_mm"))
    it, fw, be = files.settings.T
    own = np.flatnonzero(
        (it == float(head["reference_iterations"])) & np.isclose(fw, float(head["reference_fwhm_mm"])) & (be == 0)
    )
    if not len(own):
        return None
    diff = float(np.abs(cands[:, :, own[0]] - np.clip(low, 0, None)).max(initial=0.0))
    if diff > MATCH_TOLERANCE:
        raise ArtifactError(
            f"{source}: the candidate of the reconstruction's own setting differs from the dataset's low-count slices "
            f"by {diff:.3g} (> {MATCH_TOLERANCE}); the candidates and the dataset come from different runs"
        )
    return diff
