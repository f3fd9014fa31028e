"""``positrongan detectability``: every scan's per-defect CRC/CNR -> one CSV and a figure."""

from __future__ import annotations

import argparse
import logging

from ..report.detectability import collect, format_found, format_median, plot, summary, write_csv

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recon", nargs="+", required=True, metavar="NPZ", help="reconstructions (results/recon/{scan}.npz)"
    )
    parser.add_argument("--csv", required=True, metavar="CSV", help="results/recon/detectability.csv")
    parser.add_argument(
        "--png", metavar="PNG", help="CNR against defect size per type (results/recon/detectability.png)"
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    rows = collect(args.recon)
    if not rows:
        log.warning("no reconstruction holds detectability scores (no defects, or no truth was given)")
    write_csv(args.csv, rows)
    log.info("wrote %s: %d defects in %d scans", args.csv, len(rows), len({r["scan"] for r in rows}))
    for t, s in summary(rows).items():
        log.info(
            "%s: %d defects; target population N=%d, CNR %s (target %g), median CRC %.3f%s",
            t,
            s["n"],
            s["n_target"],
            format_median(s),
            s["target"],
            s["median_crc"],
            format_found(s, "; "),
        )
    if args.png:
        plot(args.png, rows, f"detectability of {len(rows)} defects in {len({r['scan'] for r in rows})} scans")
        log.info("wrote %s", args.png)
