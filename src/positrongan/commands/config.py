"""``positrongan config``: validate a config and print or save it fully resolved."""

from __future__ import annotations

import argparse
import logging

from .. import config as configlib
from ..io import write_text

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", help="write the resolved config here (YAML) instead of printing it")


def run(args: argparse.Namespace, cfg: dict) -> None:
    for text in configlib.check_warnings(cfg):
        log.warning(text)
    text = configlib.dump(dict(cfg))
    if args.out:
        write_text(args.out, "# Resolved positrongan config: every key, defaults filled in.\n" + text)
    else:
        print(text, end="")
