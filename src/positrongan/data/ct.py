"""The CT corpus behind the VAE prior: DeepLesion (PNG + DL_info.csv) or DICOM series.

Both loaders give HU slices; :func:`read_corpus` then windows them (``ct.hu_window`` mapped
to [-1, 1]), pads them square with air and resizes them to the model resolution by area
averaging. The synthetic corpus (``data/synthetic_ct.py``) is written in the DeepLesion
layout, so it goes through the same loader as the real data.

DeepLesion layout: ``Images_png/<patient>_<study>_<series>/<slice>.png``, 16-bit, with
HU = value - 32768; ``DL_info.csv`` has one row per annotated lesion, whose ``File_name``
(``<series>_<slice>.png``) names the series and its key slice. Every PNG of a listed series
is used (``ct.key_slices_only`` keeps only the key slices); series metadata (image size,
noisy flag, spacing, split) comes from the CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

HU_OFFSET = 32768


@dataclass
class CTSlices:
    """Slices in [-1, 1] with their names (paths relative to the corpus root)."""

    images: np.ndarray  # (N, S, S) float32
    names: list[str]
    skipped: dict = field(default_factory=dict)  # reason -> count


# --------------------------------------------------------------------------- DeepLesion


def read_deeplesion_png(path: str | Path) -> np.ndarray:
    """One DeepLesion slice in HU.

    Params:
        path: a 16-bit PNG with HU + 32768.
    Returns:
        (H, W) int32 HU.
    Raises:
        ArtifactError: naming the file if it is unreadable or not 16-bit greyscale.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable PNG ({exc})") from None
    if arr.ndim != 2 or arr.dtype not in (np.uint16, np.int32, np.int16):
        raise ArtifactError(f"{path}: expected a 16-bit greyscale PNG (DeepLesion), got {arr.dtype} {arr.shape}")
    return arr.astype(np.int32) - HU_OFFSET


def _pair(text) -> tuple[float, ...]:
    return tuple(float(v) for v in str(text).split(","))


