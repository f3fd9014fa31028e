"""The 2D positron image dataset: transverse slices of the reconstructions with their truth.

Per scan, every plane that cuts a defect is taken, plus ``extra_slices_per_scan`` planes drawn
(seeded) among the other planes through the tube. Each slice is the mean of ``slice_planes``
planes centred on it, resized to ``image_size`` (``positrongan.slices``) and scaled to [0, 1] by
its own ``normalise_percentile`` (robust to single hot voxels of a noisy reconstruction); the
truth activity is scaled by the scan's largest activity. Scans, not slices, are split into
train/val/test so that slices of one tube never sit on both sides.

Short-scan twins (``low_count_fractions``): the same slice of each thinned reconstruction,
divided by its fraction f (a scan f times as long has f times the counts) and by the reference
slice's scale, so ``low_count[i, j]`` and ``images[i]`` are directly comparable. They are clipped
at 0 but not at 1: their noise is what an enhancement method must remove.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..io import atomic_path, load_npz
from ..slices import resize, resize_labels, slab

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def split_scans(scans: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Assign whole scans to train/val/test.

    With three or more scans every split whose fraction is positive gets at least one scan;
    with two, one is train and the other the first held-out split with a positive fraction.

    Params:
        scans: scan ids.
        fractions: (train, val, test), summing to 1.
        seed: shuffling seed.
    Returns:
        scan id -> split name.
    """
    scans = sorted(scans)
    order = [scans[i] for i in np.random.default_rng(seed).permutation(len(scans))]
    n = len(order)
    counts = [int(round(f * n)) for f in fractions]
    if n >= 3:
        for i in (1, 2):
            if fractions[i] > 0 and counts[i] == 0:
                counts[i] = 1
    elif n == 2:
        held = next((i for i in (2, 1) if fractions[i] > 0), None)
        counts = [1, 0, 0] if held is None else [1, int(held == 1), int(held == 2)]
    else:
        counts = [n, 0, 0]
    counts[0] = n - counts[1] - counts[2]
    while counts[0] < 1 and n >= 1:
        big = 1 if counts[1] >= counts[2] else 2
        counts[big] -= 1
        counts[0] += 1
    names = [SPLITS[0]] * counts[0] + [SPLITS[1]] * counts[1] + [SPLITS[2]] * counts[2]
    return dict(zip(order, names))


def select_planes(activity: np.ndarray, defects: np.ndarray, extra: int, rng: np.random.Generator):
    """Planes of one scan for the dataset.

    Params:
        activity: (planes, g, g) true activity.
        defects: (planes, g, g) defect labels (0 none).
        extra: defect-free planes through the tube to add.
        rng: seeded generator.
    Returns:
        (planes (K,) sorted int, has_defect (K,) bool).
    """
    in_tube = activity.reshape(len(activity), -1).max(1) > 0
    with_defect = defects.reshape(len(defects), -1).max(1) > 0
    cut = np.flatnonzero(with_defect & in_tube)
    others = np.flatnonzero(in_tube & ~with_defect)
    pick = rng.choice(others, size=min(extra, len(others)), replace=False) if len(others) else np.array([], int)
    planes = np.sort(np.concatenate([cut, pick]).astype(np.int64))
    return planes, with_defect[planes]


def percentile_scale(img: np.ndarray, percentile: float) -> float:
    """The value :func:`normalise` divides a slice by (0 for an empty slice)."""
    img = np.clip(img, 0, None)
    top = float(np.percentile(img, percentile))
    return top if top > 0 else float(img.max())


def normalise(img: np.ndarray, percentile: float) -> np.ndarray:
    """Scale a slice to [0, 1] by its own percentile (clipped); an empty slice stays 0."""
    top = percentile_scale(img, percentile)
    img = np.clip(img, 0, None)
    return np.clip(img / top, 0, 1).astype(np.float32) if top > 0 else np.zeros_like(img, dtype=np.float32)


