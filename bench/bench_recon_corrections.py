"""Benchmark: what the randoms and scatter corrections cost per 3D reconstruction of one scan.

Runs ``recon.driver.reconstruct_scan`` (the reconstruct stage without its file outputs) on one
simulated scan with the default config, one thread, in four settings: no randoms, randoms from
the delayed window (policy-corrected), randoms from singles rates, and delayed randoms plus the
scatter model. Prints one JSON object: wall and CPU seconds per setting, the scatter fraction
estimated, and the fluid-level/background ratios when a truth file is given.

    python bench/bench_recon_corrections.py --root results/sim/scan_000.root \\
        --truth results/truth/scan_000.npz [--config config/config.yaml]

A ROOT file written before the ``SinglesRates`` tree existed (no singles counts) is timed with
singles counts synthesised as 4.5 x each crystal's prompts (the default scan's singles per prompt):
the timing holds, the randoms values do not (the JSON says ``singles_synthesised``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--config", default="config/config.yaml")
    args = ap.parse_args()

    import torch

    from positrongan import config as configlib
    from positrongan.geometry.grid import ReconGrid
    from positrongan.geometry.scanner import Scanner
    from positrongan.recon import driver
    from positrongan.recon.lors import read_coincidences

    torch.set_num_threads(1)
    cfg = configlib.load([args.config])
    scanner = Scanner.from_config(cfg["scanner"])
    truth = driver.load_truth(args.truth, ReconGrid.from_config(scanner, cfg["reconstruction"]))
    synthesised = False
    counts, _ = driver.singles_counts(args.root, scanner)
    if counts is None:
        c1, c2 = read_coincidences(args.root, scanner)
        fake = np.round(4.5 * np.bincount(np.concatenate([c1, c2]), minlength=scanner.n_crystals) / 2).astype(np.int64)
        driver.singles_counts = lambda root, sc: (fake, "synthesised")
        synthesised = True
    settings = {
        "none": {"randoms_correction": False},
        "delayed": {"randoms": "delayed"},
        "singles": {"randoms": "singles"},
        "delayed+scatter": {"randoms": "delayed", "scatter_correction": True},
    }
    out = {"root": args.root, "threads": 1, "machine": platform.processor() or platform.machine()}
    out["singles_synthesised"] = synthesised
    fluid = truth["activity"] >= 0.999
    for name, over in settings.items():
        rc = {**cfg["reconstruction"], **over}
        w, c = time.perf_counter(), time.process_time()
        res = driver.reconstruct_scan(
            args.root,
            None,
            scanner,
            rc,
            truth,
            "cpu",
            digitizer=cfg["digitizer"],
            acquisition_s=cfg["phantom"]["acquisition_s"],
        )
        entry = {
            "wall_s": round(time.perf_counter() - w, 2),
            "cpu_s": round(time.process_time() - c, 2),
            "iterations_s": round(float(res["seconds"]), 2),
            "corrections": res["corrections"].tolist(),
        }
        img = res["image_unfiltered"]
        entry["fluid_mean"] = float(img[fluid].mean())
        if "scatter_fraction" in res:
            entry["scatter_fraction"] = round(float(res["scatter_fraction"]), 4)
            entry["scatter_s"] = round(float(res["scatter_seconds"]), 2)
        out[name] = entry
        print(name, entry, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
