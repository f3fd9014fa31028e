"""The counts the crystals' 176Lu adds at the paper's settings (prints JSON).

config/paper.yaml (600 Bq x 0.1 s, 184 x 64 LYSO crystals, 350-650 keV, 10 ns, kill_all, delayed
window) with the fast engine (GATE cannot run here), the numba kernel: scans scan_000 ..
scan_<N-1> (each its own phantom and seed stream), with ``simulation.lyso_background`` false and
true, the same seeds. Reports, per setting, the mean and standard deviation over the scans of
every count of the scan's JSON (source decays, singles, prompts, trues, scatters, randoms,
delayed, and the ``lyso_*`` shares), the prompts by kind and the delayed pairs whose LOR crosses
the reconstruction's field of view (radius ``reconstruction.fov_mm`` / 2, transaxially), and the
CPU seconds of a scan (engine, sorter, writer).

Usage: python bench/bench_lyso_background.py [--scans 10] [--config config/paper.yaml] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("decays", "singles", "prompts", "trues", "scatters", "randoms", "delayed")
LYSO_KEYS = ("lyso_decays", "lyso_singles", "lyso_prompts", "lyso_trues", "lyso_delayed")


FOV_KEYS = ("fov_prompts", "fov_trues", "fov_lyso_trues", "fov_randoms", "fov_delayed")


def fov_counts(root: Path, radius_mm: float) -> dict:
    """Prompts by kind, and delayed pairs, whose LOR passes within ``radius_mm`` of the scanner
    axis (transaxially): what a reconstruction of that field of view can use."""
    from positrongan.rootfile import read_tree

    out = {}
    for tree, prefix in (("Coincidences", "fov"), ("Delayed", "fov_delayed")):
        c = read_tree(
            root,
            tree,
            ["EventID1", "EventID2", "PhantomScatters1", "PhantomScatters2"]
            + [f"PostPosition_{a}{k}" for a in "XY" for k in "12"],
        )
        x1, y1, x2, y2 = (np.asarray(c[f"PostPosition_{a}{k}"], float) for a, k in ("X1", "Y1", "X2", "Y2"))
        chord = np.hypot(x2 - x1, y2 - y1)
        # An LOR between two crystals of one transaxial position runs parallel to the axis, at their radius.
        d = np.where(chord > 1e-6, np.abs(x1 * y2 - x2 * y1) / np.maximum(chord, 1e-6), np.hypot(x1, y1))
        inside = d < radius_mm
        if tree == "Delayed":
            out[prefix] = int(inside.sum())
            continue
        e1, e2 = np.asarray(c["EventID1"]), np.asarray(c["EventID2"])
        scat = (np.asarray(c["PhantomScatters1"]) > 0) | (np.asarray(c["PhantomScatters2"]) > 0)
        same = e1 == e2
        out["fov_prompts"] = int(inside.sum())
        out["fov_trues"] = int((inside & same & (e1 >= 0) & ~scat).sum())
        out["fov_lyso_trues"] = int((inside & same & (e1 < 0)).sum())
        out["fov_randoms"] = int((inside & ~same).sum())
    return out


def run(config: Path, scans: int, background: bool, out: Path) -> dict:
    from positrongan import config as configlib
    from positrongan.simulate.driver import draw_phantom, run_scan

    cfg = configlib.load(
        [config],
        overrides=[
            "simulation.engine=fast",
            "simulation.kernel=numba",
            f"simulation.lyso_background={str(background).lower()}",
        ],
    )
    rows = []
    for k in range(scans):
        scan = f"scan_{k:03d}"
        t0 = time.process_time()
        root = out / f"{scan}_{int(background)}.root"
        info = run_scan(cfg, scan, draw_phantom(cfg, scan), root)
        info["cpu_s"] = time.process_time() - t0
        info.update(fov_counts(root, cfg["reconstruction"]["fov_mm"] / 2))
        rows.append(info)
    keys = KEYS + (LYSO_KEYS if background else ()) + FOV_KEYS + ("cpu_s",)
    table = {}
    for key in keys:
        v = np.array([r[key] for r in rows], float)
        table[key] = {"mean": round(float(v.mean()), 2), "sd": round(float(v.std(ddof=1)), 2) if v.size > 1 else None}
    return {
        "lyso_background": background,
        "lyso_activity_bq": rows[0].get("lyso_activity_bq"),
        "scans": scans,
        "counts": table,
        "per_scan": [{k: r[k] for k in keys} for r in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=10)
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    ap.add_argument("--out", type=Path, default=None, help="folder for the ROOT files (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = [run(args.config, args.scans, bg, out) for bg in (False, True)]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
