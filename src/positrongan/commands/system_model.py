"""``positrongan system-model``: build the ring's sparse system matrix once per geometry and grid."""

from __future__ import annotations

import argparse
import logging
import tracemalloc

from ..geometry.scanner import Scanner
from ..recon.projector import build_system_model

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="NPZ", help="system model artifact (results/recon/system_model.npz)"
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    scanner = Scanner.from_config(cfg["scanner"])
    tracemalloc.start()
    model = build_system_model(scanner, cfg["reconstruction"], cfg["scanner"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    model.save(args.out)
    log.info("wrote %s (peak memory while building: %.1f MB)", args.out, peak / 1e6)
