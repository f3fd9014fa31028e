"""Reconstruction: coincidences -> crystal pairs -> rebinned sinograms (``lors``), the ring's
system model of exact line integrals (``projector``), attenuation factors (``attenuation``),
MLEM/OSEM (``mlem``), and the outputs a person opens: DICOM series (``dicom``), PNG preview
(``preview``)."""
