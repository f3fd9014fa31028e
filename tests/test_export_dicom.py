"""Our DICOM PT series read by readers other than pydicom (the library that writes it):
highdicom's volume reader and ITK's GDCM series reader (SimpleITK). Each must place every voxel
where our reconstruction has it, with its value (to the 16-bit quantisation of the series)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from positrongan import config as configlib
from positrongan.cli import main
from positrongan.simulate.driver import simulate_scan

SMALL = {
    "scans": {"count": 1},
    "scanner": {"crystals_per_ring": 96, "rings": 8, "axial_pitch_mm": 3.0},
    "simulation": {"engine": "fast", "chunk_decays": 4000},
    "phantom": {"activity_bq": 3.0e6, "acquisition_s": 0.01, "length_mm": 30.0},
}
SETS = [
    "scanner.crystals_per_ring=96",
    "scanner.rings=8",
    "scanner.axial_pitch_mm=3.0",
    "reconstruction.grid=32",
    "reconstruction.fov_mm=96.0",
    "reconstruction.iterations=2",
    "reconstruction.subsets=2",
    "reconstruction.attenuation_correction=false",
    "reconstruction.randoms_correction=false",
    "reconstruction.dicom=true",
    "device=cpu",
]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dicom")
    cfg = configlib.validate(json.loads(json.dumps(SMALL)))
    simulate_scan(cfg, "scan_000", tmp / "scan_000.root", tmp / "scan_000.json", None)
    args = ["reconstruct", "--scan", "scan_000", "--root", str(tmp / "scan_000.root")]
    args += ["--out", str(tmp / "recon.npz"), "--dicom", str(tmp / "dicom")]
    for s in SETS:
        args += ["--set", s]
    assert main(args) == 0
    recon = np.load(tmp / "recon.npz")
    files = sorted((tmp / "dicom").glob("*.dcm"))
    assert len(files) == recon["image"].shape[0]
    # The series holds Bq/mL: the image times the calibration the recon npz records.
    assert str(recon["units"]) == "BQML"
    bqml = recon["image"].astype(np.float64) * float(recon["bqml_per_unit"])
    return bqml, recon["voxel_mm"], recon["origin_mm"], files


def _our_values_at(points_xyz, image, voxel_mm, origin_mm):
    """Our image at patient points (n, 3) x, y, z: the writer's frame is ours (rows along +x, columns along +y)."""
    idx = (points_xyz[:, ::-1] - origin_mm) / voxel_mm  # (z, y, x) indices
    k = np.rint(idx).astype(int)
    assert np.abs(idx - k).max() < 1e-3, "a reader's voxel centres fall between ours"
    return image[k[:, 0], k[:, 1], k[:, 2]]


def test_highdicom_reads_our_series_in_place(series):
    import highdicom as hd
    import pydicom

    image, voxel, origin, files = series
    vol = hd.get_volume_from_series([pydicom.dcmread(f) for f in files])
    assert vol.shape == image.shape
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    xyz = (vol.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    ours = _our_values_at(xyz, image, voxel, origin)
    # Per-slice 16-bit scaling: each value within 1/65535 of its plane's maximum.
    tol = image.max(axis=(1, 2)).max() / 65535 * 1.01
    np.testing.assert_allclose(vol.array.reshape(-1), ours, atol=tol)


def test_itk_reads_our_series_in_place(series):
    import SimpleITK as sitk

    image, voxel, origin, files = series
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(files[0].parent)))
    vol = reader.Execute()
    arr = sitk.GetArrayFromImage(vol).astype(np.float64)  # [k, j, i]
    assert arr.shape == image.shape
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in arr.shape[::-1]], indexing="ij"), axis=-1).reshape(-1, 3)
    xyz = np.array([vol.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in ijk])
    ours = _our_values_at(xyz, image, voxel, origin)
    tol = image.max(axis=(1, 2)).max() / 65535 * 1.01
    np.testing.assert_allclose(arr[ijk[:, 2], ijk[:, 1], ijk[:, 0]], ours, atol=tol)


def test_interop_doc_dicom_snippet_runs(series, tmp_path, monkeypatch):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "interop.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "dicom" in c]
    (tmp_path / "scan_000_dicom").symlink_to(series[3][0].parent)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/interop.md", "exec"), namespace)
    assert namespace["volume"].shape == series[0].shape


def test_itk_reads_a_series_whose_first_plane_is_empty(tmp_path):
    # ITK takes the series' pixel type from the first file: an empty first plane written with
    # slope 1 made it read every plane as integers (all activity 0).
    import SimpleITK as sitk

    from positrongan.recon.dicom import write_series

    rng = np.random.default_rng(0)
    vol = rng.random((4, 8, 8)) * 1e-3
    vol[0] = 0.0
    write_series(
        vol, np.array([2.0, 1.0, 1.0]), np.array([0.0, -3.5, -3.5]), tmp_path / "d", "scan_000", "test", 1, False, False
    )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "d")))
    arr = sitk.GetArrayFromImage(reader.Execute()).astype(np.float64)
    assert arr.shape == vol.shape
    np.testing.assert_allclose(arr, vol, atol=vol.max() / 65535 * 1.01)
