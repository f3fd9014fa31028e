"""A PNG a person opens to judge a reconstruction: transverse and coronal slices beside the
ground truth, the central sinogram, and the log-likelihood per iteration."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..geometry.phantom import DEFECT_LABELS
from ..io import atomic_path

OUTLINE_COLOURS = {"crack": "#00e5ff", "pit": "#76ff03", "blockage": "#ffffff", "bubble": "#2979ff"}


def method_label(recon: Mapping, recon_cfg: Mapping, fraction: float = 1.0) -> str:
    """How the image was made, e.g. ``3D OSEM 5 it x 4 subsets, 0.1 of the counts, 5 mm filter``
    (the preview's title and the DICOM series description).

    Params:
        recon: the arrays of ``recon/{scan}.npz`` (``iterations``, ``subsets``).
        recon_cfg: the ``reconstruction`` section.
        fraction: the kept fraction of the counts (short-scan twin; 1: all).
    """
    label = f"{recon_cfg['mode'].upper()} {recon_cfg['algorithm'].upper()} {int(recon['iterations'])} it"
    label += f" x {int(recon['subsets'])} subsets"
    if recon_cfg["mode"] == "3d" and recon_cfg.get("psf_fwhm_mm", 0.0) > 0:
        label += f", PSF {recon_cfg['psf_fwhm_mm']:g} mm"
    if fraction < 1:
        label += f", {fraction:g} of the counts"
    if recon_cfg["postfilter_fwhm_mm"] > 0:
        label += f", {recon_cfg['postfilter_fwhm_mm']:g} mm filter"
    return label


def write_scan_preview(
    path: str | Path, scan: str, recon: Mapping, label: str, truth: Mapping[str, np.ndarray] | None
) -> None:
    """The preview of one scan's reconstruction, titled with the scan, the method, the corrections
    applied and the counts.

    Params:
        path: output PNG.
        scan: scan id.
        recon: the arrays of ``recon/{scan}.npz``.
        label: :func:`method_label`.
        truth: the scan's truth maps (``activity``, optionally ``defects``), or None.
    """
    if "corrections" in recon:  # DICOM's CorrectedImage codes: ATTN, RAN, SCAT, NORM
        corr = ", ".join(str(c) for c in np.atleast_1d(recon["corrections"]))
    else:  # files written before the corrections list
        corr = ", ".join(c for c, on in (("AC", recon["attenuation_corrected"]), ("RC", recon["randoms_corrected"])) if on)
    title = (
        f"{scan}: {label}{' + ' + corr if corr else ''}; {int(recon['prompts'])} prompts, "
        f"{int(recon['delayed'])} delayed"
    )
    write_preview(
        path,
        recon["image"],
        recon["voxel_mm"],
        recon["origin_mm"],
        recon["sinogram"],
        recon["loglik"],
        title,
        truth=None if truth is None else truth["activity"],
        defects=None if truth is None else truth.get("defects"),
    )


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
        defects: (planes, grid, grid) defect labels, or None; the slices then cut the largest defect,
            and the true outline of every defect in them is drawn over the reconstruction.
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

    def outline(ax, labels, extent):
        # The true defect boundaries over the image: what the inspector should find there.
        if labels is None or not labels.any():
            return
        ny, nx = labels.shape
        xs = np.linspace(extent[0], extent[1], nx + 1)
        ys = np.linspace(extent[2], extent[3], ny + 1)
        xc, yc_ = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
        for name, code in DEFECT_LABELS.items():
            mask = labels == code
            if mask.any():
                ax.contour(xc, yc_, mask.astype(float), levels=[0.5], colors=[OUTLINE_COLOURS[name]], linewidths=0.9)
                ax.plot([], [], color=OUTLINE_COLOURS[name], label=name)
        ax.legend(loc="upper right", fontsize=6, framealpha=0.6)

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
    if defects is not None:
        outline(axes[0, 0], defects[zc], ext_t)
        outline(axes[1, 0], defects[:, yc, :], ext_c)
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
