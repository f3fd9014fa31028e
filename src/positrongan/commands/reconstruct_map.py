"""``positrongan reconstruct-map``: one short-scan twin reconstructed by MAP-OSEM with the
relative-difference prior at every ``enhancement.map_betas`` -> the candidates file of the
enhancement method ``map_rdp`` (``recon/snapshots.py``; results/recon/map/{scan}_f{f}.npz)."""

from __future__ import annotations

import argparse
import logging
import time

from ..config import derived_seed
from ..errors import ConfigError
from ..geometry.grid import ReconGrid
from ..geometry.scanner import Scanner
from ..recon.thinning import fraction_tag
from ..runtime import torch_device

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scan", required=True, help="scan id (e.g. scan_000)")
    parser.add_argument("--root", required=True, metavar="ROOT", help="coincidences (results/sim/{scan}.root)")
    parser.add_argument("--truth", metavar="NPZ", help="truth maps (results/truth/{scan}.npz): mu-map, planes kept")
    parser.add_argument("--normalisation", metavar="NPZ", help="results/recon/normalisation.npz when configured")
    parser.add_argument("--fraction", type=float, required=True, help="count fraction of the twin, in (0, 1]")
    parser.add_argument("--out", required=True, metavar="NPZ", help="candidates file to write")


def run(args: argparse.Namespace, cfg: dict) -> None:
    import numpy as np

    from ..recon.driver import load_truth, reconstruct_scan
    from ..recon.snapshots import SnapshotRecorder, tube_planes
    from .reconstruct import save_snapshots

    rcfg, ecfg, ds = cfg["reconstruction"], cfg["enhancement"], cfg["dataset"]
    if rcfg["mode"] != "3d":
        raise ConfigError("map_rdp needs config key 'reconstruction.mode' = 3d (the prior is in the 3D OSEM)")
    if not 0 < args.fraction <= 1:
        raise ConfigError(f"--fraction {args.fraction}: must be in (0, 1]")
    scanner = Scanner.from_config(cfg["scanner"])
    grid = ReconGrid.from_config(scanner, rcfg)
    truth = load_truth(args.truth, grid) if args.truth else None
    try:
        device = torch_device(cfg["device"])
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None
    # MAP images are not post-filtered: the prior is the regulariser.
    recorder = SnapshotRecorder(
        grid.voxel_mm,
        tube_planes(None if truth is None else truth["activity"], grid.shape[0]),
        ds["image_size"],
        ds["slice_planes"],
        [0.0],
        iterations=[rcfg["iterations"]],
    )
    seconds, out = [], None
    for beta in ecfg["map_betas"]:
        recorder.beta = float(beta)
        t0 = time.perf_counter()
        out = reconstruct_scan(
            args.root,
            None,
            scanner,
            {**rcfg, "rdp_beta": float(beta)},
            truth,
            device,
            fraction=args.fraction,
            # The same thinning as the low-count twin of this scan and fraction: the same events.
            thin_seed=derived_seed(cfg, "thin", args.scan, fraction_tag(args.fraction)),
            digitizer=cfg["digitizer"],
            acquisition_s=cfg["phantom"]["acquisition_s"],
            normalisation=args.normalisation if rcfg["normalisation"] else None,
            callback=recorder,
        )
        seconds.append(float(out["seconds"]))
        log.info(
            "beta %g (x %.4g): MAP objective %s, %.1f s reconstruction (%.1f s in all)",
            beta,
            float(out["rdp_beta_abs"]),
            np.round(out["objective"], 1).tolist(),
            seconds[-1],
            time.perf_counter() - t0,
        )
    save_snapshots(
        args.out,
        recorder,
        {**out, "postfilter_fwhm_mm": 0.0},
        args.scan,
        args.fraction,
        seconds_per_beta=np.array(seconds),
        rdp_gamma=np.float64(rcfg["rdp_gamma"]),
    )
