"""``positrongan reconstruct``: one scan's coincidences -> MLEM/OSEM image, preview PNG, DICOM series."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import derived_seed
from ..errors import ConfigError
from ..geometry.grid import ReconGrid
from ..geometry.scanner import Scanner
from ..recon.preview import method_label, write_scan_preview
from ..recon.projector import SystemModel, build_system_model, fingerprint
from ..recon.detectability import score_scan
from ..recon.detectability import to_json as detectability_json
from ..recon.driver import load_truth, reconstruct_scan, save_recon
from ..recon.thinning import fraction_tag
from ..runtime import torch_device

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scan", required=True, help="scan id (e.g. scan_000), used in titles and DICOM")
    parser.add_argument("--root", required=True, metavar="ROOT", help="coincidences (results/sim/{scan}.root)")
    parser.add_argument(
        "--truth", metavar="NPZ", help="truth maps (results/truth/{scan}.npz): mu-map for attenuation correction"
    )
    parser.add_argument("--system-model", metavar="NPZ", help="cached system model (built on the fly when not given)")
    parser.add_argument(
        "--normalisation",
        metavar="NPZ",
        help="normalisation factors (results/recon/normalisation.npz), applied when reconstruction.normalisation is true",
    )
    parser.add_argument("--out", required=True, metavar="NPZ", help="reconstruction (results/recon/{scan}.npz)")
    parser.add_argument("--png", metavar="PNG", help="preview figure (results/recon/{scan}.png)")
    parser.add_argument("--dicom", metavar="DIR", help="DICOM series folder (results/recon/{scan}_dicom)")
    parser.add_argument(
        "--snapshots",
        metavar="NPZ",
        help="also keep the image after every iteration up to enhancement.osem_max_iterations, post-filtered "
        "at each enhancement.osem_fwhm_mm, at the dataset's slice scale (recon/lowcount/{scan}_f{f}_iterations.npz: "
        "the candidates of the enhancement method osem_early); the --out image is unchanged",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="keep each prompt and delayed event with this probability: a short-scan twin of a scan "
        "this fraction as long (default 1: every event)",
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    import numpy as np

    rcfg = cfg["reconstruction"]
    scanner = Scanner.from_config(cfg["scanner"])
    if args.dicom and not rcfg["dicom"]:
        raise ConfigError("--dicom was given but config key 'reconstruction.dicom' is false")
    model = None  # 3d mode projects on the fly and needs no system model
    if rcfg["mode"] == "2d":
        fp = fingerprint(cfg["scanner"], rcfg)
        if args.system_model:
            model = SystemModel.load(args.system_model, expect_fingerprint=fp)
        else:
            model = build_system_model(scanner, rcfg, cfg["scanner"])
    elif args.system_model:
        log.info("reconstruction.mode is 3d: --system-model %s is not used", args.system_model)
    if args.normalisation and not rcfg["normalisation"]:
        log.info("reconstruction.normalisation is false: --normalisation %s is not applied", args.normalisation)
    truth = load_truth(args.truth, ReconGrid.from_config(scanner, rcfg)) if args.truth else None
    try:
        device = torch_device(cfg["device"])
    except RuntimeError as exc:  # cuda asked for on a machine without one
        raise ConfigError(str(exc)) from None
    if not 0 < args.fraction <= 1:
        raise ConfigError(f"--fraction {args.fraction}: must be in (0, 1]")
    recorder = extra = None
    if args.snapshots:
        recorder, extra = snapshot_recorder(cfg, scanner, truth)
    out = reconstruct_scan(
        args.root,
        model,
        scanner,
        rcfg,
        truth,
        device,
        fraction=args.fraction,
        thin_seed=derived_seed(cfg, "thin", args.scan, fraction_tag(args.fraction)),
        digitizer=cfg["digitizer"],
        acquisition_s=cfg["phantom"]["acquisition_s"],
        normalisation=args.normalisation if rcfg["normalisation"] else None,
        callback=recorder,
        extra_iterations=extra or 0,
    )
    if recorder is not None:
        save_snapshots(args.snapshots, recorder, out, args.scan, args.fraction)
    out["scan"] = np.array(args.scan)
    out["device"] = np.array(str(device))
    out.update(calibration(out, cfg["phantom"]["activity_bq"]))
    rows = None if truth is None else score_scan(out["image"], truth, cfg["dataset"])
    if rows is not None:
        out["detectability"] = detectability_json(rows)
        for row in rows:
            log.info(
                "defect %d (%s, %s %.2f mm): CRC %.3f, CNR %.2f",
                row["defect"],
                row["type"],
                row["size_name"],
                row["size_mm"],
                row["crc"],
                row["cnr"],
            )
    save_recon(args.out, out)
    log.info("wrote %s", args.out)
    label = method_label(out, rcfg, args.fraction)
    if args.png:
        write_scan_preview(args.png, args.scan, out, label, truth)
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
            attenuation_corrected=bool(out["attenuation_corrected"]),
            randoms_corrected=bool(out["randoms_corrected"]),
            units=str(out["units"]),
            scale=float(out["bqml_per_unit"]) if str(out["units"]) == "BQML" else 1.0,
            randoms_method=str(out["randoms_method"]) if str(out["randoms_method"]) != "none" else "delayed",
            scatter_corrected="SCAT" in out["corrections"].tolist(),
            normalised="NORM" in out["corrections"].tolist(),
            activity_bq=cfg["phantom"]["activity_bq"],
            frame_duration_ms=1000.0 * cfg["phantom"]["acquisition_s"] * args.fraction,
        )
        log.info("wrote %d DICOM files to %s", len(files), Path(args.dicom))


def calibration(out: dict, activity_bq: float) -> dict:
    """Counts -> Bq/mL: the factor that makes the image's total activity the part's known
    activity (``phantom.activity_bq``, all of it inside the image volume: the tube is shorter than
    the scanner). A global calibration, as a cross-calibration with a known source gives; the
    image values times ``bqml_per_unit`` are Bq/mL (DICOM Units BQML). An empty image stays in
    its own units (CNTS).

    Returns:
        ``units`` (``BQML`` | ``CNTS``) and ``bqml_per_unit`` (0 when CNTS).
    """
    import numpy as np

    voxel_ml = float(np.prod(out["voxel_mm"])) / 1000.0
    total = float(np.asarray(out["image_unfiltered"], np.float64).sum()) * voxel_ml
    if total > 0 and activity_bq > 0:
        return {"units": np.array("BQML"), "bqml_per_unit": np.float64(activity_bq / total)}
    return {"units": np.array("CNTS"), "bqml_per_unit": np.float64(0.0)}


def snapshot_recorder(cfg: dict, scanner, truth: dict | None):
    """The osem_early recorder of a reconstruction (``recon/snapshots.py``) and the iterations
    to run past ``reconstruction.iterations`` for it."""
    from ..recon.snapshots import SnapshotRecorder, tube_planes

    rcfg, ecfg, ds = cfg["reconstruction"], cfg["enhancement"], cfg["dataset"]
    grid = ReconGrid.from_config(scanner, rcfg)
    k_max = ecfg["osem_max_iterations"]
    recorder = SnapshotRecorder(
        grid.voxel_mm,
        tube_planes(None if truth is None else truth["activity"], grid.shape[0]),
        ds["image_size"],
        ds["slice_planes"],
        ecfg["osem_fwhm_mm"],
        iterations=range(1, k_max + 1),
    )
    return recorder, max(0, k_max - rcfg["iterations"])


def save_snapshots(path, recorder, out: dict, scan: str, fraction: float, **extra) -> None:
    """Write a candidates file (``recon/snapshots.py``) with what it was made from."""
    import numpy as np

    from ..io import save_npz

    save_npz(
        path,
        **recorder.arrays(),
        scan=np.array(scan),
        fraction=np.float64(fraction),
        # The reconstruction's own setting: the candidate that is the dataset's low-count slice.
        reference_iterations=np.int64(out["iterations"]),
        reference_fwhm_mm=np.float64(out["postfilter_fwhm_mm"]),
        seconds=np.float64(out["seconds"]),
        **extra,
    )
    log.info("wrote %s (%d candidates)", path, len(recorder.settings))
