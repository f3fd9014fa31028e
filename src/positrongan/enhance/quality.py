"""Image quality of enhanced slices against the reference slice and the truth activity.

- PSNR = 10 log10(1 / MSE), images on the dataset's [0, 1] scale (data range 1).
- SSIM (Wang et al. 2004; scikit-image, 7-px window, data range 1) and MS-SSIM (the project's
  ``metrics.msssim``, the ``evaluation.msssim_*`` settings).
- Per-defect CRC and CNR: ``recon.detectability.score_defects``, the project's one definition,
  applied to the stack of a test scan's dataset slices (every plane cutting a defect is in the
  dataset) with the truth brought to the same scale (:func:`scan_truth`).
- Hallucination, on defect-free slices, with masks from the truth (:func:`hallucination`):
  ``cold_spot``: fraction of core fluid pixels (pure fluid, >= EDGE_PX from anything else) below
  half the slice's fluid level (the median of those pixels in the image): spurious blockages or
  bubbles. ``hot_spot``: fraction of core wall pixels (aluminium, >= WALL_EDGE_PX from anything
  else; the wall is only 2-4 px thick at 64 px, so EDGE_PX would leave none) above half the fluid
  level: spurious cracks or pits. ``wall_ratio``: pixels of the true wall (dilated by EDGE_PX)
  that look like wall (below half the fluid level) in the image, over the same count in the
  reference slice: below 1, the wall looks thinner than the full scan shows it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import load_npz
from ..recon.detectability import EDGE_PX, PURE, WALL_MU_PER_MM, _disc, defect_list, score_defects
from ..slices import dataset_scale, resize_volume

HALF = 0.5
WALL_EDGE_PX = 1


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR (dB) of image pairs a[i] vs b[i] of range 1; inf for identical images.

    Params:
        a, b: (N, S, S) or (S, S).
    Returns:
        (N,) float64 (a 0-d array for one pair).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = ((a - b) ** 2).reshape(*a.shape[:-2], -1).mean(-1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of image pairs (scikit-image, Gaussian-free 7-px window, data range 1). (N,) float64."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(x, y, data_range=1.0, win_size=7) for x, y in zip(a, b)], np.float64)


def image_scores(
    images: np.ndarray, reference: np.ndarray, truth: np.ndarray, msssim_settings
) -> dict[str, np.ndarray]:
    """PSNR, SSIM and MS-SSIM of every slice against its reference and its truth.

    Params:
        images: (N, S, S) images in [0, 1].
        reference, truth: (N, S, S).
        msssim_settings: ``metrics.msssim.MSSSIMSettings``.
    Returns:
        ``{psnr,ssim,msssim}_{ref,truth}`` -> (N,) arrays.
    """
    from ..metrics.msssim import ms_ssim

    out = {}
    for name, target in (("ref", reference), ("truth", truth)):
        out[f"psnr_{name}"] = psnr(images, target)
        out[f"ssim_{name}"] = ssim(images, target)
        out[f"msssim_{name}"] = ms_ssim(images, target, msssim_settings)
    return out


def scan_truth(path: str | Path, planes: np.ndarray, image_size: int, slice_planes: int) -> dict:
    """A truth npz at the dataset's scale, for the given planes.

    Params:
        path: ``truth/{scan}.npz`` (activity, mu, defect_index, defect_list).
        planes: the dataset planes of that scan.
        image_size, slice_planes: the ``dataset`` config.
    Returns:
        activity, mu (K, S, S) as ``score_defects`` slabs and resizes them, defect_index
        (K, S, S) resized by nearest neighbour, defects (the list).
    """
    t = load_npz(path, required=("activity", "mu", "defect_index"))
    planes = np.asarray(planes, dtype=np.int64)
    return {
        "activity": dataset_scale(t["activity"], image_size, slice_planes)[planes],
        "mu": dataset_scale(t["mu"], image_size, slice_planes)[planes],
        "defect_index": resize_volume(t["defect_index"][planes], image_size, labels=True),
        "defects": defect_list(t),
    }


def defect_scores(stack: np.ndarray, truth: dict) -> list[dict]:
    """CRC/CNR of every defect of one scan from its slice stack (K, S, S) at dataset scale
    (``scan_truth`` of the same planes); the rows of ``score_defects``."""
    return score_defects(
        stack, truth["activity"], truth["mu"], truth["defect_index"], truth["defects"], image_size=stack.shape[-1]
    )


def masks(activity: np.ndarray, mu: np.ndarray) -> dict[str, np.ndarray]:
    """Core fluid, core wall and the dilated wall band of one slice (see the module docstring)."""
    from scipy import ndimage

    act = activity / (float(activity.max()) or 1.0)
    fluid = act >= PURE
    wall = (act <= 1.0 - PURE) & (mu >= WALL_MU_PER_MM)
    edge = _disc(EDGE_PX)
    return {
        "fluid": ndimage.binary_erosion(fluid, structure=edge),
        "wall_core": ndimage.binary_erosion(wall, structure=_disc(WALL_EDGE_PX)),
        "wall_band": ndimage.binary_dilation(wall, structure=edge),
    }


def hallucination(image: np.ndarray, reference: np.ndarray, m: dict[str, np.ndarray]) -> dict[str, float]:
    """Cold spots, hot spots and the wall ratio of one defect-free slice (module docstring).

    Params:
        image, reference: (S, S) on the dataset scale.
        m: :func:`masks` of the slice.
    Returns:
        ``cold_spot``, ``hot_spot`` (fractions), ``wall_ratio``; NaN where a mask is empty or
        the fluid level is not positive.
    """
    nan = {"cold_spot": math.nan, "hot_spot": math.nan, "wall_ratio": math.nan}
    if not m["fluid"].any():
        return nan
    out = dict(nan)
    level = float(np.median(image[m["fluid"]]))
    ref_level = float(np.median(reference[m["fluid"]]))
    if level <= 0 or ref_level <= 0:
        return nan
    out["cold_spot"] = float((image[m["fluid"]] < HALF * level).mean())
    if m["wall_core"].any():
        out["hot_spot"] = float((image[m["wall_core"]] > HALF * level).mean())
    if m["wall_band"].any():
        seen = float((image[m["wall_band"]] < HALF * level).sum())
        ref_seen = float((reference[m["wall_band"]] < HALF * ref_level).sum())
        out["wall_ratio"] = seen / ref_seen if ref_seen > 0 else math.nan
    return out
