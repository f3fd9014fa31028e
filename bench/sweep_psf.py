"""The resolution-model and slice-thickness sweeps of docs/detectability.md: per scan and PSF FWHM,
one 3D OSEM run of a finished default run's scan; the image after every iteration, post-filtered at
each FWHM, scored against the truth at the dataset's scale (the pipeline's own
``reconstruct_scan``, ``postfilter`` and ``score_scan``), with ``dataset.slice_planes`` set to
each of --slice-planes. With --stored, no new reconstruction: the run's own unfiltered images
(``recon/{scan}.npz``). Appends one JSON line per (scan, PSF, iteration, filter, slice planes,
defect) to --out, then prints the median CNR over the target populations per setting (the
pipeline's populations; unresolved defects left out, as in ``detectability.csv``'s summary).
Every other reconstruction setting comes from --config: a file with ``reconstruction.rdp_beta``
sweeps the MAP reconstruction (one --out per setting: the lines do not record it).

Run (about 30 s of one core per scan and PSF):
    python bench/sweep_psf.py --out /tmp/psf.jsonl --psf 0 2.5 3.5 4.5 5.5 6.5 \\
        --scans scan_002 scan_005 scan_007 scan_008
    python bench/sweep_psf.py --out /tmp/psf.jsonl --summary-only   # the table again
    # slice thickness and post-filter on a finished run's own images (seconds per scan)
    python bench/sweep_psf.py --out /tmp/slab.jsonl --stored --scans scan_00{0..9} \\
        --filters 4 5 6 --slice-planes 1 2 3 4 5 6
    # a 40 s run's scans as 20 s scans (every event kept with probability 0.5)
    python bench/sweep_psf.py --out /tmp/half.jsonl --results results_40 --config config/config.yaml \\
        --config c40.yaml --fraction 0.5 --psf 4.5 --iterations 8 --filters 5 --scans scan_00{0..9}
    # another scanner: its own run's results, both configs
    python bench/sweep_psf.py --out /tmp/fine.jsonl --results /tmp/fine/results \\
        --config config/config.yaml --config /tmp/fine/fine.yaml --device cuda
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _images(args, cfg, scanner, results):
    """(scan, PSF, iteration, unfiltered image, voxel_mm, truth) to score: every iteration of a new
    OSEM run per scan and PSF, or with --stored the run's own image (its PSF and iterations)."""
    import torch

    from positrongan.geometry.grid import ReconGrid
    from positrongan.io import load_npz
    from positrongan.recon.driver import load_truth, reconstruct_scan

    torch.set_num_threads(args.threads)
    norm = results / "recon" / "normalisation.npz"
    for scan in args.scans:
        if args.stored:
            r = load_npz(results / "recon" / f"{scan}.npz", required=("image_unfiltered", "voxel_mm"))
            rc = dict(cfg["reconstruction"], psf_fwhm_mm=float(r["psf_fwhm_mm"]))
            truth = load_truth(results / "truth" / f"{scan}.npz", ReconGrid.from_config(scanner, rc))
            yield scan, rc["psf_fwhm_mm"], int(r["iterations"]), r["image_unfiltered"], r["voxel_mm"], truth
            continue
        for psf in args.psf:
            rc = dict(cfg["reconstruction"], psf_fwhm_mm=psf, iterations=1)
            truth = load_truth(results / "truth" / f"{scan}.npz", ReconGrid.from_config(scanner, rc))
            images = {}
            recon = reconstruct_scan(
                results / "sim" / f"{scan}.root",
                None,
                scanner,
                rc,
                truth,
                torch.device(args.device),
                digitizer=cfg["digitizer"],
                acquisition_s=cfg["phantom"]["acquisition_s"],
                normalisation=norm if rc["normalisation"] else None,
                callback=lambda k, x: images.__setitem__(k, x.cpu().numpy().astype(np.float32)),
                extra_iterations=args.iterations - 1,
                fraction=args.fraction,
            )
            for k, image in images.items():
                yield scan, psf, k, image, recon["voxel_mm"], truth


