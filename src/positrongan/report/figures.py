"""grid.png: real held-out images beside every method's samples, one row per set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path


def sample_grid(rows: list[tuple[str, np.ndarray]], path: str | Path, columns: int) -> None:
    """Write a labelled grid of images.

    Params:
        rows: (label, images (N, S, S) in [0, 1]) per row; the first ``columns`` images are shown
            (fewer when a set is smaller).
        path: output PNG.
        columns: images per row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.2 * columns + 1.6, 1.25 * len(rows)), squeeze=False, dpi=100
    )
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                # One fixed intensity range for every panel, so brightness is comparable.
                ax.imshow(images[c], cmap="inferno", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    size = rows[0][1].shape[-1]
    fig.suptitle(f"Held-out real positron images and generated samples ({size}x{size} px, intensity 0-1)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def spread(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` images evenly spaced through a set (the test set is ordered by scan)."""
    idx = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    return images[idx]
