"""Datasets: positron image slices and the CT corpus (DeepLesion, DICOM, synthetic)."""