def sweep(args) -> None:
    from positrongan.config import load
    from positrongan.geometry.scanner import Scanner
    from positrongan.recon.detectability import score_scan
    from positrongan.recon.driver import postfilter

    cfg = load(args.config or ["config/config.yaml"])
    scanner = Scanner.from_config(cfg["scanner"])
    slice_planes = args.slice_planes or [cfg["dataset"]["slice_planes"]]
    keep = ("defect", "type", "size_mm", "depth_fraction", "crc", "cnr")
    with open(args.out, "a") as out:
        for scan, psf, k, image, voxel_mm, truth in _images(args, cfg, scanner, Path(args.results)):
            if args.scored and k not in args.scored:
                continue
            for fwhm in args.filters:
                filtered = postfilter(image, voxel_mm, fwhm)
                for thick in slice_planes:
                    for r in score_scan(filtered, truth, dict(cfg["dataset"], slice_planes=thick)):
                        row = {"scan": scan, "psf": psf, "it": k, "filter": fwhm, "slice_planes": thick}
                        out.write(json.dumps({**row, **{c: r[c] for c in keep}}) + "\n")
            out.flush()
            print(f"{scan} PSF {psf:g} mm iteration {k} done", file=sys.stderr, flush=True)


def summary(path: str) -> None:
    from positrongan.report.detectability import in_target_population

    medians = collections.defaultdict(lambda: collections.defaultdict(list))
    seen = set()
    for line in open(path):
        r = json.loads(line)
        # 0: not recorded (a line written before --slice-planes; the config's value at the time).
        setting = (r["psf"], r["it"], r["filter"], r.get("slice_planes", 0))
        key = (r["scan"], *setting, r["defect"])
        # An appended rerun counts once; an unresolved defect (no CNR) is left out, as in the pipeline.
        if key in seen or not in_target_population(r) or r["cnr"] is None or math.isnan(r["cnr"]):
            continue
        seen.add(key)
        medians[setting][r["type"]].append(r["cnr"])
    kinds = ("crack", "pit", "blockage", "bubble")
    print("| PSF FWHM | iterations | post-filter | slice planes | " + " | ".join(kinds) + " |")
    print("| ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " |")
    for (psf, it, fwhm, thick), by in sorted(medians.items()):
        cells = [f"{np.median(by[k]):.2f} (N={len(by[k])})" if by[k] else "–" for k in kinds]
        print(f"| {psf:g} mm | {it} | {fwhm:g} mm | {thick} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON-lines file (appended)")
    ap.add_argument("--results", default="results", help="a finished run's results folder")
    ap.add_argument(
        "--config", action="append", help="YAML config (repeatable; later files win; default config/config.yaml)"
    )
    ap.add_argument("--device", default="cpu", help="torch device of the reconstruction (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of torch")
    ap.add_argument("--scans", nargs="+", default=["scan_002", "scan_005", "scan_007", "scan_008"])
    ap.add_argument("--psf", nargs="+", type=float, default=[0.0, 2.5, 3.5, 4.5], help="PSF FWHM [mm]; 0: none")
    ap.add_argument("--iterations", type=int, default=12, help="OSEM iterations scored: 1 .. this")
    ap.add_argument("--scored", nargs="+", type=int, help="score only these iterations (default: every one)")
    ap.add_argument(
        "--slice-planes", nargs="+", type=int, help="dataset.slice_planes values to score at (default: the config's)"
    )
    ap.add_argument("--filters", nargs="+", type=float, default=[3.0, 4.0, 5.0, 6.0, 7.0], help="post-filter FWHM [mm]")
    ap.add_argument(
        "--stored", action="store_true", help="score the run's own images (recon/{scan}.npz) instead of new OSEM runs"
    )
    ap.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="reconstruct each scan thinned to this fraction of its events (a scan this fraction as long)",
    )
    ap.add_argument("--summary-only", action="store_true", help="only print the table of --out")
    args = ap.parse_args(argv)
    if not 0 < args.fraction <= 1:
        ap.error(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.stored and args.fraction != 1:
        ap.error("--fraction thins the events of a new reconstruction; --stored scores the run's own images")
    if not args.summary_only:
        sweep(args)
    summary(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
