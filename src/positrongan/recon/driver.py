"""Reconstruct one scan: ROOT coincidences (+ truth mu-map) -> image volume and its outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..geometry.grid import ReconGrid
from ..geometry.scanner import Scanner
from ..io import load_npz, save_npz
from .attenuation import attenuation_factors, randoms_estimate
from .lors import has_tree, read_coincidences, rebin
from .mlem import reconstruct
from .osem3d import reconstruct_scan_3d
from .projector import SystemModel
from .projector3d import fov_geometry
from .thinning import thin

log = logging.getLogger(__name__)

# Box (planes, views, bins) that smooths the delayed sinogram into a randoms estimate: randoms
# vary slowly (products of singles rates), and the box keeps the estimate's total.
RANDOMS_SMOOTHING = (3, 5, 3)


def postfilter(image: np.ndarray, voxel_mm: np.ndarray, fwhm_mm: float) -> np.ndarray:
    """3D Gaussian post-filter of FWHM ``fwhm_mm`` (0: the image unchanged)."""
    if fwhm_mm <= 0:
        return image
    from scipy import ndimage

    sigma = fwhm_mm / (2 * np.sqrt(2 * np.log(2))) / np.asarray(voxel_mm, dtype=np.float64)
    return ndimage.gaussian_filter(image, sigma, mode="constant").astype(np.float32)


def load_truth(path: str | Path, grid: ReconGrid) -> dict[str, np.ndarray]:
    """The truth maps of a scan, checked against the reconstruction grid (the file may come from
    a simulation run with another config).

    Raises:
        ArtifactError: naming the file, when it is unreadable or on another grid.
    """
    truth = load_npz(path, required=("activity", "mu"))
    for key in ("activity", "mu"):
        if truth[key].shape != grid.shape:
            raise ArtifactError(
                f"{path}: '{key}' has shape {truth[key].shape}, but the reconstruction grid is {grid.shape} "
                "(scanner.rings and reconstruction.grid must match the simulation's)"
            )
        if not np.isfinite(truth[key]).all():
            raise ArtifactError(f"{path}: '{key}' holds non-finite values")
    for key, mine in (("voxel_mm", grid.voxel_mm), ("origin_mm", grid.origin_mm)):
        if key in truth and not np.allclose(truth[key], mine, atol=1e-3):
            raise ArtifactError(
                f"{path}: '{key}' = {np.round(truth[key], 4).tolist()} but the reconstruction grid has "
                f"{np.round(mine, 4).tolist()} (z, y, x); was it made with another scanner or fov_mm?"
            )
    return truth


def reconstruct_scan(
    root: str | Path,
    model: SystemModel | None,
    scanner: Scanner,
    recon_cfg: dict,
    truth: dict[str, np.ndarray] | None,
    device,
    fraction: float = 1.0,
    thin_seed: int = 0,
) -> dict:
    """Coincidences -> MLEM/OSEM image, with the corrections the config asks for: rebinned 2D
    sinograms (``reconstruction.mode: 2d``) or the fully 3D sinogram of every oblique LOR
    (``3d``, ``recon/osem3d.py``).

    Params:
        root: ROOT file with a ``Coincidences`` tree (and optionally ``Delayed``).
        model: system model of this geometry and grid (2d mode; None in 3d mode).
        scanner: geometry.
        recon_cfg: the ``reconstruction`` section.
        truth: truth maps (``mu`` needed for attenuation correction), or None.
        device: torch device.
        fraction: keep each prompt and delayed event with this probability (a short-scan twin:
            ``recon/thinning.py``); 1 uses every event.
        thin_seed: seed of the thinning.
    Returns:
        The arrays of ``recon/{scan}.npz`` (docs/contract.md) as a dict.
    Raises:
        ArtifactError: unreadable input; ConfigError: attenuation correction without a mu-map.
    """
    thin_rng = np.random.default_rng(thin_seed)
    c1, c2 = thin(read_coincidences(root, scanner, "Coincidences"), fraction, thin_rng)
    delayed = None
    if has_tree(root, "Delayed"):
        delayed = thin(read_coincidences(root, scanner, "Delayed"), fraction, thin_rng)
    if recon_cfg["attenuation_correction"] and truth is None:
        raise ConfigError(
            "config key 'reconstruction.attenuation_correction' is true but no truth mu-map was given (--truth)"
        )
    if recon_cfg["randoms_correction"] and delayed is None:
        log.warning("%s has no Delayed tree: no randoms correction", root)
    three_d = recon_cfg["mode"] == "3d"
    # The rebinned sinogram is an output in both modes (preview, dataset counts); in 3d mode it
    # holds every ring difference and exactly the LORs of the 3D sinogram.
    if three_d:
        geom, maxrd = fov_geometry(scanner, recon_cfg["fov_mm"], recon_cfg["doi_mm"]), None
    else:
        geom, maxrd = model.geometry, recon_cfg["max_ring_difference"]
    sino, stats = rebin(c1, c2, scanner, geom, maxrd)
    log.info("prompts: %s", stats)
    if stats["kept"] == 0:
        if fraction == 1:
            raise ArtifactError(f"{root}: none of its {stats['input']} coincidences falls in the field of view")
        # A short-scan twin of a sparse scan may keep no event: its honest image is empty.
        log.warning("%s thinned to %g keeps no prompt in the field of view: the image is empty", root, fraction)
    delayed_sino = None
    n_delayed = 0
    if delayed is not None:
        delayed_sino, dstats = rebin(*delayed, scanner, geom, maxrd)
        n_delayed = dstats["kept"]
        log.info("delayed: %s", dstats)
    mu = truth["mu"].astype(np.float32) if recon_cfg["attenuation_correction"] else None
    if three_d:
        result, info = reconstruct_scan_3d(c1, c2, delayed, scanner, recon_cfg, mu, device)
        subsets, corrected = info["subsets"], (info["attenuation"], info["randoms"])
    else:
        randoms = None
        if recon_cfg["randoms_correction"] and delayed_sino is not None:
            randoms = randoms_estimate(delayed_sino, RANDOMS_SMOOTHING)
        atten = None
        if mu is not None:
            atten = attenuation_factors(model, mu)
            log.info("attenuation factors: min %.3f, mean %.3f", atten.min(), atten.mean())
        # subsets <= views is a config rule (config.py), checked before any job runs.
        subsets = recon_cfg["subsets"] if recon_cfg["algorithm"] == "osem" else 1
        result = reconstruct(
            model, sino, recon_cfg["iterations"], subsets, attenuation=atten, randoms=randoms, device=device
        )
        corrected = (atten is not None, randoms is not None)
    grid = ReconGrid.from_config(scanner, recon_cfg)
    voxel, origin = grid.voxel_mm, grid.origin_mm
    image = postfilter(result.image, voxel, recon_cfg["postfilter_fwhm_mm"])
    out = {
        "image": image,
        "image_unfiltered": result.image,
        "postfilter_fwhm_mm": np.float64(recon_cfg["postfilter_fwhm_mm"]),
        "voxel_mm": voxel,
        "origin_mm": origin,
        "loglik": result.loglik,
        "algorithm": np.array(recon_cfg["algorithm"]),
        "mode": np.array(recon_cfg["mode"]),
        "iterations": np.int64(recon_cfg["iterations"]),
        "subsets": np.int64(subsets),
        "prompts": np.int64(stats["kept"]),
        "delayed": np.int64(n_delayed),
        "prompts_read": np.int64(stats["input"]),
        "prompts_used_fraction": np.float64(stats["kept"] / stats["input"] if stats["input"] else 0.0),
        "sinogram": sino,
        "attenuation_corrected": np.bool_(corrected[0]),
        "randoms_corrected": np.bool_(corrected[1]),
        "seconds": np.float64(result.seconds),
        "rebin_stats": stats,
        "count_fraction": np.float64(fraction),
    }
    if delayed_sino is not None:
        out["delayed_sinogram"] = delayed_sino
    return out


def save_recon(path: str | Path, arrays: dict) -> None:
    """Write ``recon/{scan}.npz`` atomically."""
    save_npz(path, **arrays)
