"""The 2D positron image dataset: transverse slices of the reconstructions with their truth.

Per scan, every plane that cuts a defect is taken, plus ``extra_slices_per_scan`` planes drawn
(seeded) among the other planes through the tube. Each slice is resized to ``image_size`` and
scaled to [0, 1] by its own ``normalise_percentile`` (robust to single hot voxels of a noisy
reconstruction); the truth activity is scaled by the scan's largest activity. Scans, not
slices, are split into train/val/test so that slices of one tube never sit on both sides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..io import atomic_path, load_npz

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


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Area-preserving resize (anti-aliased when shrinking) to size x size."""
    from skimage.transform import resize as _resize

    if img.shape == (size, size):
        return img.astype(np.float32)
    return _resize(img, (size, size), order=1, anti_aliasing=img.shape[0] > size, preserve_range=True).astype(
        np.float32
    )


def normalise(img: np.ndarray, percentile: float) -> np.ndarray:
    """Scale a slice to [0, 1] by its own percentile (clipped); an empty slice stays 0."""
    img = np.clip(img, 0, None)
    top = np.percentile(img, percentile)
    if top <= 0:
        top = img.max()
    return np.clip(img / top, 0, 1).astype(np.float32) if top > 0 else np.zeros_like(img, dtype=np.float32)


def build_dataset(
    recon: dict[str, str | Path],
    truth: dict[str, str | Path],
    ds_cfg: dict,
    seed_of: Callable[..., int],
) -> dict[str, np.ndarray]:
    """Assemble the dataset arrays of docs/contract.md.

    Params:
        recon: scan id -> ``recon/{scan}.npz``.
        truth: scan id -> ``truth/{scan}.npz``.
        ds_cfg: the ``dataset`` config section.
        seed_of: ``derived_seed`` bound to the config, called with a path of names.
    Returns:
        dict of arrays (images, truth, scan, plane, split, counts, has_defect, z_mm, ...).
    Raises:
        ArtifactError: a missing, corrupt or mismatched input, naming it.
    """
    missing = sorted(set(recon) ^ set(truth))
    if missing:
        raise ArtifactError(f"scans {missing} have a reconstruction or a truth file but not both")
    if not recon:
        raise ArtifactError("no reconstructions given to build the dataset from")
    size = ds_cfg["image_size"]
    splits = split_scans(list(recon), ds_cfg["split"], seed_of("dataset", "split"))
    cols: dict[str, list] = {
        k: [] for k in ("images", "truth", "scan", "plane", "split", "counts", "has_defect", "z_mm")
    }
    for scan in sorted(recon):
        r = load_npz(recon[scan], required=("image", "sinogram", "origin_mm", "voxel_mm"))
        t = load_npz(truth[scan], required=("activity", "defects"))
        image, act, lab = r["image"], t["activity"], t["defects"]
        if image.shape != act.shape or act.shape != lab.shape:
            raise ArtifactError(
                f"{truth[scan]}: truth shape {act.shape} differs from the reconstruction {recon[scan]} {image.shape}"
            )
        planes, has_defect = select_planes(
            act, lab, ds_cfg["extra_slices_per_scan"], np.random.default_rng(seed_of("dataset", scan))
        )
        counts = r["sinogram"].reshape(len(image), -1).sum(1)
        top = float(act.max()) or 1.0
        for p, d in zip(planes, has_defect):
            cols["images"].append(normalise(resize(image[p], size), ds_cfg["normalise_percentile"]))
            cols["truth"].append(np.clip(resize(act[p], size) / top, 0, 1))
            cols["scan"].append(scan)
            cols["plane"].append(int(p))
            cols["split"].append(splits[scan])
            cols["counts"].append(int(round(counts[p])))
            cols["has_defect"].append(bool(d))
            cols["z_mm"].append(float(r["origin_mm"][0] + p * r["voxel_mm"][0]))
        log.info("%s (%s): %d slices, %d cut a defect", scan, splits[scan], len(planes), int(has_defect.sum()))
    if not cols["images"]:
        raise ArtifactError("no slice passes through the tube in any truth file; nothing to put in the dataset")
    return {
        "images": np.stack(cols["images"]).astype(np.float32),
        "truth": np.stack(cols["truth"]).astype(np.float32),
        "scan": np.array(cols["scan"]),
        "plane": np.array(cols["plane"], dtype=np.int64),
        "split": np.array(cols["split"]),
        "counts": np.array(cols["counts"], dtype=np.int64),
        "has_defect": np.array(cols["has_defect"], dtype=bool),
        "z_mm": np.array(cols["z_mm"], dtype=np.float32),
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
