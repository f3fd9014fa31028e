"""Component-based normalisation: the sensitivity of each line of response that the projector's
ideal geometry does not model, estimated once per scanner from a simulated uniform source.

Why. The projector (``projector3d.py``) joins crystal pairs by lines at a fixed depth of
interaction and models the solid angle of an oblique LOR by ``cos^3`` (``osem3d.py``). The
simulated detector has box crystals with wedge gaps, per-crystal readout, penetration and
inter-crystal scatter, and rings that end: a LOR's real sensitivity depends on its radial offset
(the photons cross the crystals at an angle: a longer path in LYSO, more penetration into
neighbours) and on its rings (the end rings lose the photons that scatter out of the scanner).
Those factors multiply the forward model, ``ybar_i = n_i a_i (A x)_i + s_i + r_i``.

Model (component-based normalisation; Casey, Gadagkar & Newport 1995, "A component based method
for normalization in volume PET", Proc. 3rd Int. Meeting on Fully 3D Reconstruction, 67-71;
Badawi & Marsden 1999, "Developments in component-based normalization for 3D PET", Phys. Med.
Biol. 44:571-594). The factor of the LOR from crystal ``a`` in ring ``r1`` to crystal ``b`` in
ring ``r2`` whose chord has radial bin ``t`` is

    n = cos^3(theta) * g(t) * h(r1, r2)

``cos^3`` is the analytic obliquity already in the model; ``g`` is the radial (transaxial)
geometric factor, one per radial bin of the interleaved ring sinogram (even and odd ``t`` are
the two crystal-offset parities: the bins keep them apart); ``h`` is the axial factor of each
ordered ring pair (Badawi & Marsden's "axial geometric factors", which also hold the rings'
efficiencies). The per-crystal efficiencies of a real scanner (fan sums) are not a component
here: the simulated crystals of one ring are identical (the scanner is rotationally symmetric),
so their fan-sum estimate would be pure noise; what differs between rings is in ``h``.

Estimation. A uniform cylinder of activity in air (no attenuation, no phantom scatter: every
material of the source is air, mu = 1.0e-5 / mm at 511 keV, 0.1 % over 100 mm) reaching
``MARGIN_MM`` beyond the field of view and ``AXIAL_MARGIN_MM`` beyond the rings, so that no LOR
of the sinogram passes near its edge (where the detector blur would bias the ratio), is
simulated with the configured engine kernel, scanner and digitizer; its true coincidences (both
singles from the same decay) are binned by (r1, r2, radial bin), summed over views (every view
is a rotation of the others). The ideal model's expected counts of the same cell are analytic:
``cos^3 * L3`` with ``L3 = 2 sqrt(R^2 - rho^2) / cos(theta)`` the line integral through the
cylinder of radius R. With ``y`` the counts and ``m`` the model, ``g`` and ``h`` are the
maximum-likelihood factors of ``y ~ Poisson(g h m)`` found by alternating
``g(t) = sum_pairs y / sum_pairs h m`` and ``h = sum_t y / sum_t g m`` (each step is the exact
maximiser given the other), pooled over the scanner's symmetries: ``g`` over the mirror
``rho -> -rho`` (the bins ``t`` and ``N - t``), ``h`` over ``(r1, r2) ~ (r2, r1) ~ (R-1-r1, R-1-r2)``
(a transaxial mirror and the axial mirror). The
factors are scaled so that ``sum g h m = sum m``: the normalisation redistributes the
sensitivity over the LORs and leaves the image scale as without it.

The relative standard error of each factor is ``1 / sqrt(counts)`` of its cell (stored).

The source and its simulation are in ``recon/norm_source.py`` (the reconstruction, which only
applies the factors, does not import the engines).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import ArtifactError
from ..geometry.scanner import Scanner
from ..io import atomic_path, load_npz, save_npz
from .lors import SinogramGeometry

log = logging.getLogger(__name__)

# Alternations between g and h (the second changes the factors by < 1e-4; a few more are free).
SWEEPS = 6
# Format of the artifact: bumped when the arrays change meaning.
FORMAT = 1


def norm_geometry(scanner: Scanner, recon_cfg: Mapping) -> SinogramGeometry:
    """The transaxial sampling the factors are estimated on: the 3D sinogram's chords (3d mode),
    or the rebinned sinogram's (2d mode, the chords of the image square)."""
    from .projector3d import fov_geometry

    if recon_cfg["mode"] == "3d":
        return fov_geometry(scanner, recon_cfg["fov_mm"], recon_cfg["doi_mm"])
    return SinogramGeometry.for_grid(scanner, recon_cfg["fov_mm"], recon_cfg["doi_mm"])


