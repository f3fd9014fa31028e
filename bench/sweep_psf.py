"""The resolution-model sweep of docs/detectability.md: per scan and PSF FWHM, one 3D OSEM run of a
finished default run's scan; the image after every iteration, post-filtered at each FWHM, scored
against the truth at the dataset's scale (the pipeline's own ``reconstruct_scan``,
``postfilter`` and ``score_scan``). Appends one JSON line per (scan, PSF, iteration, filter,
defect) to --out, then prints the median CNR over the target populations per setting.

Run (about 30 s of one core per scan and PSF):
    python bench/sweep_psf.py --out /tmp/psf.jsonl --psf 0 2.5 3.5 4.5 5.5 6.5 \\
        --scans scan_002 scan_005 scan_007 scan_008
    python bench/sweep_psf.py --out /tmp/psf.jsonl --summary-only   # the table again
    # another scanner: its own run's results, both configs
    python bench/sweep_psf.py --out /tmp/fine.jsonl --results /tmp/fine/results \\
        --config config/config.yaml --config /tmp/fine/fine.yaml --device cuda
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def is_target(row: dict) -> bool:
    """The populations the CNR targets apply to (DESIGN.md §5, docs/detectability.md)."""
    kind, size = row["type"], row["size_mm"]
    if kind == "crack":
        return size >= 1.5
    if kind == "pit":
        return (row.get("depth_fraction") or 0.0) > 0.5
    return kind in ("blockage", "bubble") and size >= 4.0


def sweep(args) -> None:
    import torch

    from positrongan.config import load
    from positrongan.geometry.grid import ReconGrid
    from positrongan.geometry.scanner import Scanner
    from positrongan.recon.detectability import score_scan
    from positrongan.recon.driver import load_truth, postfilter, reconstruct_scan

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load(args.config or ["config/config.yaml"])
    scanner = Scanner.from_config(cfg["scanner"])
    results = Path(args.results)
    norm = results / "recon" / "normalisation.npz"
    with open(args.out, "a") as out:
        for scan in args.scans:
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
                    device,
                    digitizer=cfg["digitizer"],
                    acquisition_s=cfg["phantom"]["acquisition_s"],
                    normalisation=norm if rc["normalisation"] else None,
                    callback=lambda k, x: images.__setitem__(k, x.cpu().numpy().astype(np.float32)),
                    extra_iterations=args.iterations - 1,
                )
                for k, image in images.items():
                    for fwhm in args.filters:
                        for r in score_scan(postfilter(image, recon["voxel_mm"], fwhm), truth, cfg["dataset"]):
                            keep = ("defect", "type", "size_mm", "depth_fraction", "crc", "cnr")
                            row = {"scan": scan, "psf": psf, "it": k, "filter": fwhm, **{c: r[c] for c in keep}}
                            out.write(json.dumps(row) + "\n")
                out.flush()
                print(f"{scan} PSF {psf:g} mm done", file=sys.stderr, flush=True)


def summary(path: str) -> None:
    medians = collections.defaultdict(lambda: collections.defaultdict(list))
    seen = set()
    for line in open(path):
        r = json.loads(line)
        key = (r["scan"], r["psf"], r["it"], r["filter"], r["defect"])
        if key in seen or not is_target(r):  # an appended rerun counts once
            continue
        seen.add(key)
        medians[(r["psf"], r["it"], r["filter"])][r["type"]].append(r["cnr"])
    kinds = ("crack", "pit", "blockage", "bubble")
    print("| PSF FWHM | iterations | post-filter | " + " | ".join(kinds) + " |")
    print("| ---: | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " |")
    for (psf, it, fwhm), by in sorted(medians.items()):
        cells = [f"{np.median(by[k]):.2f} (N={len(by[k])})" if by[k] else "–" for k in kinds]
        print(f"| {psf:g} mm | {it} | {fwhm:g} mm | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON-lines file (appended)")
    ap.add_argument("--results", default="results", help="a finished run's results folder")
    ap.add_argument("--config", action="append", help="YAML config (repeatable; later files win; default config/config.yaml)")
    ap.add_argument("--device", default="cpu", help="torch device of the reconstruction (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of torch")
    ap.add_argument("--scans", nargs="+", default=["scan_002", "scan_005", "scan_007", "scan_008"])
    ap.add_argument("--psf", nargs="+", type=float, default=[0.0, 2.5, 3.5, 4.5], help="PSF FWHM [mm]; 0: none")
    ap.add_argument("--iterations", type=int, default=12, help="OSEM iterations scored: 1 .. this")
    ap.add_argument("--filters", nargs="+", type=float, default=[3.0, 4.0, 5.0, 6.0, 7.0], help="post-filter FWHM [mm]")
    ap.add_argument("--summary-only", action="store_true", help="only print the table of --out")
    args = ap.parse_args(argv)
    if not args.summary_only:
        sweep(args)
    summary(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
