"""``positrongan reconstruct``: one scan's coincidences -> MLEM/OSEM image, preview PNG, DICOM series."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import derived_seed
from ..errors import ConfigError
from ..geometry.scanner import Scanner
from ..recon.projector import SystemModel, build_system_model, fingerprint
from ..recon.scan import load_truth, reconstruct_scan, save_recon
from ..runtime import torch_device

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scan", required=True, help="scan id (e.g. scan_000), used in titles and DICOM")
    parser.add_argument("--root", required=True, metavar="ROOT", help="coincidences (results/sim/{scan}.root)")
    parser.add_argument(
        "--truth", metavar="NPZ", help="truth maps (results/truth/{scan}.npz): mu-map for attenuation correction"
    )
    parser.add_argument("--system-model", metavar="NPZ", help="cached system model (built on the fly when not given)")
    parser.add_argument("--out", required=True, metavar="NPZ", help="reconstruction (results/recon/{scan}.npz)")
    parser.add_argument("--png", metavar="PNG", help="preview figure (results/recon/{scan}.png)")
    parser.add_argument("--dicom", metavar="DIR", help="DICOM series folder (results/recon/{scan}_dicom)")


def run(args: argparse.Namespace, cfg: dict) -> None:
    import numpy as np

    rcfg = cfg["reconstruction"]
    scanner = Scanner.from_config(cfg["scanner"])
    if args.dicom and not rcfg["dicom"]:
        raise ConfigError("--dicom was given but config key 'reconstruction.dicom' is false")
    fp = fingerprint(cfg["scanner"], rcfg)
    if args.system_model:
        model = SystemModel.load(args.system_model, expect_fingerprint=fp)
    else:
        model = build_system_model(scanner, rcfg, cfg["scanner"])
    truth = load_truth(args.truth, scanner, rcfg) if args.truth else None
    try:
        device = torch_device(cfg["device"])
    except RuntimeError as exc:  # cuda asked for on a machine without one
        raise ConfigError(str(exc)) from None
    out = reconstruct_scan(args.root, model, scanner, rcfg, truth, device)
    out["scan"] = np.array(args.scan)
    out["device"] = np.array(str(device))
    save_recon(args.out, out)
    log.info("wrote %s", args.out)
    label = f"{rcfg['algorithm'].upper()} {int(out['iterations'])} it x {int(out['subsets'])} subsets"
    if rcfg["postfilter_fwhm_mm"] > 0:
        label += f", {rcfg['postfilter_fwhm_mm']:g} mm filter"
    if args.png:
        from ..recon.preview import write_preview

        corr = ", ".join(c for c, on in (("AC", out["attenuation_corrected"]), ("RC", out["randoms_corrected"])) if on)
        write_preview(
            args.png,
            out["image"],
            out["voxel_mm"],
            out["origin_mm"],
            out["sinogram"],
            out["loglik"],
            f"{args.scan}: {label}{' + ' + corr if corr else ''}; {int(out['prompts'])} prompts, "
            f"{int(out['delayed'])} delayed",
            truth=None if truth is None else truth["activity"],
            defects=None if truth is None else truth.get("defects"),
        )
        log.info("wrote %s", args.png)
    if args.dicom:
        from ..recon.dicom import write_series

        files = write_series(
            out["image"],
            out["voxel_mm"],
            out["origin_mm"],
            args.dicom,
            args.scan,
            label,
            uid_seed=derived_seed(cfg, "dicom", args.scan),
        )
        log.info("wrote %d DICOM files to %s", len(files), Path(args.dicom))