def build_dataset(
    recon: dict[str, str | Path],
    truth: dict[str, str | Path],
    ds_cfg: dict,
    seed_of: Callable[..., int],
    low_count: dict[str, dict[float, str | Path]] | None = None,
) -> dict[str, np.ndarray]:
    """Assemble the dataset arrays of docs/contract.md.

    Params:
        recon: scan id -> ``recon/{scan}.npz``.
        truth: scan id -> ``truth/{scan}.npz``.
        ds_cfg: the ``dataset`` config section.
        seed_of: ``derived_seed`` bound to the config, called with a path of names.
        low_count: scan id -> {fraction -> ``recon/lowcount/{scan}_f{f}.npz``}, one per fraction of
            ``ds_cfg["low_count_fractions"]`` (None or {} when there are none).
    Returns:
        dict of arrays (images, truth, defect_labels, scan, plane, split, counts, has_defect, z_mm,
        reference_scale, and low_count, low_count_fractions when twins were given).
    Raises:
        ArtifactError: a missing, corrupt or mismatched input, naming it.
    """
    missing = sorted(set(recon) ^ set(truth))
    if missing:
        raise ArtifactError(f"scans {missing} have a reconstruction or a truth file but not both")
    if not recon:
        raise ArtifactError("no reconstructions given to build the dataset from")
    fractions = [float(f) for f in ds_cfg["low_count_fractions"]]
    low_count = low_count or {}
    for scan in recon:
        have = sorted(low_count.get(scan, {}))
        if have != sorted(fractions):
            raise ArtifactError(
                f"scan {scan}: low-count reconstructions for fractions {have}, but config key "
                f"'dataset.low_count_fractions' is {fractions}"
            )
    size, thick, pct = ds_cfg["image_size"], ds_cfg["slice_planes"], ds_cfg["normalise_percentile"]
    splits = split_scans(list(recon), ds_cfg["split"], seed_of("dataset", "split"))
    cols: dict[str, list] = {
        k: []
        for k in (
            "images",
            "truth",
            "defect_labels",
            "low_count",
            "scan",
            "plane",
            "split",
            "counts",
            "has_defect",
            "z_mm",
            "reference_scale",
        )
    }
    for scan in sorted(recon):
        r = load_npz(recon[scan], required=("image", "sinogram", "origin_mm", "voxel_mm"))
        t = load_npz(truth[scan], required=("activity", "defects"))
        image, act, lab = r["image"], t["activity"], t["defects"]
        if image.shape != act.shape or act.shape != lab.shape:
            raise ArtifactError(
                f"{truth[scan]}: truth shape {act.shape} differs from the reconstruction {recon[scan]} {image.shape}"
            )
        twins = []
        for f in fractions:
            path = low_count[scan][f]
            twin = load_npz(path, required=("image",))["image"]
            if twin.shape != image.shape:
                raise ArtifactError(f"{path}: shape {twin.shape} differs from the reference {recon[scan]} {image.shape}")
            twins.append(slab(twin, thick) / f)
        planes, has_defect = select_planes(
            act, lab, ds_cfg["extra_slices_per_scan"], np.random.default_rng(seed_of("dataset", scan))
        )
        counts = r["sinogram"].reshape(len(image), -1).sum(1)
        top = float(act.max()) or 1.0
        image, act = slab(image, thick), slab(act, thick)
        for p, d in zip(planes, has_defect):
            ref = resize(image[p], size)
            scale = percentile_scale(ref, pct)
            cols["images"].append(normalise(ref, pct))
            cols["truth"].append(np.clip(resize(act[p], size) / top, 0, 1))
            cols["defect_labels"].append(resize_labels(lab[p], size))
            cols["low_count"].append(
                [np.clip(resize(tw[p], size) / scale, 0, None) if scale > 0 else np.zeros((size, size)) for tw in twins]
            )
            cols["scan"].append(scan)
            cols["plane"].append(int(p))
            cols["split"].append(splits[scan])
            cols["counts"].append(int(round(counts[p])))
            cols["has_defect"].append(bool(d))
            cols["z_mm"].append(float(r["origin_mm"][0] + p * r["voxel_mm"][0]))
            cols["reference_scale"].append(scale)
        log.info("%s (%s): %d slices, %d cut a defect", scan, splits[scan], len(planes), int(has_defect.sum()))
    if not cols["images"]:
        raise ArtifactError("no slice passes through the tube in any truth file; nothing to put in the dataset")
    twins_out = {}
    if fractions:
        twins_out = {
            "low_count": np.asarray(cols["low_count"], dtype=np.float32),
            "low_count_fractions": np.array(fractions, dtype=np.float64),
        }
    return {
        **twins_out,
        "images": np.stack(cols["images"]).astype(np.float32),
        "truth": np.stack(cols["truth"]).astype(np.float32),
        "defect_labels": np.stack(cols["defect_labels"]).astype(np.uint8),
        "slice_planes": np.int64(thick),
        "scan": np.array(cols["scan"]),
        "plane": np.array(cols["plane"], dtype=np.int64),
        "split": np.array(cols["split"]),
        "counts": np.array(cols["counts"], dtype=np.int64),
        "has_defect": np.array(cols["has_defect"], dtype=bool),
        "z_mm": np.array(cols["z_mm"], dtype=np.float32),
        # What each reference slice (and its twins) was divided by: other slices of the same
        # plane (enhance/candidates.py) are put on the same scale with it.
        "reference_scale": np.array(cols["reference_scale"], dtype=np.float64),
        "scan_split": splits,
        "normalisation": np.array(f"per-slice percentile {ds_cfg['normalise_percentile']}, clipped to [0, 1]"),
    }


