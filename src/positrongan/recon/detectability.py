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
)


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
) -> list[dict]:
    """CRC and CNR of every defect (see the module docstring for the regions).

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
    Returns:
        One dict per defect, keys ``COLUMNS`` less ``scan``; CRC and CNR are NaN when the
        defect or its background has no pixel at this scale.
    """
    from scipy import ndimage

    shapes = {a.shape for a in (image, activity, mu, defect_index)}
    if len(shapes) != 1:
        raise ValueError(f"image, activity, mu and defect_index differ in shape: {sorted(shapes)}")
    size = image.shape[-1] if image_size is None else image_size
    image, activity, mu = (dataset_scale(v, size, slice_planes) for v in (image, activity, mu))
    defect_index = resize_volume(defect_index, size, labels=True)
    image = image.astype(np.float64)
    fluid_level = float(activity.max()) or 1.0
    act = activity / fluid_level
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
        wall = near & (act <= 1.0 - PURE) & (mu >= WALL_MU_PER_MM)
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
    return rows


def score_scan(image: np.ndarray, truth: dict, dataset_cfg: dict) -> list[dict] | None:
    """:func:`score_defects` of a reconstruction against its truth npz at the scale of the
    ``dataset`` config section; None when the truth has no per-defect index (an older file)."""
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
