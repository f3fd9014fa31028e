"""``positrongan plot-scarcity``: the data-scarcity curve from eval/metrics.csv."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, metavar="CSV", help="eval/metrics.csv")
    parser.add_argument("--out", required=True, metavar="PNG", help="output: each metric against the training images N")


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..report.scarcity import plot

    plot(args.metrics, args.out)
