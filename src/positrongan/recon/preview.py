"""A PNG a person opens to judge a reconstruction: transverse and coronal slices beside the
ground truth, the central sinogram, and the log-likelihood per iteration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path


def write_preview(
    path: str | Path,
    image: np.ndarray,
    voxel_mm: np.ndarray,
    origin_mm: np.ndarray,
    sinogram: np.ndarray,
    loglik: np.ndarray,
    title: str,
    truth: np.ndarray | None = None,
    defects: np.ndarray | None = None,
) -> None:
    """Write the preview figure.

    Params:
        path: output PNG.
        image: (planes, grid, grid) reconstruction [z, y, x].
        voxel_mm, origin_mm: (z, y, x) spacing and centre of voxel 0.
        sinogram: (planes, views, bins) prompts.
        loglik: log-likelihood per iteration.
        title: figure title (scan id, algorithm, counts).
        truth: (planes, grid, grid) true activity, or None.
        defects: (planes, grid, grid) defect labels, or None; the slices then cut the largest defect.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planes, g, _ = image.shape
    if defects is not None and defects.any():
        # Cut through the largest defect: that is what an inspector looks for.
        zc = int(np.argmax((defects > 0).reshape(planes, -1).sum(1)))
        yc = int(np.argmax((defects > 0).sum(axis=(0, 2))))
    else:
        # The transverse slice with the most counts shows the part; the coronal cut goes through its centre.
        zc = int(np.argmax(sinogram.reshape(planes, -1).sum(1))) if sinogram.any() else planes // 2
        profile = image.sum(axis=(0, 2))
        yc = int(np.argmax(profile)) if profile.any() else g // 2
    dz, dy, dx = (float(v) for v in voxel_mm)
    z0, y0, x0 = (float(v) for v in origin_mm)
    ext_t = [x0 - dx / 2, x0 + (g - 0.5) * dx, y0 - dy / 2, y0 + (g - 0.5) * dy]
    ext_c = [x0 - dx / 2, x0 + (g - 0.5) * dx, z0 - dz / 2, z0 + (planes - 0.5) * dz]
    ncols = 3 if truth is not None else 2
    fig, axes = plt.subplots(2, ncols, figsize=(4.2 * ncols, 8.0))
    vmax = np.percentile(image, 99.9) or None

    def show(ax, data, extent, label, xlabel, ylabel, vmax=None, aspect="equal"):
        im = ax.imshow(data, origin="lower", extent=extent, cmap="inferno", vmin=0, vmax=vmax, aspect=aspect)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)

    zmm = z0 + zc * dz
    ymm = y0 + yc * dy
    show(axes[0, 0], image[zc], ext_t, f"reconstruction, transverse z = {zmm:.1f} mm", "x [mm]", "y [mm]", vmax)
    show(
        axes[1, 0],
        image[:, yc, :],
        ext_c,
        f"reconstruction, coronal y = {ymm:.1f} mm",
        "x [mm]",
        "z [mm]",
        vmax,
        aspect="auto",
    )
    if truth is not None:
        show(axes[0, 1], truth[zc], ext_t, "true activity, same slice", "x [mm]", "y [mm]")
        show(axes[1, 1], truth[:, yc, :], ext_c, "true activity, same coronal slice", "x [mm]", "z [mm]", aspect="auto")
    ax_s = axes[0, ncols - 1]
    ax_s.imshow(sinogram[zc], cmap="gray_r", aspect="auto", origin="lower")
    ax_s.set_title(f"prompts sinogram, plane {zc} ({int(sinogram[zc].sum())} counts)", fontsize=9)
    ax_s.set_xlabel("radial bin")
    ax_s.set_ylabel("view")
    ax_l = axes[1, ncols - 1]
    ax_l.plot(np.arange(1, len(loglik) + 1), loglik, "o-")
    ax_l.set_title("Poisson log-likelihood", fontsize=9)
    ax_l.set_xlabel("iteration")
    ax_l.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    ax_l.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
