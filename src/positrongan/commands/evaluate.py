"""``positrongan evaluate``: score every method's samples against the held-out real images."""

from __future__ import annotations

import argparse
import logging

from ..config import derived_seed

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz (real images and split)")
    parser.add_argument(
        "--samples",
        required=True,
        nargs="+",
        metavar="NPZ",
        help="samples/{method}_seed{seed}.npz, one per method (training.methods and training.variants) and seed",
    )
    parser.add_argument(
        "--metrics", required=True, metavar="CSV", help="output: one row per method and the real reference"
    )
    parser.add_argument(
        "--table", required=True, metavar="MD", help="output: Markdown table shaped like the paper's Table 1"
    )
    parser.add_argument(
        "--grid", required=True, metavar="PNG", help="output: real test images beside every method's samples"
    )
    parser.add_argument(
        "--detector",
        metavar="PT",
        help="detect/detector.pt: adds detector-feature Fréchet distance, KID, precision/recall and defect fractions",
    )
    parser.add_argument(
        "--reference",
        metavar="NPZ",
        help="output: statistics of the held-out real images the rows are compared with (eval/reference.npz)",
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..metrics.evaluation import run_evaluation
    from ..runtime import torch_device
    from ..train.registry import label, resolve, run_names

    ev = cfg["evaluation"]
    tcfg = cfg["training"]
    methods = run_names(tcfg)
    for name in methods:
        resolve(tcfg, name)  # a bad variant is named before any metric runs
    run_evaluation(
        dataset=args.dataset,
        samples=args.samples,
        methods=methods,
        ev=ev,
        device=torch_device(cfg["device"]),
        seed=lambda *keys: derived_seed(cfg, "evaluate", *keys),
        metrics_csv=args.metrics,
        table_md=args.table,
        grid_png=args.grid,
        reference_npz=args.reference,
        seeds=list(tcfg["seeds"]),
        labels={m: label(tcfg, m) for m in methods},
        budget=budget_text(tcfg),
        detector=args.detector,
        bases={m: resolve(tcfg, m)[0] for m in methods},
    )


def budget_text(tcfg: dict) -> str:
    """training.budget in words, for the table."""
    if tcfg["budget"] == "images":
        n = tcfg["iterations"] * tcfg["batch_size"]
        return (
            f"{n:,} real images seen by each discriminator (training.iterations {tcfg['iterations']} x "
            f"batch {tcfg['batch_size']}; by the VAE's encoder and the diffusion UNet for those)"
        )
    return f"{tcfg['iterations']} generator updates of batch {tcfg['batch_size']} each (training.budget = updates)"
