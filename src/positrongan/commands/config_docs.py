"""``positrongan config-docs``: the Markdown table of every config key, from the schema."""

from __future__ import annotations

import argparse

from .. import config as configlib
from ..io import write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", help="write here (e.g. config/README.md) instead of printing")


def run(args: argparse.Namespace, cfg: dict) -> None:
    text = configlib.documentation()
    if args.out:
        write_text(args.out, text)
    else:
        print(text, end="")
