"""``positrongan train-conditional``: the mask-conditioned generator (truth + defect labels ->
reference positron slice), trained on the training split only; a learned stand-in for the Monte
Carlo + reconstruction chain (docs/detection.md, "Augmentation utility")."""

from __future__ import annotations

import argparse
import logging

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz")
    parser.add_argument("--seed", type=int, default=0, help="training seed (detection.conditional.seeds)")
    parser.add_argument("--out", required=True, metavar="PT", help="output: train/conditional/seed{seed}.pt")
    parser.add_argument(
        "--log", required=True, metavar="JSON", help="output: the training history and validation scores (JSON)"
    )
    parser.add_argument(
        "--png", metavar="PNG", help="output: validation slices: truth, labels, reference and two generated draws"
    )


def _figure(path, truth, labels, real, draws, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    from matplotlib.colors import ListedColormap

    from ..detect.train import TYPES

    # Background black, then one colour per defect type (label t + 1 = TYPES[t]).
    colours = ["red", "orange", "cyan", "green"][: len(TYPES)]
    label_cmap = ListedColormap(["black", *(f"tab:{c}" for c in colours)])
    key = ", ".join(f"{t} {c}" for t, c in zip(TYPES, colours))
    cols = [("truth", truth, "gray"), (f"labels ({key})", labels, label_cmap), ("reference", real, "gray")]
    cols += [(f"generated, noise {i + 1}", d, "gray") for i, d in enumerate(draws)]
    fig, axes = plt.subplots(len(truth), len(cols), figsize=(1.9 * len(cols), 1.9 * len(truth)), squeeze=False)
    for i in range(len(truth)):
        for j, (name, arr, cmap) in enumerate(cols):
            ax = axes[i, j]
            kw = {"vmin": -0.5, "vmax": len(TYPES) + 0.5} if cmap is label_cmap else {"vmin": 0, "vmax": 1}
            ax.imshow(arr[i], cmap=cmap, interpolation="nearest", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8 if len(name) < 30 else 5)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace, cfg: dict) -> None:
    import torch

    from ..config import derived_seed
    from ..detect.conditional import (
        generate,
        interior_mask,
        save_conditional,
        settings_of,
        texture_ratio,
        train_conditional,
    )
    from ..errors import ArtifactError
    from ..io import load_npz, write_json

    gcfg = cfg["detection"]["conditional"]
    data = load_npz(args.dataset, ("images", "truth", "defect_labels", "split"))
    split = data["split"]
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if len(train) == 0:
        raise ArtifactError(f"{args.dataset}: no training slices to train the conditional generator on")
    torch.use_deterministic_algorithms(True)
    seed = derived_seed(cfg, "conditional", args.seed)
    # A fixed, evenly spaced part of the validation scans for the history (scoring all of them
    # at every log step would cost a good share of the training).
    vpick = val[np.unique(np.linspace(0, len(val) - 1, min(len(val), 48)).round().astype(int))] if len(val) else val
    v = (data["images"][vpick], data["truth"][vpick], data["defect_labels"][vpick]) if len(vpick) else None
    fit = train_conditional(
        data["images"][train],
        data["truth"][train],
        data["defect_labels"][train],
        **settings_of(gcfg),
        log_every=max(1, gcfg["iterations"] // 10),
        val=v,
        seed=seed,
        desc=f"conditional seed {args.seed}",
    )
    record = {
        "seed": args.seed,
        "derived_seed": seed,
        "train_slices": int(len(train)),
        "val_slices_scored": int(len(vpick)),
        "seconds": fit.seconds,
        "config": dict(gcfg),
        "history": fit.history,
    }
    if v is not None:
        # Two noise draws of all validation maps: the pixel std between draws says whether the
        # generator uses its noise at all (0 = one image per label map, the conditional mean).
        vt, vl = data["truth"][val], data["defect_labels"][val]
        a = generate(fit.net, vt, vl, seed=seed + 1)
        b = generate(fit.net, vt, vl, seed=seed + 2)
        inside = interior_mask(vt, vl)
        record.update(
            {
                "val_slices": int(len(val)),
                "val_l1": float(np.abs(a - data["images"][val]).mean()),
                "val_texture_ratio": texture_ratio(a, data["images"][val], vt, vl),
                "val_draw_std": float((a - b)[inside].std() / np.sqrt(2.0)),
            }
        )
        log.info(
            "validation (%d slices): L1 %.4f, texture ratio %.3f, std between noise draws %.4f",
            len(val),
            record["val_l1"],
            record["val_texture_ratio"],
            record["val_draw_std"],
        )
        if args.png:
            # Defect slices first: they are what the generator is for.
            order = np.argsort(~(vl.reshape(len(vl), -1) > 0).any(1), kind="stable")[:6]
            _figure(
                args.png,
                vt[order],
                vl[order],
                data["images"][val][order],
                [a[order], b[order]],
                f"conditional generator seed {args.seed}: validation slices (never trained on)",
            )
    elif args.png:
        raise ArtifactError(f"{args.dataset}: no validation slices to draw the --png figure from")
    save_conditional(args.out, fit.net, {k: w for k, w in record.items() if k != "history"})
    write_json(args.log, record)
    log.info("wrote %s and %s", args.out, args.log)
