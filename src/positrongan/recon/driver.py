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
from .normalisation import factors_2d, load_normalisation
from .osem3d import reconstruct_scan_3d
from .projector import SystemModel
from .projector3d import fov_geometry
from .randoms import RandomsSpec, build_spec, pair_sinogram, rebinned_sinogram, singles_counts
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
    digitizer: dict | None = None,
    acquisition_s: float | None = None,
    callback=None,
    extra_iterations: int = 0,
    normalisation: str | Path | None = None,
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
        digitizer: the ``digitizer`` section (window and multiples policy of the randoms model).
        acquisition_s: the scan's acquisition time (``phantom.acquisition_s``), for singles rates.
        callback, extra_iterations: per-iteration snapshots of the unfiltered image (3d mode,
            ``osem3d.reconstruct_3d``); the outputs stay those of ``reconstruction.iterations``.
        normalisation: ``recon/normalisation.npz`` to apply (``recon/normalisation.py``), or None.
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
    spec = None
    if recon_cfg["randoms_correction"]:
        spec = randoms_spec(root, scanner, (c1, c2), delayed, recon_cfg, digitizer, acquisition_s, fraction)
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
    norm = None
    if recon_cfg["normalisation"]:
        if normalisation is None:
            raise ConfigError(
                "config key 'reconstruction.normalisation' is true but no normalisation file was given "
                "(--normalisation results/recon/normalisation.npz, from `positrongan normalisation`)"
            )
        norm = load_normalisation(normalisation, scanner, geom)
    if three_d:
        result, info = reconstruct_scan_3d(
            c1,
            c2,
            delayed,
            scanner,
            recon_cfg,
            mu,
            device,
            randoms=spec,
            callback=callback,
            extra_iterations=extra_iterations,
            normalisation=norm,
        )
        subsets, corrected = info["subsets"], (info["attenuation"], info["randoms"])
        scatter_done = info["scatter"]
    else:
        if callback is not None or extra_iterations or recon_cfg.get("rdp_beta", 0.0) > 0:
            raise ConfigError(
                "per-iteration snapshots (enhancement method osem_early) and the relative-difference prior "
                "(reconstruction.rdp_beta > 0) need config key 'reconstruction.mode' = 3d"
            )
        randoms = None if spec is None else randoms_2d(spec, scanner, geom, maxrd)
        atten = None
        if mu is not None:
            atten = attenuation_factors(model, mu)
            log.info("attenuation factors: min %.3f, mean %.3f", atten.min(), atten.mean())
        # subsets <= views is a config rule (config.py), checked before any job runs.
        subsets = recon_cfg["subsets"] if recon_cfg["algorithm"] == "osem" else 1
        norm_2d = None if norm is None else factors_2d(norm, scanner, geom, maxrd)
        result = reconstruct(
            model,
            sino,
            recon_cfg["iterations"],
            subsets,
            attenuation=atten,
            randoms=randoms,
            device=device,
            normalisation=norm_2d,
        )
        corrected = (atten is not None, randoms is not None)
        scatter_done = False
        if recon_cfg["scatter_correction"]:
            log.warning(
                "reconstruction.mode is 2d: no scatter model there (3d only); the image is not scatter corrected"
            )
    grid = ReconGrid.from_config(scanner, recon_cfg)
    voxel, origin = grid.voxel_mm, grid.origin_mm
    image = postfilter(result.image, voxel, recon_cfg["postfilter_fwhm_mm"])
    out = {
        "image": image,
        "image_unfiltered": result.image,
        "postfilter_fwhm_mm": np.float64(recon_cfg["postfilter_fwhm_mm"]),
        # The resolution model's FWHM (3d only; 0: none).
        "psf_fwhm_mm": np.float64(recon_cfg.get("psf_fwhm_mm", 0.0) if three_d else 0.0),
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
    if recon_cfg.get("rdp_beta", 0.0) > 0:  # MAP-OSEM: its prior and objective (L - beta U) per iteration
        for key in ("rdp_beta", "rdp_gamma", "rdp_beta_abs", "objective"):
            out[key] = np.asarray(result.info[key], dtype=np.float64)
    out["randoms_method"] = np.array(spec.method if spec is not None and corrected[1] else "none")
    if spec is not None:
        out.update({k: v for k, v in spec.metadata().items() if k != "randoms_method"})
    flags = (("NORM", norm is not None), ("ATTN", corrected[0]), ("SCAT", scatter_done), ("RAN", corrected[1]))
    out["corrections"] = np.array([c for c, on in flags if on], dtype=str)
    out["scatter_corrected"] = np.bool_(scatter_done)
    out["normalised"] = np.bool_(norm is not None)
    if norm is not None:
        # What was applied, so the image can be traced to its factors.
        out["normalisation_trues"] = np.int64(norm["trues"])
        out["normalisation_seed"] = np.int64(norm["seed"])
        out["normalisation_radial_range"] = np.array([norm["radial"].min(), norm["radial"].max()])
    if scatter_done:
        last = result.info["scatter"][-1]
        out["scatter_fraction"] = np.float64(last["fraction"])
        out["scatter_beta_mm"] = np.float64(last["beta_mm"])
        out["scatter_seconds"] = np.float64(sum(i["seconds"] for i in result.info["scatter"]))
    return out


def randoms_spec(
    root,
    scanner: Scanner,
    prompts: tuple[np.ndarray, np.ndarray],
    delayed: tuple[np.ndarray, np.ndarray] | None,
    recon_cfg: dict,
    digitizer: dict | None,
    acquisition_s: float | None,
    fraction: float,
) -> RandomsSpec | None:
    """The randoms estimate ``reconstruction.randoms`` asks for (``recon/randoms.py``), or None
    when the delayed method has no Delayed tree to read (logged).

    Raises:
        ArtifactError: naming the file and the config key, when the singles counts the estimate
            needs are not in it; ConfigError: without the digitizer section or acquisition time.
    """
    method = recon_cfg["randoms"]
    if method == "delayed" and delayed is None:
        log.warning("%s has no Delayed tree: no randoms correction", root)
        return None
    if digitizer is None or acquisition_s is None:
        raise ConfigError(
            "config key 'reconstruction.randoms_correction' needs the digitizer section and phantom.acquisition_s"
        )
    policy = digitizer["multiples_policy"]
    singles = None
    if method == "singles" or policy != "take_all_good":
        singles, source = singles_counts(root, scanner)
        if singles is None:
            why = (
                "the singles-rate estimate"
                if method == "singles"
                else f"the delayed window's correction for digitizer.multiples_policy = {policy}"
            )
            raise ArtifactError(
                f"{root}: has neither a SinglesRates nor a Singles tree, which {why} needs "
                "(config key 'reconstruction.randoms'; re-simulate the scan, or set "
                "reconstruction.randoms_correction: false)"
            )
        log.info("singles per crystal from the %s tree: %d in all", source, int(singles.sum()))
    dt = None
    if method == "singles" and policy == "kill_all":
        dt = prompt_time_differences(root)
    spec = build_spec(
        method,
        policy,
        prompts,
        delayed,
        None if singles is None else singles * fraction,
        digitizer["coincidence_window_ns"],
        acquisition_s * fraction,
        scanner.n_crystals,
        dt,
    )
    if spec.model is not None:
        log.info(
            "randoms model (%s, %s): q = %.4f (singles-weighted mean), exp(-lambda tau) = %.4f",
            method,
            policy,
            float(np.average(spec.model.q, weights=np.maximum(singles, 1e-30))),
            spec.model.survival,
        )
    return spec


def prompt_time_differences(root) -> np.ndarray | None:
    """|GlobalTime2 - GlobalTime1| of the prompts in ns, or None when the tree lacks the times
    (a GATE file from another digitizer): the pair spread of the kill_all singles model."""
    from ..rootfile import read_tree, tree_branches

    if not {"GlobalTime1", "GlobalTime2"} <= tree_branches(root, "Coincidences"):
        log.info("%s: no GlobalTime1/2 in Coincidences: pair spread taken as 0", root)
        return None
    t = read_tree(root, "Coincidences", ["GlobalTime1", "GlobalTime2"])
    return np.abs(t["GlobalTime2"].astype(np.float64) - t["GlobalTime1"].astype(np.float64))


def randoms_2d(spec: RandomsSpec, scanner: Scanner, geom, max_ring_difference: int | None) -> np.ndarray:
    """The randoms estimate as a rebinned (planes, views, bins) sinogram."""
    nv, nb = geom.shape
    if spec.method == "singles":
        a, b = geom.cell_crystals()
        pairs = pair_sinogram(*spec.factors, scanner, a.ravel(), b.ravel())
        return (
            rebinned_sinogram(pairs, scanner, scanner.n_planes, max_ring_difference)
            .reshape(scanner.n_planes, nv, nb)
            .astype(np.float32)
        )
    dsino, _ = rebin(*spec.delayed, scanner, geom, max_ring_difference, weights=spec.weights)
    return randoms_estimate(dsino, RANDOMS_SMOOTHING)


def save_recon(path: str | Path, arrays: dict) -> None:
    """Write ``recon/{scan}.npz`` atomically."""
    save_npz(path, **arrays)