def read_dl_info(root: str | Path):
    """``DL_info.csv`` as a pandas DataFrame, with ``series`` and ``slice`` columns parsed
    from ``File_name`` and ``width``/``height``/``spacing_mm`` from the text columns.

    Raises:
        ArtifactError: naming the file when it is missing, unreadable or lacks a column.
    """
    import pandas as pd

    path = Path(root) / "DL_info.csv"
    if not path.exists():
        raise ArtifactError(f"{path}: file not found (a DeepLesion corpus needs DL_info.csv next to Images_png/)")
    try:
        df = pd.read_csv(path, dtype={"File_name": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ArtifactError(f"{path}: not a readable CSV ({exc})") from None
    need = ["File_name", "Image_size", "Possibly_noisy", "Spacing_mm_px_"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {missing}")
    stem = df["File_name"].str.replace(r"\.png$", "", regex=True)
    parts = stem.str.rsplit("_", n=1)
    if parts.str.len().min() != 2:
        raise ArtifactError(f"{path}: File_name must look like <patient>_<study>_<series>_<slice>.png")
    df["series"] = parts.str[0]
    df["slice"] = parts.str[1].astype(int)
    size = df["Image_size"].map(_pair)
    df["height"] = size.str[0].astype(int)
    df["width"] = size.str[1].astype(int)
    df["spacing_mm"] = df["Spacing_mm_px_"].map(lambda t: _pair(t)[0])
    return df


def deeplesion_files(ct_cfg: Mapping, root: str | Path) -> tuple[list[Path], dict]:
    """The PNG files of a DeepLesion corpus that pass the config's filters, in series order.

    Params:
        ct_cfg: the ``ct`` config section (``min_size``, ``exclude_noisy``, ``key_slices_only``).
        root: corpus folder with ``Images_png/`` and ``DL_info.csv``.
    Returns:
        (files, skipped counts by reason).
    """
    root = Path(root)
    df = read_dl_info(root)
    images = root / "Images_png"
    if not images.is_dir():
        raise ArtifactError(f"{images}: folder not found (DeepLesion layout: Images_png/<series>/<slice>.png)")
    per_series = df.groupby("series").agg(
        height=("height", "min"), width=("width", "min"), noisy=("Possibly_noisy", "max")
    )
    skipped = {"small": 0, "noisy": 0, "not_in_csv": 0}
    files: list[Path] = []
    key_slices = df.groupby("series")["slice"].apply(set).to_dict()
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        pngs = sorted(folder.glob("*.png"), key=lambda p: (len(p.stem), p.stem))
        if folder.name not in per_series.index:
            skipped["not_in_csv"] += len(pngs)
            continue
        meta = per_series.loc[folder.name]
        if min(meta["height"], meta["width"]) < ct_cfg["min_size"]:
            skipped["small"] += len(pngs)
            continue
        if ct_cfg["exclude_noisy"] and int(meta["noisy"]) == 1:
            skipped["noisy"] += len(pngs)
            continue
        if ct_cfg["key_slices_only"]:
            pngs = [p for p in pngs if p.stem.isdigit() and int(p.stem) in key_slices[folder.name]]
        files.extend(pngs)
    return files, {k: v for k, v in skipped.items() if v}


# --------------------------------------------------------------------------- DICOM


def _slice_position(ds) -> float:
    # Position along the slice normal (row x column direction cosines); this orders slices
    # correctly for oblique stacks too. Fall back to the instance number.
    try:
        orient = np.asarray(ds.ImageOrientationPatient, dtype=float)
        pos = np.asarray(ds.ImagePositionPatient, dtype=float)
        return float(np.dot(np.cross(orient[:3], orient[3:]), pos))
    except (AttributeError, ValueError, TypeError):
        return float(getattr(ds, "InstanceNumber", 0) or 0)


def dicom_index(root: str | Path) -> tuple[list[tuple[str, float, Path]], dict]:
    """Scan a folder tree for CT DICOM slices (headers only).

    Params:
        root: folder searched recursively; every regular file is tried.
    Returns:
        ([(series uid, position, path)] sorted by series then position, skipped counts by reason:
        ``unreadable`` (not DICOM, corrupt), ``not_ct`` (another modality), ``no_pixels``).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"{root}: folder not found (ct.path for ct.source = dicom)")
    entries = []
    skipped = {"unreadable": 0, "not_ct": 0, "no_pixels": 0}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, AttributeError, TypeError):
            skipped["unreadable"] += 1
            continue
        if getattr(ds, "Modality", None) != "CT":
            skipped["not_ct"] += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped["no_pixels"] += 1
            continue
        series = str(getattr(ds, "SeriesInstanceUID", "") or path.parent.relative_to(root))
        entries.append((series, _slice_position(ds), path))
    entries.sort(key=lambda e: (e[0], e[1], str(e[2])))
    return entries, {k: v for k, v in skipped.items() if v}


def read_dicom_hu(path: str | Path) -> np.ndarray:
    """One CT slice in HU (stored value x RescaleSlope + RescaleIntercept).

    Raises:
        ArtifactError: naming the file when its pixel data cannot be decoded.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - compressed transfer syntaxes without a handler, truncated data, ...
        raise ArtifactError(f"{path}: cannot decode DICOM pixel data ({exc})") from None
    if raw.ndim != 2:
        raise ArtifactError(f"{path}: expected a single 2D slice, got pixel array {raw.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return raw.astype(np.float32) * slope + intercept


# --------------------------------------------------------------------------- common


def window(hu: np.ndarray, hu_window) -> np.ndarray:
    """Clip HU to [low, high] and map linearly to [-1, 1] (float32)."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    out = (np.clip(hu, lo, hi).astype(np.float32) - lo) / (hi - lo)
    return out * 2.0 - 1.0


def to_square(img: np.ndarray, size: int, fill: float = -1.0) -> np.ndarray:
    """Pad a windowed slice to a square with ``fill`` (air) and area-resize to ``size``."""
    import torch
    import torch.nn.functional as F

    h, w = img.shape
    side = max(h, w)
    if h != w:
        sq = np.full((side, side), fill, dtype=np.float32)
        sq[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = img
        img = sq
    if side == size:
        return img.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    # Area averaging is exact box filtering for integer factors (512 -> 64) and anti-aliases
    # otherwise; bilinear would alias fine CT texture. Upsampling (rare) uses bilinear.
    mode = "area" if side > size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(t, size=(size, size), mode=mode, **kwargs)[0, 0].numpy()


def _subsample(items: list, limit: int | None) -> list:
    # Evenly spaced, so a limit still spans every series instead of taking the first few.
    if limit is None or len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def corpus_root(ct_cfg: Mapping, root: str | Path | None) -> Path:
    """Where the corpus is: ``root`` when given, else ``ct.path``."""
    if root is not None:
        return Path(root)
    if not ct_cfg.get("path"):
        raise ConfigError("config key 'ct.path' is not set and no corpus folder was given")
    return Path(ct_cfg["path"])


def read_corpus(ct_cfg: Mapping, root: str | Path | None, size: int) -> CTSlices:
    """Load, window and resize every usable CT slice of the configured corpus.

    Params:
        ct_cfg: the ``ct`` config section (``source``, ``hu_window``, filters, ``max_slices``).
        root: corpus folder (``results/ct`` for the synthetic corpus, else ``ct.path``);
            None means ``ct.path``.
        size: model resolution.
    Returns:
        CTSlices with images (N, size, size) float32 in [-1, 1] and their names.
    Raises:
        ArtifactError: naming the folder when no usable slice is found (and why), or a file
            that cannot be read (DeepLesion PNGs; unreadable DICOM files are skipped and counted).
    """
    from ..runtime import progress

    root = corpus_root(ct_cfg, root)
    if not root.exists():
        raise ArtifactError(f"{root}: CT corpus folder not found")
    hu_window = ct_cfg["hu_window"]
    images: list[np.ndarray] = []
    names: list[str] = []
    if ct_cfg["source"] == "dicom":
        entries, skipped = dicom_index(root)
        entries = _subsample(entries, ct_cfg["max_slices"])
        for _series, _pos, path in progress(entries, desc="DICOM CT", unit="slice"):
            try:
                hu = read_dicom_hu(path)
            except ArtifactError as exc:
                log.warning("skipped %s", exc)
                skipped["undecodable"] = skipped.get("undecodable", 0) + 1
                continue
            images.append(to_square(window(hu, hu_window), size))
            names.append(str(path.relative_to(root)))
    else:
        files, skipped = deeplesion_files(ct_cfg, root)
        files = _subsample(files, ct_cfg["max_slices"])
        for path in progress(files, desc="DeepLesion CT", unit="slice"):
            images.append(to_square(window(read_deeplesion_png(path), hu_window), size))
            names.append(f"{path.parent.name}/{path.name}")
    why = ", ".join(f"{v} {k}" for k, v in sorted(skipped.items())) or "none"
    if not images:
        raise ArtifactError(f"{root}: no usable CT slice found for ct.source = {ct_cfg['source']} (skipped: {why})")
    log.info("CT corpus %s: %d slices at %d px (skipped: %s)", root, len(images), size, why)
    return CTSlices(np.stack(images).astype(np.float32), names, skipped)


def load_corpus(ct_cfg: Mapping, root: str | Path | None, size: int) -> np.ndarray:
    """The CT training images: (N, size, size) float32 in [-1, 1]. See :func:`read_corpus`."""
    return read_corpus(ct_cfg, root, size).images
