"""``positrongan normalisation``: simulate a uniform source with the configured scanner and
digitizer and estimate the component normalisation factors (``recon/normalisation.py``), once
per scanner geometry."""

from __future__ import annotations

import argparse
import logging

from ..config import derived_seed
from ..recon.norm_source import build_normalisation
from ..recon.normalisation import save_normalisation, write_figure

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="NPZ", help="normalisation factors (results/recon/normalisation.npz)"
    )
    parser.add_argument("--png", metavar="PNG", help="figure of the factors (results/recon/normalisation.png)")


def run(args: argparse.Namespace, cfg: dict) -> None:
    norm = build_normalisation(cfg, derived_seed(cfg, "normalisation"))
    save_normalisation(args.out, norm)
    log.info("wrote %s", args.out)
    if args.png:
        write_figure(args.png, norm)
        log.info("wrote %s", args.png)
