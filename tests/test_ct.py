"""CT corpus: DeepLesion PNG/CSV and DICOM loaders, windowing, and the synthetic corpus."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from positrongan.config import validate
from positrongan.data import ct as ctlib
from positrongan.data import synthetic_ct
from positrongan.errors import ArtifactError


def _ct_cfg(**over):
    cfg = validate({})["ct"]
    cfg.update(over)
    return cfg


def _write_png(path, hu):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.asarray(hu, dtype=np.int32) + 32768).astype(np.uint16)).save(path)


def _dl_row(series, slice_idx, size=(512, 512), noisy=0):
    return {
        "File_name": f"{series}_{slice_idx:03d}.png",
        "Key_slice_index": slice_idx,
        "Possibly_noisy": noisy,
        "Spacing_mm_px_": "0.7, 0.7, 5",
        "Image_size": f"{size[0]}, {size[1]}",
        "DICOM_windows": "-175, 275",
        "Train_Val_Test": 1,
    }


def test_deeplesion_png_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 3072, size=(40, 56))
    hu[0, :4] = [-32768, -1024, 0, 32767]  # the extremes the 16-bit offset must carry
    _write_png(tmp_path / "a.png", hu)
    back = ctlib.read_deeplesion_png(tmp_path / "a.png")
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, hu)


def test_deeplesion_png_rejects_8bit_and_garbage(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(ArtifactError, match="eight.png.*16-bit"):
        ctlib.read_deeplesion_png(tmp_path / "eight.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ArtifactError, match="junk.png"):
        ctlib.read_deeplesion_png(tmp_path / "junk.png")


def test_deeplesion_corpus_filters_windows_and_resizes(tmp_path):
    images = tmp_path / "Images_png"
    # Series A: two good slices of known HU; B: flagged noisy; C: too small; D: not in the CSV.
    _write_png(images / "000001_01_01" / "010.png", np.full((64, 64), -1024))
    _write_png(images / "000001_01_01" / "011.png", np.pad(np.full((32, 32), 1500), 16, constant_values=238))
    _write_png(images / "000002_01_01" / "005.png", np.zeros((64, 64)))
    _write_png(images / "000003_01_01" / "001.png", np.zeros((64, 64)))
    _write_png(images / "000004_01_01" / "001.png", np.zeros((64, 64)))
    rows = [
        _dl_row("000001_01_01", 11),
        _dl_row("000002_01_01", 5, noisy=1),
        _dl_row("000003_01_01", 1, size=(128, 128)),
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "DL_info.csv", index=False)
    cfg = _ct_cfg(source="deeplesion", min_size=256, hu_window=[-1024.0, 1500.0])
    out = ctlib.read_corpus(cfg, tmp_path, 16)
    assert out.names == ["000001_01_01/010.png", "000001_01_01/011.png"]
    assert out.skipped == {"noisy": 1, "small": 1, "not_in_csv": 1}
    assert out.images.shape == (2, 16, 16) and out.images.dtype == np.float32
    np.testing.assert_array_equal(out.images[0], -1.0)  # -1024 HU is the window's low end
    # 64 -> 16 is 4x4 box averaging: the 32x32 block of 1500 HU lands on 8x8 pixels of +1;
    # 238 HU is the window's midpoint (-1024 + 2524 / 2) -> exactly 0.
    np.testing.assert_allclose(out.images[1, 4:12, 4:12], 1.0, atol=1e-6)
    np.testing.assert_allclose(out.images[1, :4], 0.0, atol=1e-6)

    key_only = ctlib.read_corpus({**cfg, "key_slices_only": True}, tmp_path, 16)
    assert key_only.names == ["000001_01_01/011.png"]
    noisy_too = ctlib.read_corpus({**cfg, "exclude_noisy": False, "max_slices": 2}, tmp_path, 16)
    assert noisy_too.names == ["000001_01_01/010.png", "000002_01_01/005.png"]  # evenly spaced over 3


def test_non_square_slices_are_padded_with_air(tmp_path):
    sq = ctlib.to_square(np.ones((4, 8), np.float32), 8)
    assert sq.shape == (8, 8)
    np.testing.assert_array_equal(sq[2:6], 1.0)
    np.testing.assert_array_equal(sq[:2], -1.0)


def test_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "Images_png").mkdir()
    pd.DataFrame([_dl_row("000001_01_01", 1)]).to_csv(tmp_path / "DL_info.csv", index=False)
    with pytest.raises(ArtifactError, match=str(tmp_path) + ".*no usable CT slice"):
        ctlib.load_corpus(_ct_cfg(source="deeplesion"), tmp_path, 32)
    missing = tmp_path / "nowhere"
    with pytest.raises(ArtifactError, match="nowhere"):
        ctlib.load_corpus(_ct_cfg(source="deeplesion"), missing, 32)
    empty = tmp_path / "dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ArtifactError, match=r"dicom: no usable CT slice.*1 unreadable"):
        ctlib.load_corpus(_ct_cfg(source="dicom"), empty, 32)


def _write_dicom(path, stored, z, modality="CT", slope=1.0, intercept=-1024.0, series="1.2.3.4"):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = modality
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_reads_hu_orders_by_position_and_skips_others(tmp_path):
    rng = np.random.default_rng(1)
    stored = [rng.integers(0, 3000, size=(16, 16)) for _ in range(3)]
    # File names deliberately disagree with the slice positions.
    _write_dicom(tmp_path / "a.dcm", stored[0], z=30.0)
    _write_dicom(tmp_path / "b.dcm", stored[1], z=-10.0, slope=2.0, intercept=-2048.0)
    (tmp_path / "sub").mkdir()
    _write_dicom(tmp_path / "sub" / "c.dcm", stored[2], z=10.0)
    _write_dicom(tmp_path / "mr.dcm", stored[0], z=0.0, modality="MR")
    (tmp_path / "broken.dcm").write_bytes(b"DICM" * 10)
    (tmp_path / "README").write_text("not dicom")

    np.testing.assert_array_equal(ctlib.read_dicom_hu(tmp_path / "b.dcm"), stored[1] * 2.0 - 2048.0)
    entries, skipped = ctlib.dicom_index(tmp_path)
    assert [e[2].name for e in entries] == ["b.dcm", "c.dcm", "a.dcm"]
    assert skipped == {"not_ct": 1, "unreadable": 2}

    cfg = _ct_cfg(source="dicom", hu_window=[-1024.0, 3071.0])
    out = ctlib.read_corpus(cfg, tmp_path, 16)
    assert out.names == ["b.dcm", "sub/c.dcm", "a.dcm"]
    expected = np.clip(stored[0] - 1024.0, -1024, 3071)
    np.testing.assert_allclose(out.images[2], (expected + 1024) / 4095 * 2 - 1, atol=1e-6)


def test_image_formation_keeps_the_mean_and_sets_the_noise_level():
    rng = np.random.default_rng(3)
    flat = np.full((256, 256), 40.0, np.float32)
    out = synthetic_ct._image_formation(rng, flat, mtf_sigma_px=0.8, noise_hu=15.0)
    assert abs(out.mean() - 40.0) < 0.5  # the MTF has unit DC gain and the noise has no DC
    assert abs(out.std() - 15.0) < 1.0
    n = out - out.mean()
    # Correlated, not white: neighbours share the reconstruction kernel's blur...
    assert 0.1 < np.mean(n[:, 1:] * n[:, :-1]) / np.mean(n * n) < 0.6
    # ...and the ramp filter removes the lowest frequencies: 16x16 block means vary much less
    # than for white noise of the same level (15 / 16 HU).
    assert n.reshape(16, 16, 16, 16).mean(axis=(1, 3)).std() < 0.75 * 15.0 / 16


def test_synthetic_corpus_is_seeded_and_reads_back_as_body_ct(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    info = synthetic_ct.write_corpus(
        a / "Images_png", a / "DL_info.csv", count=5, size=128, seed=7, slices_per_series=3
    )
    synthetic_ct.write_corpus(b / "Images_png", b / "DL_info.csv", count=5, size=128, seed=7, slices_per_series=3)
    assert info["series"] == 2 and info["slices"] == 5
    files = sorted((a / "Images_png").rglob("*.png"))
    assert len(files) == 5
    for f in files:
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes()
    df = ctlib.read_dl_info(a)
    assert set(df["series"]) == {"000001_01_01", "000002_01_01"}
    hu = np.stack([ctlib.read_deeplesion_png(f) for f in files])
    # Outside the reconstruction circle: exactly -1024, as scanners write it.
    assert (hu[:, 0, 0] == -1024).all()
    # A body: a good share of fat and soft tissue, some bone, HU within the scanner range.
    body = hu > -500
    assert 0.2 < body.mean() < 0.8
    fat = ((hu > -150) & (hu < -50)).sum() / body.sum()
    soft = ((hu > 0) & (hu < 120)).sum() / body.sum()
    bone = (hu > 400).sum() / body.sum()
    assert fat > 0.05 and soft > 0.2 and 0.002 < bone < 0.2
    assert hu.min() >= -1024 and hu.max() <= 3071
    corpus = ctlib.read_corpus(_ct_cfg(source="synthetic", min_size=64), a, 32)
    assert corpus.images.shape == (5, 32, 32)
    assert corpus.images.min() >= -1 and corpus.images.max() <= 1