def ring_pair_counts(
    c1: np.ndarray, c2: np.ndarray, scanner: Scanner, geom: SinogramGeometry
) -> tuple[np.ndarray, int]:
    """Coincidences binned by (ring of the chord's first crystal, ring of its second, radial bin),
    summed over views; the chord's crystals are ``geom.cell_crystals()`` (a, b), the order of the
    3D sinogram.

    Returns:
        ((rings, rings, bins) float64 counts, coincidences binned).
    """
    ra, ia = scanner.ring_and_index(np.asarray(c1, np.int64))
    rb, ib = scanner.ring_and_index(np.asarray(c2, np.int64))
    view, bin_, valid = geom.cell_of_pair(ia, ib)
    a_cell, _ = geom.cell_crystals()
    view, bin_, ra, rb, ia = view[valid], bin_[valid], ra[valid], rb[valid], ia[valid]
    swap = ia != a_cell[view, bin_]
    r1, r2 = np.where(swap, rb, ra), np.where(swap, ra, rb)
    rings, nb = scanner.rings, geom.n_bins
    flat = (r1 * rings + r2) * nb + bin_
    counts = np.bincount(flat, minlength=rings * rings * nb).astype(np.float64)
    return counts.reshape(rings, rings, nb), int(valid.sum())


def obliquity_cos2(scanner: Scanner, geom: SinogramGeometry) -> np.ndarray:
    """(rings, rings, bins) ``cos^2(theta)`` of each ring pair and radial bin, ``L_xy^2 / L^2``."""
    t = np.arange(geom.t_lo, geom.t_hi + 1)
    lxy = 2 * geom.radius_mm * np.sin(np.pi * t / geom.crystals)
    z = scanner.ring_z(np.arange(scanner.rings))
    dz = z[None, :] - z[:, None]
    return lxy[None, None, :] ** 2 / (lxy[None, None, :] ** 2 + dz[:, :, None] ** 2)


def model_counts(scanner: Scanner, geom: SinogramGeometry, radius_mm: float) -> np.ndarray:
    """The ideal model's expected counts of a uniform cylinder of radius ``radius_mm`` (longer
    than every LOR's axial reach), per (r1, r2, radial bin) summed over views, up to one constant:
    ``cos^3 * 2 sqrt(R^2 - rho^2) / cos = cos^2 * 2 sqrt(R^2 - rho^2)`` per LOR."""
    rho = geom.radial_mm()
    chord = 2 * np.sqrt(np.maximum(radius_mm**2 - rho**2, 0.0))
    return geom.n_views * obliquity_cos2(scanner, geom) * chord[None, None, :]


def _pool(a: np.ndarray) -> np.ndarray:
    """Sum over the ring-pair symmetries (r1, r2) ~ (r2, r1) ~ (R-1-r1, R-1-r2) ~ (R-1-r2, R-1-r1)."""
    at = a.transpose(1, 0, *range(2, a.ndim))
    return a + at + a[::-1, ::-1] + at[::-1, ::-1]


