"""``positrongan config``: validate a config and print or save it fully resolved."""

from __future__ import annotations

import argparse

from .. import config as configlib
from ..io import write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", help="write the resolved config here (YAML) instead of printing it")


def run(args: argparse.Namespace, cfg: dict) -> None:
    text = configlib.dump(dict(cfg))
    if args.out:
        write_text(args.out, "# Resolved positrongan config: every key, defaults filled in.\n" + text)
    else:
        print(text, end="")
