"""The ``positrongan`` command line: one sub-command per pipeline stage.

Each stage lives in ``positrongan.commands.<module>`` and provides two functions:

- ``add_arguments(parser)``: its own options (explicit input and output paths);
- ``run(args, cfg)``: do the work; write outputs atomically; return nothing.

The module is imported only when its command runs, so ``positrongan --help`` stays fast
(torch and uproot are not loaded to print help). Options common to every stage (config
sources, threads, verbosity) are added here, once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time
from typing import Sequence

from . import __version__
from .errors import ConfigError, PositronganError, Terminated, safe_message

# name -> (module under positrongan.commands, one-line help). Order is pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("config", "validate a config, print it resolved, or save it"),
    "config-docs": ("config_docs", "write the Markdown documentation of every config key"),
    "simulate": ("simulate", "Monte Carlo of one scan: ROOT singles/coincidences, JSON, truth maps"),
    "system-model": ("system_model", "build the ring's sparse system matrix (once per geometry and grid)"),
    "normalisation": ("normalisation", "component normalisation factors from a simulated uniform source (once per scanner)"),
    "reconstruct": ("reconstruct", "MLEM/OSEM reconstruction of one scan, with preview PNG and DICOM series"),
    "reconstruct-map": (
        "reconstruct_map",
        "MAP-OSEM (relative-difference prior) of one short-scan twin at each enhancement.map_betas",
    ),
    "export": ("export", "one scan for other PET tools: GATE 9 ROOT + cylindricalPET macro, or PETSIRD"),
    "detectability": ("detectability", "per-defect CRC/CNR of every scan -> detectability.csv and figure"),
    "build-dataset": ("build_dataset", "2D positron image dataset (slices + truth, split by scan)"),
    "make-ct-corpus": ("make_ct_corpus", "write the synthetic body-CT corpus in the DeepLesion layout"),
    "train-vae": ("train_vae", "train the CT VAE prior on the CT corpus (checkpoint, resume)"),
    "encode-ct": ("encode_ct", "encode every CT slice with the VAE: latents.npz (mu, logvar, names)"),
    "extract-features": ("extract_features", "PCA/PCANet features of the training positron images (the memory)"),
    "train": ("train", "train the attention-memory GAN (ours) or a baseline (vae, dcgan, wgan_gp)"),
    "sample": ("sample", "draw evaluation samples from a trained generator"),
    "evaluate": ("evaluate", "score every method's samples against held-out real images: metrics, table, grid"),
    "plot-scarcity": ("plot_scarcity", "the data-scarcity curve: each metric against the training images N"),
    "enhance": ("enhance", "train one enhancement method (low-count -> reference) and enhance the test slices"),
    "evaluate-enhance": ("evaluate_enhance", "image quality, defect CRC/CNR and hallucination of every enhancement"),
    "train-detector": ("train_detector", "train the defect detector on reference-count training slices"),
    "evaluate-detection": ("evaluate_detection", "detect defects in test slices at every count level, raw and enhanced"),
    "train-conditional": (
        "train_conditional",
        "train the mask-conditioned generator (truth + defect labels -> positron slice) on the training split",
    ),
    "evaluate-augmentation": (
        "evaluate_augmentation",
        "detector on N real slices with / without generated labelled slices, scored on the test scans",
    ),
}

# The options of each command that name its outputs, and whether each is a folder (every
# command is listed; tests/test_faults.py checks the names). They are
# checked before the stage computes anything (a read-only folder, a folder where a file goes or
# a full disk is reported then, not after an hour of work), and their stale temporaries removed.
OUTPUTS: dict[str, dict[str, bool]] = {
    "config": {"out": False},
    "config-docs": {"out": False},
    "simulate": {"root": False, "meta": False, "truth": False},
    "system-model": {"out": False},
    "normalisation": {"out": False, "png": False},
    "reconstruct": {"out": False, "png": False, "dicom": True, "snapshots": False},
    "reconstruct-map": {"out": False},
    "export": {"out": False, "macro": False},
    "detectability": {"csv": False, "png": False},
    "build-dataset": {"out": False, "png": False},
    "make-ct-corpus": {"out": True},
    "train-vae": {"model": False, "losses": False, "recon": False, "checkpoint": False},
    "encode-ct": {"out": False},
    "extract-features": {"out": False},
    "train": {"generator": False, "checkpoint": False, "losses": False, "samples": False},
    "sample": {"out": False},
    "evaluate": {"metrics": False, "table": False, "grid": False},
    "plot-scarcity": {"out": False},
    "enhance": {"out": False, "figure": False},
    "evaluate-enhance": {"metrics": False, "runs": False, "defects": False, "table": False},
    "train-detector": {"out": False, "meta": False},
    "evaluate-detection": {"csv": False, "png": False, "table": False},
    "train-conditional": {"out": False, "log": False, "png": False},
    "evaluate-augmentation": {"csv": False, "table": False, "png": False},
}

EXIT_ERROR, EXIT_SIGINT, EXIT_SIGTERM = 2, 130, 143

log = logging.getLogger("positrongan")


class StageConfig(dict):
    """The config a stage received. When the caller passed only some sections (the Snakemake
    rules pass each stage just what it depends on, so editing training keys does not rerun the
    simulation), reading any other section is a bug in the rule, not a reason to use defaults."""

    def __init__(self, data: dict, given: set[str] | None):
        super().__init__(data)
        self._given = given

    def __getitem__(self, key):
        if self._given is not None and key not in self._given and key not in _GLOBAL_KEYS:
            raise ConfigError(
                f"config section '{key}' was not passed to this stage; add it to the rule's "
                f"cfg_json(...) sections in workflow/rules/"
            )
        return super().__getitem__(key)


_GLOBAL_KEYS = {"results_dir", "seed", "device"}


def _common_options(parser: argparse.ArgumentParser) -> None:
    grp = parser.add_argument_group("configuration")
    grp.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config file (repeatable; later files win). Without any, the schema defaults apply.",
    )
    grp.add_argument(
        "--config-json",
        metavar="JSON",
        help="config sections as a JSON object (what the Snakemake rules pass); only these sections "
        "may be read by the stage when no --config file is given",
    )
    grp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. --set reconstruction.iterations=20 (repeatable)",
    )
    grp.add_argument("--threads", type=int, default=None, help="CPU threads for numeric libraries")
    grp.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser. Only ``command``'s module is imported (for its own options).

    Params:
        command: the sub-command about to run, or None to build the top-level help only.
    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="positrongan",
        description="Industrial positron-emission imaging pipeline: simulate, reconstruct, "
        "learn (attention-memory GAN) and evaluate. Each sub-command is one stage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="<stage>", title="stages")
    for name, (module, help_text) in COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _common_options(sub)
            _module(name).add_arguments(sub)
    return parser


def _module(name: str):
    return importlib.import_module(f"positrongan.commands.{COMMANDS[name][0]}")


def _on_sigterm(signum, frame) -> None:
    # SIGTERM (a SLURM cancel or time limit, `kill`) unwinds like Ctrl-C: every atomic write in
    # progress removes its temporary file. A second SIGTERM during that cleanup is ignored.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(signum)


def check_outputs(command: str, args: argparse.Namespace) -> None:
    """Check that every output option of ``command`` can be written (see ``OUTPUTS``)."""
    from .io import check_output

    for dest, folder in OUTPUTS.get(command, {}).items():
        value = getattr(args, dest, None)
        if value:
            check_output(value, folder=folder)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``positrongan`` console script. Returns the exit status."""
    from . import config as configlib
    from .runtime import set_threads, setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    setup_logging(args.verbose)
    set_threads(args.threads)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    name = f"positrongan {args.command}"
    try:
        cfg = configlib.load(args.config, args.config_json, args.set)
        given = None
        if args.config_json and not args.config:
            import json

            given = set(json.loads(args.config_json)) | {
                k.split(".", 1)[0] for k in (s.partition("=")[0] for s in args.set)
            }
        check_outputs(args.command, args)
        t0 = time.perf_counter()
        _module(args.command).run(args, StageConfig(cfg, given))
        log.info("%s finished in %.1f s", args.command, time.perf_counter() - t0)
    except PositronganError as exc:
        print(f"{name}: error: {safe_message(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        # An expected fault of the machine (a file vanished, a device error) rather than a bug:
        # one line naming the file, not a traceback.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{name}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no partial artifact was kept", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print(
            f"{name}: terminated (SIGTERM, e.g. a SLURM cancel or time limit); no partial artifact was kept "
            "(finished artifacts and training checkpoints are)",
            file=sys.stderr,
        )
        return EXIT_SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
