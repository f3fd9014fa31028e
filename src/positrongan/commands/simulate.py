"""``positrongan simulate``: simulate one scan -> ROOT singles/coincidences, JSON, truth maps."""

from __future__ import annotations

import argparse

from ..config import scan_ids
from ..errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scan", required=True, help="scan id, e.g. scan_000 (one of scans.count)")
    parser.add_argument(
        "--root", required=True, metavar="FILE", help="output ROOT file (trees Singles, Coincidences, Delayed)"
    )
    parser.add_argument("--meta", required=True, metavar="FILE", help="output JSON: phantom as drawn, defects, counts")
    parser.add_argument(
        "--truth", metavar="FILE", help="output .npz: activity, mu and defect maps on the reconstruction grid"
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..simulate.driver import simulate_scan

    known = scan_ids(cfg)
    if args.scan not in known:
        raise ConfigError(
            f"--scan {args.scan!r} is not a scan of this config (config key 'scans.count' = {cfg['scans']['count']}: "
            f"{known[0]} .. {known[-1]})"
        )
    simulate_scan(cfg, args.scan, args.root, args.meta, args.truth)