def estimate_components(counts: np.ndarray, model: np.ndarray, sweeps: int = SWEEPS, symmetric: bool = True) -> dict:
    """The radial and axial factors of ``counts ~ Poisson(g(t) h(r1, r2) model)`` (module docstring).

    Params:
        counts: (rings, rings, bins) measured counts of the uniform source.
        model: (rings, rings, bins) the ideal model's expected counts, any scale, > 0.
        sweeps: alternations between g and h.
        symmetric: pool g over the mirror ``rho -> -rho`` (bins ``t`` and ``N - t``) and h over the
            scanner's ring-pair symmetries.
    Returns:
        ``radial`` (bins,), ``axial`` (rings, rings), their ``*_counts`` (the counts each factor
        is estimated from: relative standard error 1 / sqrt), scaled so that
        ``sum(g h model) = sum(model)``.
    Raises:
        ValueError: a cell of the model that is not positive, or a factor with no counts.
    """
    counts = np.asarray(counts, np.float64)
    model = np.asarray(model, np.float64)
    if counts.shape != model.shape or counts.ndim != 3:
        raise ValueError(f"counts {counts.shape} and model {model.shape} must be the same (rings, rings, bins)")
    if not (model > 0).all():
        raise ValueError("the model must be positive in every cell (the source must cover every LOR)")
    radial_counts = counts.sum((0, 1))
    axial_counts = counts.sum(2)
    if symmetric:
        radial_counts = radial_counts + radial_counts[::-1]
        axial_counts = _pool(axial_counts)
    if (radial_counts <= 0).any() or (axial_counts <= 0).any():
        raise ValueError("a radial bin or ring pair has no counts: simulate more decays")
    g = np.ones(counts.shape[2])
    h = np.ones(counts.shape[:2])
    for _ in range(sweeps):
        den = (h[:, :, None] * model).sum((0, 1))
        g = radial_counts / (den + den[::-1] if symmetric else den)
        den = (g[None, None, :] * model).sum(2)
        h = axial_counts / (_pool(den) if symmetric else den)
    scale = model.sum() / (g[None, None, :] * h[:, :, None] * model).sum()
    # Split the scale evenly: g has mean 1 (weighted by the model), h carries the rest.
    gm = np.average(g, weights=model.sum((0, 1)))
    g /= gm
    h *= gm * scale
    return {"radial": g, "axial": h, "radial_counts": radial_counts, "axial_counts": axial_counts}


def save_normalisation(path: str | Path, arrays: dict) -> None:
    """Write ``recon/normalisation.npz`` atomically."""
    save_npz(path, **arrays)


def load_normalisation(path: str | Path, scanner: Scanner, geom: SinogramGeometry) -> dict[str, np.ndarray]:
    """Read a normalisation artifact and check it was made for this scanner and sinogram.

    Raises:
        ArtifactError: naming the file, when it is unreadable or made for another geometry.
    """
    norm = load_npz(
        path, required=("format", "radial", "axial", "crystals_per_ring", "rings", "t_lo", "t_hi", "trues", "seed")
    )
    if int(norm["format"]) != FORMAT:
        raise ArtifactError(f"{path}: normalisation format {int(norm['format'])}, expected {FORMAT}; rebuild it")
    mine = {
        "crystals_per_ring": scanner.crystals_per_ring,
        "rings": scanner.rings,
        "t_lo": geom.t_lo,
        "t_hi": geom.t_hi,
    }
    for key, value in mine.items():
        if int(norm[key]) != value:
            raise ArtifactError(
                f"{path}: made for {key} = {int(norm[key])}, but this reconstruction has {value} "
                "(rebuild it with the same scanner, reconstruction.mode and fov_mm)"
            )
    if "lor_radius_mm" in norm and abs(float(norm["lor_radius_mm"]) - geom.radius_mm) > 1e-6:
        raise ArtifactError(
            f"{path}: made for LORs at radius {float(norm['lor_radius_mm']):.3f} mm, but this reconstruction's are at "
            f"{geom.radius_mm:.3f} mm (reconstruction.doi_mm differs); rebuild it"
        )
    return norm


def lor_factors_3d(norm: Mapping[str, np.ndarray], proj) -> np.ndarray:
    """(ring pairs, chords) ``g(t) h(r1, r2)`` in a :class:`~.projector3d.RingProjector3D`'s
    sinogram order (the ``cos^3`` is :meth:`~.projector3d.RingProjector3D.obliquity`)."""
    nb = proj.geometry.n_bins
    bins = proj.order % nb
    h = np.asarray(norm["axial"])[proj.ring1, proj.ring2]
    return (h[:, None] * np.asarray(norm["radial"])[bins][None, :]).astype(np.float32)


