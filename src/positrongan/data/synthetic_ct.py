"""A procedural body-CT corpus in Hounsfield units, written in the DeepLesion layout.

It stands in for DeepLesion when no download is possible, so the CT prior and everything
after it run anywhere. Each *series* is one synthetic patient (body size, fat, contrast
phase, pixel spacing drawn once) scanned over a range of axial positions ``t`` from the
upper chest (t = 0) to the lower abdomen (t = 1); organs appear and grow with ``t`` the way
they do in a real series (lungs shrink, the liver grows under the right lung, kidneys and
bowel appear below). Lesions are 3D spheres, so consecutive slices show one growing and
shrinking. Image formation: tissue HU values, a smooth texture, the scanner's point spread
(Gaussian MTF) and ramp-filtered noise (the noise power spectrum of filtered back-projection),
a table under the patient, and -1024 outside the reconstruction circle.

Layout written (DeepLesion's): ``Images_png/<patient>_<study>_<series>/<slice>.png`` as uint16
with HU = value - 32768, and ``DL_info.csv`` with one row per lesion on the series' key slice.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft

log = logging.getLogger(__name__)

HU_OFFSET = 32768
AIR = -1000.0
SLICE_MM = 5.0

# Tissue HU (means; each patient perturbs them a little).
FAT = -100.0
MUSCLE = 50.0
BLOOD = 40.0
LUNG = -860.0
LIVER = 60.0
SPLEEN = 48.0
KIDNEY = 32.0
BONE_CORTEX = 900.0
BONE_MARROW = 230.0
CSF = 15.0


@dataclass
class Patient:
    """What stays fixed within one series (drawn once per synthetic patient)."""

    half_width_mm: float
    half_depth_mm: float
    fat_mm: float
    muscle_mm: float
    spacing_mm: float
    contrast: float  # 0 = unenhanced, 1 = portal-venous phase
    noise_hu: float
    mtf_sigma_px: float
    offset_px: tuple[float, float]
    wobble: np.ndarray  # Fourier coefficients of the body outline
    hu_jitter: dict
    lesions: list = field(default_factory=list)  # (x_mm, y_mm, z_mm, radius_mm, delta_hu, organ)


def draw_patient(rng: np.random.Generator, n_slices: int) -> Patient:
    """Draw one patient and 0-3 lesions inside the axial range of its series."""
    lesions = []
    for _ in range(rng.integers(1, 4)):
        organ = rng.choice(["liver", "lung", "soft"], p=[0.45, 0.3, 0.25])
        lesions.append(
            (
                float(rng.uniform(-0.6, 0.6)),  # normalised body coordinates, placed in an organ later
                float(rng.uniform(-0.5, 0.4)),
                float(rng.uniform(0, (n_slices - 1) * SLICE_MM)),
                float(rng.uniform(4.0, 18.0)),
                float(rng.choice([-1, 1]) * rng.uniform(25, 70)),
                str(organ),
            )
        )
    return Patient(
        half_width_mm=float(rng.uniform(135, 190)),
        half_depth_mm=float(rng.uniform(95, 135)),
        fat_mm=float(rng.uniform(6, 35)),
        muscle_mm=float(rng.uniform(8, 18)),
        spacing_mm=float(rng.uniform(0.62, 0.92)),
        contrast=float(rng.random() < 0.7),
        noise_hu=float(rng.uniform(8, 22)),
        mtf_sigma_px=float(rng.uniform(0.5, 1.0)),
        offset_px=(float(rng.normal(0, 8)), float(rng.normal(-20, 8))),
        wobble=rng.normal(0, 1.0, size=(4, 2)) * np.array([[0.03], [0.015], [0.01], [0.006]]),
        hu_jitter={k: float(rng.normal(0, 6)) for k in ("fat", "muscle", "liver", "spleen", "kidney", "lung")},
        lesions=lesions,
    )


class _Canvas:
    """An HU image with coordinates in mm about the body centre, and shape painters that only
    touch the bounding box of each shape (most organs cover a small part of the slice)."""

    def __init__(self, size: int, spacing: float, centre_px: tuple[float, float]):
        self.size = size
        self.spacing = spacing
        self.cx, self.cy = centre_px
        self.hu = np.full((size, size), AIR, dtype=np.float32)
        self.texture_amp = np.zeros((size, size), dtype=np.float32)
        self.lung = np.zeros((size, size), dtype=bool)

    def _window(self, x_mm: float, y_mm: float, reach_mm: float):
        r = reach_mm / self.spacing + 2
        c0 = int(max(0, math.floor(self.cx + x_mm / self.spacing - r)))
        c1 = int(min(self.size, math.ceil(self.cx + x_mm / self.spacing + r)))
        r0 = int(max(0, math.floor(self.cy + y_mm / self.spacing - r)))
        r1 = int(min(self.size, math.ceil(self.cy + y_mm / self.spacing + r)))
        if c0 >= c1 or r0 >= r1:
            return None
        xs = (np.arange(c0, c1, dtype=np.float32) - self.cx) * self.spacing
        ys = (np.arange(r0, r1, dtype=np.float32) - self.cy) * self.spacing
        return (slice(r0, r1), slice(c0, c1)), xs[None, :], ys[:, None]

    def ellipse(
        self,
        x_mm: float,
        y_mm: float,
        ax_mm: float,
        ay_mm: float,
        angle: float = 0.0,
        wobble: np.ndarray | None = None,
    ):
        """Boolean mask (within its window) of a rotated ellipse whose radius varies with the
        polar angle as 1 + sum_k c_k cos(k theta + phi_k), k = 2, 3, ... (organic outlines)."""
        if ax_mm <= 0 or ay_mm <= 0:
            return None
        reach = max(ax_mm, ay_mm) * (1.0 + (0 if wobble is None else float(np.abs(wobble[:, 0]).sum())))
        win = self._window(x_mm, y_mm, reach)
        if win is None:
            return None
        sl, xs, ys = win
        dx, dy = xs - x_mm, ys - y_mm
        ca, sa = math.cos(angle), math.sin(angle)
        u = (ca * dx + sa * dy) / ax_mm
        v = (-sa * dx + ca * dy) / ay_mm
        rho = np.sqrt(u * u + v * v)
        if wobble is not None:
            theta = np.arctan2(v, u)
            bound = 1.0
            for k, (c, phi) in enumerate(wobble, start=2):
                bound = bound + c * np.cos(k * theta + phi)
            return sl, rho <= bound
        return sl, rho <= 1.0

    def paint(self, shape, value: float, texture: float = 4.0, within=None, lung: bool = False) -> None:
        """Set HU inside ``shape`` (optionally only where the current HU is in ``within``);
        ``lung`` marks the pixels as aerated lung (where vessels are drawn), others unmark it."""
        if shape is None:
            return
        sl, mask = shape
        if within is not None:
            cur = self.hu[sl]
            mask = mask & (cur >= within[0]) & (cur <= within[1])
        self.hu[sl][mask] = value
        self.texture_amp[sl][mask] = texture
        self.lung[sl][mask] = lung


@functools.lru_cache(maxsize=4)
def _freq2(size: int) -> np.ndarray:
    """Squared spatial frequency (cycles/pixel)^2 on the rfft2 grid, float32 so the FFTs stay single precision."""
    return (np.fft.rfftfreq(size)[None, :] ** 2 + np.fft.fftfreq(size)[:, None] ** 2).astype(np.float32)


def _smooth_field(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """A Gaussian random field of unit standard deviation, correlation length ~sigma_px."""
    spec = fft.rfft2(rng.standard_normal((size, size), dtype=np.float32))
    out = fft.irfft2(spec * np.exp(np.float32(-2 * (math.pi * sigma_px) ** 2) * _freq2(size)), s=(size, size))
    return (out / (out.std() + 1e-12)).astype(np.float32)


def _image_formation(rng: np.random.Generator, hu: np.ndarray, mtf_sigma_px: float, noise_hu: float) -> np.ndarray:
    """Blur with the scanner PSF and add correlated noise, in one Fourier pass.

    FBP noise is white noise seen through the ramp filter and the reconstruction kernel's
    apodisation: its power spectrum rises ~|f| and rolls off at high f, so the noise is
    fine-grained but not pixel-independent (what CT noise looks like)."""
    size = hu.shape[0]
    f2 = _freq2(size)
    mtf = np.exp(np.float32(-2 * (math.pi * mtf_sigma_px) ** 2) * f2)
    nps = np.sqrt(f2) * np.exp(-f2 / np.float32(0.3**2))
    # Parseval on the rfft grid is close enough to the full grid for a noise level.
    nps /= np.float32(math.sqrt(float((nps**2).mean())))  # white input of unit variance -> ~unit-variance output
    white = rng.standard_normal((size, size), dtype=np.float32)
    spec = fft.rfft2(hu) * mtf + fft.rfft2(white) * nps * noise_hu
    return fft.irfft2(spec, s=(size, size)).astype(np.float32)


def synthetic_slice(
    rng: np.random.Generator, patient: Patient, t: float, z_mm: float, size: int
) -> tuple[np.ndarray, list]:
    """One axial slice of ``patient`` at body position ``t`` (0 chest ... 1 lower abdomen).

    Params:
        rng: random stream of this slice (noise, texture, bowel).
        patient: from :func:`draw_patient`.
        t: axial position in the body.
        z_mm: position within the series (for the 3D lesions).
        size: side in pixels.
    Returns:
        (HU image (size, size) float32, list of lesion boxes on this slice
        ``(x0, y0, x1, y1, diameter_px, delta_hu)`` in pixels).
    """
    p = patient
    s = p.spacing_mm * 512.0 / size  # keep the field of view of a 512 px slice
    cv = _Canvas(size, s, (size / 2 + p.offset_px[0] * size / 512, size / 2 + p.offset_px[1] * size / 512))
    j = p.hu_jitter
    a, b = p.half_width_mm, p.half_depth_mm
    chest = float(np.clip(1.0 - t / 0.55, 0.0, 1.0))  # 1 in the upper chest, 0 below the lung bases
    abdomen = float(np.clip((t - 0.3) / 0.4, 0.0, 1.0))
    contrast = p.contrast

    # Table under the patient: a foam core between two thin carbon shells.
    table_y = b + 4.0
    c0 = int(max(0, cv.cx - 235.0 / s))
    c1 = int(min(size, cv.cx + 235.0 / s))
    for y0, y1, hu_v in ((0.0, 3.0, 150.0), (3.0, 18.0, -750.0), (18.0, 21.0, 150.0)):
        r0 = int(np.clip(cv.cy + (table_y + y0) / s, 0, size))
        r1 = int(np.clip(cv.cy + (table_y + y1) / s, 0, size))
        cv.hu[r0:r1, c0:c1] = hu_v
        cv.texture_amp[r0:r1, c0:c1] = 3.0

    # Body: skin/fat, muscle wall, then the visceral cavity.
    cv.paint(cv.ellipse(0, 0, a, b, 0, p.wobble), FAT + j["fat"], 6.0)
    ma, mb = a - p.fat_mm, b - p.fat_mm * 0.8
    cv.paint(cv.ellipse(0, 0, ma, mb, 0, p.wobble), MUSCLE + j["muscle"], 5.0)
    ia, ib = ma - p.muscle_mm, mb - p.muscle_mm
    visceral = FAT + j["fat"] + 10.0 if abdomen > 0 else 20.0  # visceral fat / mediastinal soft tissue
    cv.paint(cv.ellipse(0, -0.05 * ib, ia, ib * 0.92, 0, p.wobble), visceral, 6.0)

    # Paraspinal and psoas muscles.
    for side in (-1, 1):
        cv.paint(cv.ellipse(side * 0.22 * a, 0.72 * b, 0.16 * a, 0.2 * b, side * 0.3), MUSCLE + j["muscle"], 5.0)
        if abdomen > 0.5:
            r = 0.06 * a * abdomen
            cv.paint(cv.ellipse(side * 0.17 * a, 0.42 * b, r, r * 1.3), MUSCLE + j["muscle"], 5.0)

    # Lungs: large in the chest; the right lung (image left) ends higher, above the liver dome.
    for side, extra in ((-1, 0.05), (1, 0.0)):
        size_f = float(np.clip(1.0 - (t - extra) / (0.55 - extra), 0.0, 1.0)) ** 0.6
        if size_f > 0.05:
            wob = p.wobble * 1.5
            shape = cv.ellipse(side * 0.5 * ia, 0.0, 0.4 * ia * size_f, 0.8 * ib * size_f, 0.0, wob)
            cv.paint(shape, LUNG + j["lung"], 35.0, lung=True)

    # Heart and mediastinum (chest only).
    if 0.1 < t < 0.5:
        h = math.sin(math.pi * (t - 0.1) / 0.4)
        cv.paint(cv.ellipse(0.12 * ia, -0.15 * ib, 0.3 * ia * h, 0.38 * ib * h, -0.5), MUSCLE + 5.0, 4.0)
        cv.paint(cv.ellipse(0.1 * ia, -0.13 * ib, 0.22 * ia * h, 0.28 * ib * h, -0.5), BLOOD + 120.0 * contrast, 4.0)

    # Liver (patient's right = image left), spleen, stomach, kidneys, bowel.
    if t > 0.35:
        g = float(np.clip((t - 0.35) / 0.25, 0.0, 1.0)) * float(np.clip((1.15 - t) / 0.35, 0.0, 1.0))
        cv.paint(
            cv.ellipse(-0.38 * ia, -0.05 * ib, 0.55 * ia * g, 0.8 * ib * g, 0.3, p.wobble * 2),
            LIVER + j["liver"] + 45.0 * contrast,
            5.0,
        )
    if 0.45 < t < 0.85:
        g = math.sin(math.pi * (t - 0.45) / 0.4)
        cv.paint(
            cv.ellipse(0.55 * ia, 0.3 * ib, 0.2 * ia * g, 0.35 * ib * g, -0.6),
            SPLEEN + j["spleen"] + 50 * contrast,
            5.0,
        )
        cv.paint(cv.ellipse(0.3 * ia, -0.35 * ib, 0.25 * ia * g, 0.3 * ib * g, 0.4), 15.0, 3.0)  # stomach fluid
        cv.paint(cv.ellipse(0.3 * ia, -0.55 * ib, 0.18 * ia * g, 0.1 * ib * g, 0.4), AIR, 0.0)  # gas on top
    if t > 0.6:
        g = math.sin(math.pi * min(1.0, (t - 0.6) / 0.45))
        for side in (-1, 1):
            kx, ky = side * 0.33 * ia, 0.45 * ib
            cv.paint(
                cv.ellipse(kx, ky, 0.12 * ia * g, 0.2 * ib * g, side * 0.5), KIDNEY + j["kidney"] + 120 * contrast, 4.0
            )
            cv.paint(cv.ellipse(kx - side * 0.05 * ia, ky, 0.04 * ia * g, 0.08 * ib * g, side * 0.5), FAT, 4.0)
    if t > 0.55:
        for _ in range(int(6 + 14 * abdomen)):
            bx, by = rng.uniform(-0.6, 0.6) * ia, rng.uniform(-0.7, 0.2) * ib
            r = rng.uniform(8, 22)
            wall = 35.0 + 40 * contrast
            cv.paint(
                cv.ellipse(bx, by, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi)), wall, 4.0, within=(-150, 80)
            )
            content = AIR if rng.random() < 0.2 else rng.uniform(0, 25)
            cv.paint(cv.ellipse(bx, by, r * 0.75, r * 0.5, rng.uniform(0, math.pi)), content, 3.0, within=(-150, 200))

    # Great vessels.
    cv.paint(cv.ellipse(0.12 * ia, 0.28 * ib, 12.0, 12.0), BLOOD + 170 * contrast, 3.0)  # aorta
    if t > 0.3:
        cv.paint(cv.ellipse(-0.12 * ia, 0.25 * ib, 11.0, 9.0), BLOOD + 120 * contrast, 3.0)  # vena cava

    # Spine: vertebral body (cortex + marrow), canal, posterior arch; ribs in the chest.
    vy = 0.58 * b
    cv.paint(cv.ellipse(0, vy, 20, 17), BONE_CORTEX, 20.0)
    cv.paint(cv.ellipse(0, vy, 17, 14.5), BONE_MARROW, 25.0)
    cv.paint(cv.ellipse(0, vy + 28, 15, 12), BONE_CORTEX * 0.8, 20.0)
    cv.paint(cv.ellipse(0, vy + 26, 8, 7), CSF, 3.0)
    cv.paint(cv.ellipse(0, vy + 44, 5, 10), BONE_CORTEX * 0.7, 20.0)
    if t < 0.75:
        n_ribs = 5 + int(3 * chest)
        for k in range(n_ribs):
            for side in (-1, 1):
                ang = math.pi / 2 + side * (0.35 + 2.3 * k / n_ribs)  # from the spine around to the front
                rx = math.cos(ang) * (ia + 0.5 * p.muscle_mm)
                ry = math.sin(ang) * (ib + 0.5 * p.muscle_mm)
                # Ribs cut obliquely: elongated along the body wall.
                tangent = math.atan2(math.cos(ang) * ib, -math.sin(ang) * ia)
                cv.paint(cv.ellipse(rx, ry, 10.0, 4.5, tangent), BONE_CORTEX * 0.85, 20.0)
                cv.paint(cv.ellipse(rx, ry, 7.5, 2.3, tangent), BONE_MARROW, 20.0)

    # Lung vessels: blurred points and short branches inside the lung, brighter near the hila.
    hu = cv.hu
    lung = cv.lung
    idx = np.flatnonzero(lung)
    if idx.size:
        seeds = rng.choice(idx, size=min(idx.size, int(150 * (size / 512) ** 2) + 1))
        ys, xs = np.divmod(seeds, size)
        steps = rng.normal(0, 1.5, size=(seeds.size, 6, 2)).cumsum(axis=1)  # short random-walk branches
        py = np.clip(ys[:, None] + steps[..., 0], 0, size - 1).astype(int).ravel()
        px = np.clip(xs[:, None] + steps[..., 1], 0, size - 1).astype(int).ravel()
        impulses = np.zeros((size, size), dtype=np.float32)
        np.add.at(impulses, (py, px), rng.uniform(300, 900, size=py.size).astype(np.float32))
        blur = np.exp(np.float32(-2 * (math.pi * 0.9 * size / 512) ** 2) * _freq2(size))
        vessels = fft.irfft2(fft.rfft2(impulses) * blur, s=(size, size))
        hu += np.where(lung, np.minimum(vessels, 850.0), 0.0).astype(np.float32)

    # Lesions: spheres; the cross-section at this z, in the organ they were drawn for.
    boxes = []
    for lx, ly, lz, lr, dhu, organ in p.lesions:
        dz = z_mm - lz
        if abs(dz) >= lr:
            continue
        r = math.sqrt(lr * lr - dz * dz)
        x_mm, y_mm = lx * ia, ly * ib
        if organ == "liver":
            x_mm, y_mm = -0.38 * ia + 0.3 * lx * ia, -0.05 * ib + 0.5 * ly * ib
            rng_hu = (40.0, 200.0)
        elif organ == "lung":
            x_mm = math.copysign(0.42 * ia, lx) + 0.2 * lx * ia
            rng_hu = (-1000.0, -400.0)
            dhu = 800.0  # a solid nodule in aerated lung
        else:
            rng_hu = (-150.0, 120.0)
        shape = cv.ellipse(x_mm, y_mm, r, r * 0.9, lx)
        if shape is None:
            continue
        sl, mask = shape
        cur = hu[sl]
        inside = mask & (cur >= rng_hu[0]) & (cur <= rng_hu[1])
        if inside.sum() < 4:
            continue
        cur[inside] = -20.0 if organ == "lung" else cur[inside] + dhu
        cv.texture_amp[sl][inside] = 5.0
        rr, cc = np.nonzero(inside)
        boxes.append(
            (
                float(cc.min() + sl[1].start),
                float(rr.min() + sl[0].start),
                float(cc.max() + sl[1].start),
                float(rr.max() + sl[0].start),
                2 * r / s,
                dhu,
            )
        )

    hu += cv.texture_amp * _smooth_field(rng, size, 3.0 * size / 512)
    out = _image_formation(rng, hu, p.mtf_sigma_px * size / 512, p.noise_hu)
    # Scanners write -1024 (or less) outside the reconstruction circle.
    yy, xx = np.ogrid[:size, :size]
    out[(yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 > (size / 2) ** 2] = -1024.0
    return np.clip(np.rint(out), -1024, 3071).astype(np.int16), boxes


def write_corpus(
    images_dir: str | Path, csv_path: str | Path, count: int, size: int, seed: int, slices_per_series: int
) -> dict:
    """Write ``count`` slices in the DeepLesion layout.

    Params:
        images_dir: the ``Images_png`` folder (one sub-folder per series is created).
        csv_path: where ``DL_info.csv`` goes (written atomically, after the images).
        count: number of slices.
        size: side of each slice in pixels (DeepLesion: 512).
        seed: master seed; the same seed writes identical files.
        slices_per_series: consecutive slices per synthetic patient.
    Returns:
        A summary: series, slices, lesions, HU range.
    """
    import pandas as pd
    from PIL import Image

    from ..io import atomic_path
    from ..runtime import progress

    images = Path(images_dir)
    images.mkdir(parents=True, exist_ok=True)
    ss = np.random.SeedSequence(seed)
    n_series = math.ceil(count / slices_per_series)
    series_seeds = ss.spawn(n_series)
    rows = []
    written = 0
    hu_min, hu_max = 32767, -32768
    bar = progress(total=count, desc="synthetic CT", unit="slice")
    for si in range(n_series):
        rng = np.random.default_rng(series_seeds[si])
        n = min(slices_per_series, count - written)
        patient = draw_patient(rng, n)
        t0 = rng.uniform(0.0, max(0.0, 1.0 - n * 0.03))
        first = int(rng.integers(1, 200))
        series = f"{si + 1:06d}_01_01"
        folder = images / series
        folder.mkdir(exist_ok=True)
        slice_boxes = {}
        for k in range(n):
            hu, boxes = synthetic_slice(rng, patient, t0 + 0.03 * k, k * SLICE_MM, size)
            hu_min, hu_max = min(hu_min, int(hu.min())), max(hu_max, int(hu.max()))
            png = (hu.astype(np.int32) + HU_OFFSET).astype(np.uint16)
            Image.fromarray(png).save(folder / f"{first + k:03d}.png", compress_level=1)
            slice_boxes[first + k] = boxes
            written += 1
            bar.update(1)
        # DeepLesion lists lesions on a key slice per series: take the slice with the most lesion area.
        key = max(slice_boxes, key=lambda i: sum((b[2] - b[0]) * (b[3] - b[1]) for b in slice_boxes[i]))
        sp = patient.spacing_mm * 512.0 / size
        common = {
            "Patient_index": si + 1,
            "Study_index": 1,
            "Series_ID": 1,
            "Key_slice_index": key,
            "Slice_range": f"{first}, {first + n - 1}",
            "Spacing_mm_px_": f"{sp:.6f}, {sp:.6f}, {SLICE_MM}",
            "Image_size": f"{size}, {size}",
            "DICOM_windows": "-175, 275",
            "Patient_gender": str(rng.choice(["M", "F"])),
            "Patient_age": int(rng.integers(25, 85)),
            "Possibly_noisy": 0,
            "Train_Val_Test": int(rng.choice([1, 2, 3], p=[0.7, 0.15, 0.15])),
        }
        boxes = slice_boxes[key] or [None]
        for box in boxes:
            row = {"File_name": f"{series}_{key:03d}.png", **common}
            if box is None:  # DeepLesion always has a lesion; ours may not hit one — say so
                row.update(Bounding_boxes="", Lesion_diameters_Pixel_="", Coarse_lesion_type=-1)
            else:
                row.update(
                    Bounding_boxes=", ".join(f"{v:.1f}" for v in box[:4]),
                    Lesion_diameters_Pixel_=f"{box[4]:.2f}, {0.9 * box[4]:.2f}",
                    Coarse_lesion_type=-1,  # DeepLesion's "unknown" type
                )
            rows.append(row)
    bar.close()
    cols = [
        "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
        "Bounding_boxes", "Lesion_diameters_Pixel_", "Coarse_lesion_type", "Possibly_noisy",
        "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
        "Patient_age", "Train_Val_Test",
    ]  # fmt: skip
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(rows, columns=cols).to_csv(tmp, index=False)
    n_lesions = sum(1 for r in rows if r["Bounding_boxes"])
    log.info("wrote %d synthetic CT slices in %d series (%d key-slice lesions)", written, n_series, n_lesions)
    return {"series": n_series, "slices": written, "lesions": n_lesions, "hu_min": hu_min, "hu_max": hu_max}
