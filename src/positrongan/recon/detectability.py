"""Can an inspector see each defect? Contrast recovery (CRC) and contrast-to-noise ratio (CNR)
of every defect of a scan, scored against the truth maps at the dataset's slice scale.

Regions (docs/detectability.md), per defect k, in the transverse planes the defect cuts, after
bringing the image and the truth to the dataset's slice scale exactly as the dataset does
(slabs of ``dataset.slice_planes`` planes, resized to ``dataset.image_size``; the defect
masks are the centre plane's, resized by nearest neighbour):
- D, the defect: pixels whose truth defect index is k;
- the neighbourhood: pixels within ``ring_px`` of D (a disc dilation in the plane), not in
  any defect;
- F, the local fluid background: neighbourhood pixels that are pure fluid (true activity
  >= ``PURE`` of the fluid level) and at least ``EDGE_PX`` pixels from anything that is not
  (the wall, air, any defect): the image's resolution rolls off near every edge, and that
  deterministic blur is neither background level nor noise;
- W, the local intact wall: neighbourhood pixels with no true activity (<= 1 - ``PURE``) whose
  attenuation is at least ``WALL_MU_PER_MM`` (aluminium, not air).

Cold defects (blockage, bubble) remove activity from the fluid: contrast = mean(F) - mean(D).
Hot defects (crack, pit) put fluid where the wall should be: contrast = mean(D) - mean(W).
CNR = contrast / std(F): the noise is the pixel standard deviation of the local fluid, the
region an inspector compares the defect against. CRC = (contrast / mean(F)) of the image over
the same ratio of the truth on the same pixels, so a perfect image scores 1 and the
truth's own partial volume at this scale is not counted as a loss.

Cracks and pits are also scored as a search (:func:`wall_search`): is the defect the brightest
spot of the wall when a window slides round it, and by how many SDs of the wall's own
window-to-window spread does it stand out?
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

from ..slices import dataset_scale, resize_volume

COLD = ("blockage", "bubble")
HOT = ("crack", "pit")
PURE = 0.95
WALL_MU_PER_MM = 0.015  # between water (0.0096 /mm) and aluminium (0.0226 /mm) at 511 keV
RING_PX = 6
EDGE_PX = 2
MIN_BACKGROUND_PX = 8

# The size that matters for seeing each type, as (name in the CSV, key of Defect.size).
SIZE_KEY = {"crack": "width_mm", "pit": "depth_mm", "blockage": "radius_mm", "bubble": "radius_mm"}

COLUMNS = (
    "scan",
    "defect",
    "type",
    "size_name",
    "size_mm",
    "depth_fraction",
    "wall_mm",
    "planes",
    "defect_px",
    "fluid_px",
    "reference_px",
    "crc",
    "cnr",
    "contrast",
    "noise",
    "search_snr",
    "search_found",
    "search_snr_slice",
    "search_found_slices",
)
# wall_search's keys under their CSV names (cracks and pits; NaN for cold defects).
SEARCH_COLUMNS = {
    "snr_length": "search_snr",
    "found_length": "search_found",
    "snr_slice": "search_snr_slice",
    "found_slice": "search_found_slices",
}


def at_dataset_scale(image, activity, mu, defect_index, image_size, slice_planes):
    """(image as float64, activity over the fluid level, mu, defect index) at the dataset's slice
    scale (the defect index resized by nearest neighbour): the maps every score here reads."""
    shapes = {a.shape for a in (image, activity, mu, defect_index)}
    if len(shapes) != 1:
        raise ValueError(f"image, activity, mu and defect_index differ in shape: {sorted(shapes)}")
    size = image.shape[-1] if image_size is None else image_size
    image, activity, mu = (dataset_scale(v, size, slice_planes) for v in (image, activity, mu))
    act = activity / (float(activity.max()) or 1.0)
    return image.astype(np.float64), act, mu, resize_volume(defect_index, size, labels=True)


def intact_wall(act: np.ndarray, mu: np.ndarray, defect_index: np.ndarray) -> np.ndarray:
    """Pixels of wall and nothing else (no fluid in them, no defect), on maps at the dataset's
    scale: the background of a crack or pit, and the wall search's null."""
    return (act <= 1.0 - PURE) & (mu >= WALL_MU_PER_MM) & (defect_index == 0)


