"""``positrongan export``: a scan in a format other PET tools read (GATE 9 ROOT + macro, PETSIRD).

docs/interop.md says how our crystal ids map to each format and how to use the files with
pytomography, CASToR and the petsird tools.
"""

from __future__ import annotations

import argparse
import logging

from ..errors import ConfigError
from ..geometry.scanner import Scanner

log = logging.getLogger(__name__)

FORMATS = ("gate9", "petsird")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=FORMATS, help="gate9: GATE 9 ROOT + macro; petsird: PETSIRD")
    parser.add_argument("--root", metavar="ROOT", help="our simulation ROOT file (results/sim/{scan}.root)")
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="exported scan: GATE 9 ROOT file (gate9) or binary PETSIRD stream (petsird, e.g. {scan}.petsird)",
    )
    parser.add_argument(
        "--macro",
        metavar="MAC",
        help="gate9 only: also write the cylindricalPET geometry macro of the configured scanner here",
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    scanner = Scanner.from_config(cfg["scanner"])
    if (args.root is None) != (args.out is None):
        raise ConfigError("--root and --out go together (the scan to export and where to write it)")
    if args.format == "petsird":
        if args.macro:
            raise ConfigError("--macro is for --format gate9 (PETSIRD files carry their scanner description)")
        if args.out is None:
            raise ConfigError("--format petsird needs --root and --out")
        try:
            import petsird  # noqa: F401
        except ImportError:
            raise ConfigError(
                "PETSIRD export (config key 'export.formats' or --format petsird) needs the petsird package: "
                "pip install 'positrongan[export]'"
            ) from None
        from ..export.petsird import export_petsird

        counts = export_petsird(args.root, args.out, scanner, cfg["digitizer"])
        log.info(
            "wrote %s: %d prompts, %d delayed in %d time blocks of 1 ms",
            args.out,
            counts["prompts"],
            counts["delayed"],
            counts["time_blocks"],
        )
        return
    from ..export import gate9

    if args.macro is None and args.out is None:
        raise ConfigError("--format gate9 needs --root and --out, --macro, or both")
    if args.macro:
        gate9.write_macro(args.macro, scanner, cfg["digitizer"])
        log.info("wrote %s", args.macro)
    if args.out:
        counts = gate9.export_root(args.root, args.out, scanner, singles=cfg["export"]["gate9_singles"])
        log.info("wrote %s: %s", args.out, ", ".join(f"{n} {tree}" for tree, n in counts.items()))