def write_overview(path: str | Path, data: dict[str, np.ndarray], per_split: int = 6) -> None:
    """PNG: for each split, a few slices (half cutting a defect, spread over the split) above
    their true activity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def spread(idx: np.ndarray, k: int) -> np.ndarray:
        return idx[np.linspace(0, len(idx) - 1, k).round().astype(int)] if len(idx) and k else idx[:0]

    rows = []
    for name in SPLITS:
        idx = np.flatnonzero(data["split"] == name)
        if not len(idx):
            continue
        defect, clean = idx[data["has_defect"][idx]], idx[~data["has_defect"][idx]]
        k = min(len(defect), per_split // 2)
        pick = np.concatenate([spread(defect, k), spread(clean, min(len(clean), per_split - k))])
        rows.append((name, pick))
    fig, axes = plt.subplots(2 * len(rows), per_split, figsize=(1.7 * per_split, 3.5 * len(rows)), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for r, (name, pick) in enumerate(rows):
        for c, i in enumerate(pick):
            axes[2 * r, c].imshow(data["images"][i], cmap="inferno", vmin=0, vmax=1, origin="lower")
            axes[2 * r + 1, c].imshow(data["truth"][i], cmap="inferno", vmin=0, vmax=1, origin="lower")
            flag = ", defect" if data["has_defect"][i] else ""
            axes[2 * r, c].set_title(f"{data['scan'][i]} plane {data['plane'][i]}{flag}", fontsize=6)
        axes[2 * r, 0].set_ylabel(f"{name}\nreconstruction", fontsize=8)
        axes[2 * r + 1, 0].set_ylabel(f"{name}\ntruth", fontsize=8)
    n = {s: int((data["split"] == s).sum()) for s in SPLITS}
    fig.suptitle(
        f"positron dataset: {len(data['images'])} slices (train {n['train']}, val {n['val']}, test {n['test']})",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# The one reader of dataset/positron.npz for every stage that consumes it (features, training,
# evaluation). The writer clips to [0, 1], so only float rounding is tolerated beyond it.
RANGE_TOLERANCE = 1e-6


def load_dataset(path: str | Path) -> dict[str, np.ndarray]:
    """Read and check ``dataset/positron.npz`` (the images and where they come from).

    Params:
        path: the dataset artifact.
    Returns:
        ``images`` (N, S, S) float32 in [0, 1], ``split`` (N,) str, and ``scan`` (N,) str and
        ``plane`` (N,) int when the file has them.
    Raises:
        ArtifactError: naming the file, when it is missing, malformed, or its images are not
            finite and in [0, 1].
    """
    data = load_npz(path, required=("images", "split"))
    images, split = data["images"], data["split"].astype(str)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or split.shape != (len(images),):
        raise ArtifactError(
            f"{path}: 'images' must be (N, S, S) with one 'split' entry per image, got {images.shape} "
            f"and {split.shape}"
        )
    images = images.astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise ArtifactError(f"{path}: 'images' contains NaN or infinite values")
    lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ArtifactError(f"{path}: 'images' must lie in [0, 1], found [{lo:.6g}, {hi:.6g}]")
    out = {"images": np.clip(images, 0.0, 1.0), "split": split}
    if "scan" in data and "plane" in data:
        out.update(scan=data["scan"].astype(str), plane=data["plane"].astype(np.int64))
    return out


def write_twins(path: str | Path, data: dict[str, np.ndarray]) -> None:
    """PNG: for each defect type, the dataset slice with its largest area of that type, as every
    short-scan twin (fewest counts first), the reference and the truth, with the true defect
    outlines: what each scan length lets an inspector see."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..geometry.phantom import DEFECT_LABELS

    labels = data["defect_labels"]
    fractions = list(data["low_count_fractions"]) if "low_count_fractions" in data else []
    order = np.argsort(fractions)
    picks = []
    for name, code in sorted(DEFECT_LABELS.items(), key=lambda kv: -kv[1]):
        area = (labels == code).reshape(len(labels), -1).sum(1)
        if area.max() > 0:
            picks.append((int(np.argmax(area)), name))
    if not picks:  # no defect anywhere: show the first slice
        picks = [(0, "no defect")]
    titles = [f"{fractions[j]:g} of the counts" for j in order] + ["reference (all counts)", "truth"]
    fig, axes = plt.subplots(len(picks), len(titles), figsize=(2.3 * len(titles), 2.4 * len(picks)), squeeze=False)
    for r, (i, name) in enumerate(picks):
        images = [data["low_count"][i, j] for j in order] + [data["images"][i], data["truth"][i]]
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(img, cmap="inferno", vmin=0, vmax=1, origin="lower")
            if labels[i].any():
                ax.contour((labels[i] > 0).astype(float), levels=[0.5], colors="cyan", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        axes[r, 0].set_ylabel(f"{data['scan'][i]} plane {data['plane'][i]}\n{name}", fontsize=8)
    fig.suptitle("short-scan twins: the same slices at fewer counts (cyan: true defect outlines)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