def factors_2d(
    norm: Mapping[str, np.ndarray], scanner: Scanner, geom: SinogramGeometry, max_ring_difference: int | None
) -> np.ndarray:
    """(planes, views, bins) factors of the rebinned sinogram (2d mode).

    A rebinned cell sums the LORs of every ring pair of its plane; the 2D model counts them as
    ``plane weight x (A_2d x)``, while the 3D model gives each ``cos^3 g h (A x)`` with
    ``A x = (A_2d x) / cos`` for an axially slowly varying image. The cell's factor is therefore
    the mean over the plane's ring pairs of ``cos^2 g h``.
    """
    rings = scanner.rings
    dmax = rings - 1 if max_ring_difference is None else max_ring_difference
    r1, r2 = np.meshgrid(np.arange(rings), np.arange(rings), indexing="ij")
    keep = np.abs(r1 - r2) <= dmax
    per_pair = obliquity_cos2(scanner, geom) * np.asarray(norm["axial"])[:, :, None] * np.asarray(norm["radial"])
    plane = (r1 + r2)[keep]
    total = np.zeros((scanner.n_planes, geom.n_bins))
    np.add.at(total, plane, per_pair[keep])
    n_pairs = np.bincount(plane, minlength=scanner.n_planes)[:, None]
    f = total / np.maximum(n_pairs, 1)
    return np.broadcast_to(f[:, None, :], (scanner.n_planes, geom.n_views, geom.n_bins)).astype(np.float32)


def write_figure(path: str | Path, norm: Mapping[str, np.ndarray]) -> None:
    """The factors as a PNG: g against the radial offset (with its standard error), h as a ring x
    ring map, and h against the ring difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g, h = np.asarray(norm["radial"]), np.asarray(norm["axial"])
    se = 1 / np.sqrt(np.asarray(norm["radial_counts"]))
    rho = np.asarray(norm["radial_mm"])
    rings = h.shape[0]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    t = np.arange(len(g))
    for parity, style in ((0, "o-"), (1, "s-")):
        sel = (t + int(norm["t_lo"])) % 2 == parity
        ax[0].errorbar(
            rho[sel],
            g[sel],
            yerr=g[sel] * se[sel],
            fmt=style,
            ms=3,
            label=f"crystal offset {'even' if parity == 0 else 'odd'}",
        )
    ax[0].set_xlabel("radial offset of the chord [mm]")
    ax[0].set_ylabel("radial factor g")
    ax[0].legend(fontsize=8)
    ax[0].set_title("radial (transaxial) geometric factor")
    im = ax[1].imshow(h, origin="lower", cmap="viridis")
    ax[1].set_xlabel("ring r2")
    ax[1].set_ylabel("ring r1")
    ax[1].set_title("axial factor h(r1, r2)")
    fig.colorbar(im, ax=ax[1], fraction=0.046)
    d = np.abs(np.subtract.outer(np.arange(rings), np.arange(rings)))
    diag = [h[d == k].mean() for k in range(rings)]
    ax[2].plot(np.diag(h), label="h(r, r) (direct)")
    ax[2].plot(diag, label="mean h at ring difference k")
    ax[2].set_xlabel("ring r / ring difference k")
    ax[2].set_ylabel("axial factor")
    ax[2].legend(fontsize=8)
    ax[2].set_title(
        f"{int(norm['trues']):,} trues of {int(norm['decays']):,} decays;\n"
        f"SE g <= {100 * float(norm['radial_relative_se_max']):.2f} %, median SE h "
        f"{100 * float(norm['axial_relative_se_median']):.1f} %",
        fontsize=8,
    )
    fig.suptitle(str(norm["method"]), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def radial_profile(image: np.ndarray, voxel_mm, origin_mm, r_max_mm: float, width_mm: float) -> tuple:
    """Mean of ``image`` (planes, ny, nx) in rings of ``width_mm`` out to ``r_max_mm``.

    Returns:
        (ring centres in mm, means)."""
    _, ny, nx = image.shape
    y = origin_mm[1] + np.arange(ny) * voxel_mm[1]
    x = origin_mm[2] + np.arange(nx) * voxel_mm[2]
    r = np.hypot(y[:, None], x[None, :])
    edges = np.arange(0.0, r_max_mm + 1e-9, width_mm)
    means = np.array([image[:, (r >= lo) & (r < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    return (edges[:-1] + edges[1:]) / 2, means
