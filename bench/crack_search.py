"""Would an inspector who scans the wall find each crack and pit? The search score of
:func:`positrongan.recon.detectability.wall_search` (a window sliding round the tube's wall),
against the pipeline's pixel CNR, for the reference images of one or more runs and, with
--lowcount, their short-scan twins (docs/detectability.md, "Finding cracks and pits along the wall").

Writes one CSV row per crack and pit and image, prints a JSON summary per type and counts (the
target population of each type: N, the median search SNR with its sign-test 95 % interval, the
fraction found with its Clopper-Pearson 95 % interval, along the whole length and per slice,
Spearman's rho of the search SNR with the pixel CNR), with --decoys the chance rate (decoy
slits of intact wall where no defect is, scored by the same search), and with --png a figure.

Run (the runs' own post-filtered images; nothing is reconstructed):
    python bench/crack_search.py --results results_s0 results_s1 results_s2 results_s3 \\
        --lowcount --decoys --csv search.csv --png docs/figures/crack_search.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from positrongan.report.detectability import CNR_TARGET, in_target_population, median_ci95  # noqa: E402

REFERENCE = "reference"


def _images(results: Path, lowcount: bool):
    """(scan, counts tag, recon npz path) of a run: the reference images, then the twins."""
    for path in sorted((results / "recon").glob("scan_*.npz")):
        yield path.stem, REFERENCE, path
        if lowcount:
            for twin in sorted((results / "recon" / "lowcount").glob(f"{path.stem}_f*.npz")):
                tag = twin.stem[len(path.stem) + 1 :]
                if re.fullmatch(r"f[0-9.e+-]+", tag):  # not the _iterations candidates
                    yield path.stem, tag, twin


def score(results: list[str], config: list[str], lowcount: bool) -> pd.DataFrame:
    """The rows of :func:`positrongan.recon.detectability.score_scan` (pixel CNR and wall search)
    of every crack and pit of every image, with its run, scan and counts."""
    from positrongan.config import load
    from positrongan.geometry.grid import ReconGrid
    from positrongan.geometry.scanner import Scanner
    from positrongan.io import load_npz
    from positrongan.recon.detectability import HOT, score_scan
    from positrongan.recon.driver import load_truth

    cfg = load(config)
    grid = ReconGrid.from_config(Scanner.from_config(cfg["scanner"]), cfg["reconstruction"])
    rows = []
    for folder in map(Path, results):
        truths = {}
        for scan, tag, path in _images(folder, lowcount):
            if scan not in truths:
                truths[scan] = load_truth(folder / "truth" / f"{scan}.npz", grid)
            scored = score_scan(load_npz(path, required=("image",))["image"], truths[scan], cfg["dataset"])
            if scored is None:
                raise SystemExit(f"{folder}/truth/{scan}.npz has no defect_index (an older truth); rerun the run")
            hot = [r for r in scored if r["type"] in HOT]
            rows += [{"results": folder.name, "scan": scan, "counts": tag, **r} for r in hot]
            print(f"{folder.name}/{scan} {tag}: {len(hot)} cracks and pits", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    df["target"] = [in_target_population(r) for r in df[["type", "size_mm", "depth_fraction"]].to_dict("records")]
    return df


def decoys(results: list[str], config: list[str], turns=(60, 120, 180, 240, 300)) -> dict:
    """How often a place with no defect is "found": for every target crack of every reference
    image, a decoy slit (2 px of arc of intact wall, in the same planes) at each azimuth turned by
    ``turns`` degrees from the crack, scored as a crack by the same search (the real cracks and
    pits stay out of its null). Decoys within the clearance of a real crack or pit are skipped."""
    from positrongan.config import load
    from positrongan.geometry.grid import ReconGrid
    from positrongan.geometry.scanner import Scanner
    from positrongan.io import load_npz
    from positrongan.recon import detectability as det
    from positrongan.recon.driver import load_truth

    cfg = load(config)
    grid = ReconGrid.from_config(Scanner.from_config(cfg["scanner"]), cfg["reconstruction"])
    size, planes_per_slice = cfg["dataset"]["image_size"], cfg["dataset"]["slice_planes"]
    clear_px = det.SEARCH_CLEAR_WINDOWS * det.SEARCH_WINDOW_PX
    found, snr = [], []
    for folder in map(Path, results):
        for path in sorted((folder / "recon").glob("scan_*.npz")):
            truth = load_truth(folder / "truth" / path.name, grid)
            defects = det.defect_list(truth)
            image = load_npz(path, required=("image",))["image"]
            image, act, mu, index = det.at_dataset_scale(
                image, truth["activity"], truth["mu"], truth["defect_index"], size, planes_per_slice
            )
            hot = np.isin(index, [k + 1 for k, d in enumerate(defects) if d["type"] in det.HOT])
            intact = det.intact_wall(act, mu, index)
            for k, d in enumerate(defects):
                if not (
                    d["type"] == "crack" and in_target_population({"type": "crack", "size_mm": d["size"]["width_mm"]})
                ):
                    continue
                planes = np.flatnonzero((index == k + 1).reshape(len(index), -1).any(1))
                # The search's own geometry, and the crack's azimuth in each plane (once, not per turn).
                polar = {int(p): det.section_polar(act[p], mu[p]) for p in planes}
                polar = {p: g for p, g in polar.items() if g is not None}
                azimuth = {p: np.angle(np.exp(1j * phi[index[p] == k + 1]).mean()) for p, (phi, _) in polar.items()}
                for turn in np.deg2rad(turns):
                    fake = np.zeros_like(hot)
                    for p, (phi, radius) in polar.items():
                        theta = azimuth[p] + turn
                        fake[p] = intact[p] & (radius * det.angle_gap(phi, theta) <= 1.0)
                        near = radius[hot[p]] * det.angle_gap(phi[hot[p]], theta)
                        if near.size and near.min() <= 2 * clear_px:
                            fake[:] = False
                            break
                    if not fake.any():
                        continue
                    fake_index = np.where(fake, len(defects) + 1, index).astype(index.dtype)
                    rows = det.search_scaled(
                        image, act, mu, fake_index, defects + [{"type": "crack"}], det.SEARCH_WINDOW_PX
                    )
                    row = rows[-1]
                    if not np.isnan(row["found_length"]):
                        found.append(row["found_length"])
                        snr.append(row["snr_length"])
    snr = np.array(snr)
    return {
        "decoys": len(found),
        "found": _fraction(pd.Series(found)),
        "snr_mean": round(float(np.nanmean(snr)), 2),
        "snr_sd": round(float(np.nanstd(snr)), 2),
        "snr_ge_3": int(np.sum(snr >= 3)),
    }


def _fraction(found: pd.Series) -> dict:
    v = found.dropna()
    k = int(round(float(v.sum())))
    if not len(v):
        return {"n": 0}
    ci = binomtest(k, len(v)).proportion_ci(0.95)  # Clopper-Pearson
    return {
        "n": int(len(v)),
        "found": k,
        "fraction": round(k / len(v), 3),
        "ci95": [round(ci.low, 3), round(ci.high, 3)],
    }


def summarise(df: pd.DataFrame) -> dict:
    out = {}
    for (kind, tag), part in df[df["target"]].groupby(["type", "counts"]):
        snr = part["search_snr"].dropna()
        lo, hi = median_ci95(snr)
        both = part.dropna(subset=["search_snr", "cnr"])
        entry = {
            "n": int(len(part)),
            "median_search_snr": round(float(snr.median()), 2) if len(snr) else math.nan,
            "search_snr_ci95": [round(lo, 2), round(hi, 2)],
            "search_found": _fraction(part["search_found"]),
            "mean_found_slices": round(float(part["search_found_slices"].mean()), 3),
            "median_search_snr_slice": round(float(part["search_snr_slice"].median()), 2),
            "median_pixel_cnr": round(float(part["cnr"].median()), 2),
            "pixel_cnr_reach_target": int((part["cnr"] >= CNR_TARGET[kind]).sum()),
        }
        if len(both) >= 4:
            r = spearmanr(both["search_snr"], both["cnr"])
            entry["spearman_snr_vs_cnr"] = {"rho": round(float(r.statistic), 3), "p": float(f"{r.pvalue:.2g}")}
        out[f"{kind} ({tag})"] = entry
    return out


def figure(df: pd.DataFrame, path: str, chance: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ref = df[(df["counts"] == REFERENCE) & df["target"]]
    ax = axes[0]
    for kind, colour in (("crack", "tab:red"), ("pit", "tab:blue")):
        part = ref[ref["type"] == kind]
        hit = part["search_found"] == 1
        ax.scatter(part.loc[hit, "cnr"], part.loc[hit, "search_snr"], c=colour, s=28, label=f"{kind}: found")
        ax.scatter(part.loc[~hit, "cnr"], part.loc[~hit, "search_snr"], facecolors="none", edgecolors=colour, s=28,
                   label=f"{kind}: not the brightest spot of the wall")  # fmt: skip
    ax.axvline(CNR_TARGET["crack"], color="k", ls="--", lw=1, label="pixel CNR target (cracks, pits)")
    ax.set_xlabel("pixel CNR (the pipeline's detectability.csv)")
    ax.set_ylabel("search SNR along the defect's length")
    ax.set_title("reference images, target population", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)

    ax = axes[1]
    tags = [REFERENCE] + sorted({t for t in df["counts"] if t != REFERENCE}, reverse=True)
    width = 0.38
    for j, (kind, colour) in enumerate((("crack", "tab:red"), ("pit", "tab:blue"))):
        for i, tag in enumerate(tags):
            part = df[df["target"] & (df["type"] == kind) & (df["counts"] == tag)]
            f = _fraction(part["search_found"])
            if not f["n"]:
                continue
            x = i + (j - 0.5) * width
            ax.bar(x, f["fraction"], width, color=colour, alpha=0.8, label=kind if i == 0 else None)
            ax.errorbar(x, f["fraction"], yerr=[[f["fraction"] - f["ci95"][0]], [f["ci95"][1] - f["fraction"]]],
                        color="k", capsize=3, lw=1)  # fmt: skip
            ax.text(x, 0.02, f"{f['found']}/{f['n']}", ha="center", fontsize=7, color="white")
    if chance:
        ax.axhline(
            chance["fraction"], color="k", ls=":", lw=1, label=f"decoys, no defect: {chance['found']}/{chance['n']}"
        )
    ax.set_xticks(range(len(tags)), [t if t == REFERENCE else f"twin {t}" for t in tags])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction found (brightest spot of the wall), 95 % CI")
    ax.set_title("found along the whole length, by counts", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.suptitle(f"Finding cracks and pits along the wall: {ref['results'].nunique()} runs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", nargs="+", required=True, help="results folders of pipeline runs")
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config" / "config.yaml")], help="the runs' config")
    ap.add_argument("--lowcount", action="store_true", help="also score recon/lowcount/ (the short-scan twins)")
    ap.add_argument("--csv", help="write the per-defect rows here")
    ap.add_argument("--png", help="write the figure here")
    ap.add_argument("--decoys", action="store_true", help="also score decoy slits of intact wall (the chance rate)")
    args = ap.parse_args(argv)
    df = score(args.results, args.config, args.lowcount)
    if df.empty:
        raise SystemExit(f"{args.results}: no crack or pit in any reconstruction")
    if args.csv:
        df.to_csv(args.csv, index=False)
    out = summarise(df)
    if args.decoys:
        out["decoys (reference)"] = decoys(args.results, args.config)
    print(json.dumps(out, indent=1))
    if args.png:
        figure(df, args.png, out["decoys (reference)"]["found"] if args.decoys else None)


if __name__ == "__main__":
    main()
