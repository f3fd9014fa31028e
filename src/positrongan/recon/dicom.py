"""Write a reconstructed volume as a DICOM PET image series (one file per plane) with pydicom.

The series is built in a temporary folder and renamed into place (``io.atomic_dir``). Values
are stored as uint16 with a per-slice RescaleSlope (RescaleIntercept 0), so a viewer shows the
reconstructed values: activity concentration in Bq/mL (Units ``BQML``) when the caller gives the
calibration (``commands/reconstruct.py``: the known activity of the part over the image's total,
docs/interop.md), otherwise the reconstruction's own units (``CNTS``).

Only true attributes are written: ``CorrectedImage`` lists the corrections that were applied to
this image (the recon npz's ``corrections``: ATTN, RAN, SCAT, NORM as applied), nothing else;
``RandomsCorrectionMethod`` is ``DLYD`` (delayed window) or ``SING`` (singles rates);
``DecayCorrection`` is ``NONE`` (the simulated source does not decay over the scan). Every Type 1
attribute of the PET Image IOD's modules is present and non-empty; Type 2 ones are present (empty
when unknown). One SeriesInstanceUID per volume.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from ..io import atomic_dir

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
# F-18 (the simulated positron emitter): half-life 109.77 min, beta+ branching 96.86 % (NNDC).
F18_HALF_LIFE_S = 6586.2
F18_POSITRON_FRACTION = 0.9686
RANDOMS_METHOD = {"delayed": "DLYD", "singles": "SING"}


def write_series(
    volume: np.ndarray,
    voxel_mm: np.ndarray,
    origin_mm: np.ndarray,
    out_dir: str | Path,
    scan_id: str,
    description: str,
    uid_seed: int,
    attenuation_corrected: bool,
    randoms_corrected: bool,
    *,
    units: str = "CNTS",
    scale: float = 1.0,
    randoms_method: str = "delayed",
    scatter_corrected: bool = False,
    normalised: bool = False,
    activity_bq: float | None = None,
    frame_duration_ms: float | None = None,
) -> list[Path]:
    """Write ``volume`` [z, y, x] as a PET series.

    Params:
        volume: (planes, rows, cols) float, non-negative.
        voxel_mm: (dz, dy, dx).
        origin_mm: (z0, y0, x0), centre of voxel [0, 0, 0].
        out_dir: the series folder (replaced atomically).
        scan_id: patient name/id and series description prefix.
        description: series description (algorithm and iterations).
        uid_seed: makes the UIDs deterministic (same input, same files).
        attenuation_corrected, randoms_corrected: the corrections applied to ``volume``; only
            these (and the two below) are listed in CorrectedImage.
        units: ``BQML`` or ``CNTS``: the units of ``volume * scale``.
        scale: factor from the volume's values to the stored values (Bq/mL per image unit for BQML).
        randoms_method: ``delayed`` | ``singles`` (RandomsCorrectionMethod DLYD | SING).
        scatter_corrected, normalised: SCAT and NORM in CorrectedImage.
        activity_bq: the source's activity at the scan start (RadionuclideTotalDose), or None.
        frame_duration_ms: acquisition time of the data (ActualFrameDuration), or None.
    Returns:
        Paths of the written files (in their final folder).
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def uid(*parts) -> str:
        return generate_uid(entropy_srcs=[str(uid_seed), scan_id, *map(str, parts)])

    study_uid, series_uid, frame_uid = uid("study"), uid("series"), uid("frame")
    now = _dt.datetime(2000, 1, 1) + _dt.timedelta(seconds=int(uid_seed % (10 * 365 * 86400)))
    date, tod = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    if units not in ("BQML", "CNTS"):
        raise ValueError(f"DICOM units {units!r}: BQML or CNTS")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"DICOM scale {scale!r} must be a positive finite number")
    volume = np.asarray(volume, np.float64) * scale
    planes, rows, cols = volume.shape
    dz, dy, dx = (float(v) for v in voxel_mm)
    z0, y0, x0 = (float(v) for v in origin_mm)
    flags = (
        ("NORM", normalised),
        ("ATTN", attenuation_corrected),
        ("SCAT", scatter_corrected),
        ("RAN", randoms_corrected),
    )
    corrected = [c for c, on in flags if on]
    names = []
    out_dir = Path(out_dir)
    # An empty plane takes the series' slope, not 1: ITK-based readers (SimpleITK, 3D Slicer) pick
    # the series' pixel type from the first file, and a slope of 1 there reads every plane as integers.
    series_top = float(np.clip(np.nan_to_num(volume.astype(np.float64)), 0, None).max()) if volume.size else 0.0
    with atomic_dir(out_dir) as tmp:
        for p in range(planes):
            sl = np.clip(np.nan_to_num(volume[p].astype(np.float64)), 0, None)
            top = sl.max() if sl.max() > 0 else series_top
            # The slope is stored as a DICOM decimal string; scale by exactly the stored value.
            slope_text = f"{top / 65535.0:.9g}" if top > 0 else "1"
            slope = float(slope_text)
            pixels = np.clip(np.round(sl / slope), 0, 65535).astype(np.uint16)
            sop_uid = uid("instance", p)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
            name = f"slice_{p:04d}.dcm"
            ds = FileDataset(name, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID = PET_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.Modality = "PT"
            ds.PatientName = f"positrongan^{scan_id}"
            ds.PatientID = scan_id
            ds.PatientBirthDate = ""
            ds.PatientSex = "O"
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = tod
            ds.StudyID = "1"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.Manufacturer = "positrongan"
            ds.StudyDescription = "industrial positron emission NDT (simulated)"
            ds.SeriesDescription = f"{scan_id} {description}"[:64]
            ds.SeriesNumber = 1
            ds.InstanceNumber = p + 1
            ds.ImageType = ["DERIVED", "PRIMARY"]
            ds.Units = units
            ds.CountsSource = "EMISSION"
            ds.CorrectedImage = corrected
            if randoms_corrected:
                ds.RandomsCorrectionMethod = RANDOMS_METHOD[randoms_method]
            if attenuation_corrected:
                ds.AttenuationCorrectionMethod = "known mu-map of the part at 511 keV"
            ds.DecayCorrection = "NONE"
            ds.SeriesType = ["STATIC", "IMAGE"]
            ds.NumberOfSlices = planes
            ds.ImageIndex = p + 1
            ds.FrameReferenceTime = 0
            ds.AcquisitionDate = date
            ds.AcquisitionTime = tod
            ds.ActualFrameDuration = None if frame_duration_ms is None else int(round(frame_duration_ms))
            ds.CollimatorType = "NONE"
            ds.RadiopharmaceuticalInformationSequence = [radionuclide(activity_bq, tod)]
            ds.PatientOrientationCodeSequence = []
            ds.PatientGantryRelationshipCodeSequence = []
            ds.PositionReferenceIndicator = ""
            ds.PatientPosition = "HFS"
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [x0, y0, z0 + p * dz]
            ds.SliceLocation = z0 + p * dz
            ds.SliceThickness = dz
            ds.PixelSpacing = [dy, dx]
            ds.Rows, ds.Columns = rows, cols
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleSlope = slope_text
            ds.RescaleIntercept = 0
            ds.RescaleType = units
            ds.WindowCenter = f"{0.5 * top:.6g}"
            ds.WindowWidth = f"{max(top, 1e-12):.6g}"
            ds.PixelData = pixels.tobytes()
            ds.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
    return [out_dir / n for n in names]


def radionuclide(activity_bq: float | None, start_time: str):
    """The RadiopharmaceuticalInformationSequence item of an F-18 source (total activity at the
    scan start, half-life and positron fraction), as PET readers use for SUV and decay."""
    from pydicom.dataset import Dataset

    item = Dataset()
    code = Dataset()
    code.CodeValue = "C-111A1"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "^18^Fluorine"
    item.RadionuclideCodeSequence = [code]
    item.RadiopharmaceuticalStartTime = start_time
    item.RadionuclideHalfLife = f"{F18_HALF_LIFE_S:g}"
    item.RadionuclidePositronFraction = f"{F18_POSITRON_FRACTION:g}"
    if activity_bq is not None:
        item.RadionuclideTotalDose = f"{float(activity_bq):.6g}"
    return item