def _disc(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def score_defects(
    image: np.ndarray,
    activity: np.ndarray,
    mu: np.ndarray,
    defect_index: np.ndarray,
    defects: Sequence[dict],
    image_size: int | None = None,
    slice_planes: int = 1,
    ring_px: int = RING_PX,
    edge_px: int = EDGE_PX,
    search: bool = False,
) -> list[dict]:
    """CRC and CNR of every defect (see the module docstring for the regions), and with
    ``search`` for cracks and pits the search score of :func:`wall_search` (``SEARCH_COLUMNS``;
    NaN without it: the enhancement study scores thousands of candidate stacks and reads only
    CRC and CNR).

    Params:
        image: (planes, g, g) reconstruction.
        activity: (planes, g, g) true activity (fluid fraction of each voxel).
        mu: (planes, g, g) true attenuation (1/mm).
        defect_index: (planes, g, g) uint8, k + 1 where ``defects[k]`` is.
        defects: the defect list (``Defect.to_json()`` dicts) in index order.
        image_size: the dataset's slice size (None: the reconstruction grid).
        slice_planes: planes averaged into one dataset slice.
        ring_px: width of the neighbourhood in pixels at that size.
        edge_px: distance kept between the fluid background and any non-fluid pixel.
        search: also run the wall search.
    Returns:
        One dict per defect, keys ``COLUMNS`` less ``scan``; CRC and CNR are NaN when the
        defect or its background has no pixel at this scale.
    """
    from scipy import ndimage

    image, act, mu, defect_index = at_dataset_scale(image, activity, mu, defect_index, image_size, slice_planes)
    disc, edge = _disc(ring_px), _disc(edge_px)
    any_defect = defect_index > 0
    pure = (act >= PURE) & ~any_defect
    rows = []
    for k, d in enumerate(defects):
        mask = defect_index == k + 1
        planes = np.flatnonzero(mask.reshape(len(mask), -1).any(1))
        near = np.zeros_like(mask)
        core = np.zeros_like(mask)
        for p in planes:
            near[p] = ndimage.binary_dilation(mask[p], structure=disc)
            core[p] = ndimage.binary_erosion(pure[p], structure=edge)
        near &= ~any_defect
        fluid = near & core
        wall = near & intact_wall(act, mu, defect_index)
        reference = wall if d["type"] in HOT else fluid
        row = {
            "defect": k,
            "type": d["type"],
            "size_name": SIZE_KEY[d["type"]],
            "size_mm": float(d["size"][SIZE_KEY[d["type"]]]),
            "depth_fraction": float(d["size"].get("depth_fraction", math.nan)),
            "wall_mm": float(d["size"].get("wall_mm", math.nan)),  # cracks, pits; absent in older truths
            "planes": int(planes.size),
            "defect_px": int(mask.sum()),
            "fluid_px": int(fluid.sum()),
            "reference_px": int(reference.sum()),
            "crc": math.nan,
            "cnr": math.nan,
            "contrast": math.nan,
            "noise": math.nan,
        }
        if mask.any() and fluid.sum() >= MIN_BACKGROUND_PX and reference.sum() >= MIN_BACKGROUND_PX:
            sign = 1.0 if d["type"] in HOT else -1.0

            def contrast(vol: np.ndarray) -> float:
                return sign * (vol[mask].mean() - vol[reference].mean())

            c_img, c_true = contrast(image), contrast(act)
            bkg_img, bkg_true = image[fluid].mean(), act[fluid].mean()
            noise = image[fluid].std()
            row["contrast"] = float(c_img / bkg_img) if bkg_img > 0 else math.nan
            row["noise"] = float(noise / bkg_img) if bkg_img > 0 else math.nan
            if bkg_img > 0 and c_true != 0:
                row["crc"] = float((c_img / bkg_img) / (c_true / bkg_true))
            if noise > 0:
                row["cnr"] = float(c_img / noise)
        rows.append(row)
    searched = search_scaled(image, act, mu, defect_index, defects, SEARCH_WINDOW_PX) if search else []
    found = {f["defect"]: f for f in searched}
    for row in rows:
        f = found.get(row["defect"], {})
        row.update({col: f.get(key, math.nan) for key, col in SEARCH_COLUMNS.items()})
    return rows


# ---- finding a hot defect along the wall ----------------------------------------------------

SEARCH_WINDOW_PX = 4  # 6 mm of arc at the default 64 px scale: about the image's resolution
SEARCH_STEP_DEG = 1.0
SEARCH_MIN_NULL_WINDOWS = 8.0  # independent windows (null arc / window) needed for a score
# The wall's level changes slowly round the section: its thickness varies once round and the
# ellipse's curvature twice, and a thinner wall holds more of the fluid's blur. A profile with these
# harmonics is fitted to the null windows and taken away, so a defect is compared with the wall
# around it, not with the far side. A defect spans ~10 degrees, a harmonic of order 2 half the circle.
SEARCH_TREND_HARMONICS = 2
# Null windows keep this many windows of arc from any crack or pit: the image blurs a defect over
# about one window, and a window half on it would count its own signal as the wall's.
SEARCH_CLEAR_WINDOWS = 1.5


def angle_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| wrapped to [0, pi] (radians)."""
    return np.abs((a - b + np.pi) % (2.0 * np.pi) - np.pi)


def _window_sums(phi: np.ndarray, radius: np.ndarray, values: np.ndarray, centres: np.ndarray, width: float):
    """Sum of ``values`` and number of pixels within ``width`` / 2 of arc (radius x angle) of each
    azimuth in ``centres``."""
    inside = radius[None, :] * angle_gap(phi[None, :], centres[:, None]) <= width / 2.0
    return inside @ values, inside.sum(1)


def wall_search(
    image: np.ndarray,
    activity: np.ndarray,
    mu: np.ndarray,
    defect_index: np.ndarray,
    defects: Sequence[dict],
    image_size: int | None = None,
    slice_planes: int = 1,
    window_px: float = SEARCH_WINDOW_PX,
) -> list[dict]:
    """Would an inspector who scans the tube's wall find each crack and pit? A search score that
    complements the pixel CNR of :func:`score_defects`, which adds it to every crack's and pit's
    row (docs/detectability.md, "Finding cracks and pits along the wall").

    At the same scale as :func:`score_defects`, in each plane the defect cuts: the wall band is
    the intact wall W of every defect's regions (no true activity, aluminium) plus the hot
    defects' own pixels; each band pixel has an azimuth about the centroid of the tube's section
    (fluid and wall, holes filled) in its plane. A window of ``window_px`` of arc slides round the
    band in steps of ``SEARCH_STEP_DEG``; its statistic is the image's mean over the band pixels
    it holds. The defect's statistic is the window at the circular mean azimuth of its own
    pixels. The null windows are those whose centre lies more than ``SEARCH_CLEAR_WINDOWS``
    windows of arc from every pixel of every hot defect in those planes (another crack or pit is
    a find, not a false alarm; cold defects stay in the background). The wall's slow change round
    the section (its thickness, the ellipse; ``SEARCH_TREND_HARMONICS``) is fitted to the null
    windows by least squares and taken from every window, the defect's included. Then

    - ``snr_length``: (defect's statistic - mean of the null) / SD of the null, with the band of
      all the planes the defect cuts pooled (an observer who averages along its length);
    - ``found_length``: the defect's statistic exceeds every null window (it is the brightest
      spot of the wall outside other hot defects);
    - ``snr_slice`` and ``found_slice``: the same per dataset slice (each plane alone), the median
      SNR and the fraction of its planes in which it is found.

    Pure noise gives an SNR of mean 0 and SD about 1.2 (the trend takes 5 of the null's ~30
    degrees of freedom) and finds a defect rarely (at most about once in null windows + 1: the
    null's maximum is over overlapping windows); a noise-free image with the defect finds it at
    every plane. NaN (found: NaN) where the defect has no
    pixel at this scale or its null arc holds fewer than ``SEARCH_MIN_NULL_WINDOWS`` windows.

    Returns one dict per crack and pit: defect, type, planes, null_windows (independent
    windows in the pooled null: its arc / window), snr_length, found_length, snr_slice,
    found_slice.
    """
    image, act, mu, defect_index = at_dataset_scale(image, activity, mu, defect_index, image_size, slice_planes)
    return search_scaled(image, act, mu, defect_index, defects, window_px)


def section_polar(activity: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(azimuth, radius) of every pixel of one plane about the centroid of the tube's section
    there (fluid and wall, holes filled, so a bubble or blockage does not move it); None where
    the plane cuts no section. The wall search's geometry, and its decoys' (bench/crack_search.py)."""
    from scipy import ndimage

    section = ndimage.binary_fill_holes((activity >= 0.5) | (mu >= WALL_MU_PER_MM))
    if not section.any():
        return None
    yy, xx = np.mgrid[0 : activity.shape[0], 0 : activity.shape[1]].astype(np.float64)
    cy, cx = yy[section].mean(), xx[section].mean()
    return np.arctan2(yy - cy, xx - cx), np.hypot(yy - cy, xx - cx)


def search_scaled(image, act, mu, defect_index, defects, window_px):
    """:func:`wall_search` on maps already at the dataset's scale (:func:`at_dataset_scale`)."""
    hot_ids = [k + 1 for k, d in enumerate(defects) if d["type"] in HOT]
    hot_px = np.isin(defect_index, hot_ids)
    intact = intact_wall(act, mu, defect_index)
    band = intact | hot_px
    centres = np.deg2rad(np.arange(0.0, 360.0, SEARCH_STEP_DEG))
    geometry = {}
    rows = []
    for k, d in enumerate(defects):
        if d["type"] not in HOT:
            continue
        mask = defect_index == k + 1
        planes = [int(p) for p in np.flatnonzero(mask.reshape(len(mask), -1).any(1))]
        row = {"defect": k, "type": d["type"], "planes": len(planes), "null_windows": math.nan}
        row.update(snr_length=math.nan, found_length=math.nan, snr_slice=math.nan, found_slice=math.nan)
        for p in planes:
            if p not in geometry:
                geometry[p] = section_polar(act[p], mu[p])
        planes = [p for p in planes if geometry[p] is not None]
        if not planes:
            rows.append(row)
            continue
        # The defect's azimuth in each plane, and along its length (the circular means).
        own = [np.exp(1j * geometry[p][0][mask[p]]).mean() for p in planes]
        thetas = np.angle(own)
        theta_all = float(np.angle(np.mean(own)))
        per_plane = []
        total, count, clear_all, radii = 0.0, 0.0, True, []
        for p, theta in zip(planes, thetas):
            phi, radius = geometry[p]
            # Null windows: centres clear of every hot defect's pixels here.
            others = hot_px[p]
            gap = angle_gap(phi[others][None, :], centres[:, None])
            clear = (radius[others][None, :] * gap).min(1) > SEARCH_CLEAR_WINDOWS * window_px
            sel = band[p]
            # Window sums at the null centres, the defect's azimuth here and along its length.
            sums, n = _window_sums(phi[sel], radius[sel], image[p][sel], np.r_[centres, theta, theta_all], window_px)
            r_band = float(np.median(radius[sel])) if sel.any() else 0.0
            per_plane.append(_score(sums[-2], n[-2], theta, sums[:-2], n[:-2], clear, centres, r_band, window_px))
            total, count, clear_all = total + sums, count + n, clear_all & clear
            radii.append(radius[sel])
        r_band = float(np.median(np.concatenate(radii)))
        snr, found, windows = _score(
            total[-1], count[-1], theta_all, total[:-2], count[:-2], clear_all, centres, r_band, window_px
        )
        row.update(null_windows=windows, snr_length=snr, found_length=found)
        snrs = [q[0] for q in per_plane if not math.isnan(q[0])]
        founds = [q[1] for q in per_plane if not math.isnan(q[1])]
        if snrs:
            row["snr_slice"] = float(np.median(snrs))
        if founds:
            row["found_slice"] = float(np.mean(founds))
        rows.append(row)
    return rows


def _trend_basis(theta: np.ndarray) -> np.ndarray:
    """Columns 1, cos k theta, sin k theta for k up to ``SEARCH_TREND_HARMONICS``."""
    cols = [np.ones_like(theta)]
    for k in range(1, SEARCH_TREND_HARMONICS + 1):
        cols += [np.cos(k * theta), np.sin(k * theta)]
    return np.stack(cols, axis=-1)


def _score(stat_sum, stat_n, theta, sums, n, clear, centres, r_band, window_px):
    """(SNR, found, independent null windows) of the window at ``theta`` (its sum and number of
    pixels) against the null windows (``clear`` of the windows at ``centres``), after the wall's
    slow trend round the section is fitted to the null and taken from both."""
    keep = clear & (n > 0)
    null = sums[keep] / n[keep]
    windows = float(keep.sum() * np.deg2rad(SEARCH_STEP_DEG) * r_band / window_px)
    if stat_n == 0 or not windows >= SEARCH_MIN_NULL_WINDOWS:  # also NaN: no band pixel
        return math.nan, math.nan, windows
    basis = _trend_basis(centres[keep])
    coef = np.linalg.lstsq(basis, null, rcond=None)[0]
    null = null - basis @ coef
    stat = stat_sum / stat_n - float(_trend_basis(np.array([theta]))[0] @ coef)
    sd = null.std(ddof=1)
    snr = float((stat - null.mean()) / sd) if sd > 0 else math.nan  # a noise-free image: found, no SNR
    return snr, float(stat > null.max()), windows


def score_scan(image: np.ndarray, truth: dict, dataset_cfg: dict) -> list[dict] | None:
    """:func:`score_defects`, wall search included, of a reconstruction against its truth npz at
    the scale of the ``dataset`` config section; None when the truth has no per-defect index (an
    older file)."""
    if "defect_index" not in truth:
        return None
    return score_defects(
        image,
        truth["activity"],
        truth["mu"],
        truth["defect_index"],
        defect_list(truth),
        dataset_cfg["image_size"],
        dataset_cfg["slice_planes"],
        search=True,
    )


def defect_list(truth: dict) -> list[dict]:
    """The defect list stored in a truth npz (``defect_list``, JSON), or [] for an older file."""
    if "defect_list" not in truth:
        return []
    return json.loads(str(truth["defect_list"]))


def to_json(rows: list[dict]) -> np.ndarray:
    """The rows as a 0-d string array for the recon npz (NaN written as null)."""
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    return np.array(json.dumps(clean))


def from_json(value) -> list[dict]:
    """Rows written by :func:`to_json` (null read back as NaN)."""
    return [{k: (math.nan if v is None else v) for k, v in r.items()} for r in json.loads(str(value))]
