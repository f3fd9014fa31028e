"""Reconstruction: coincidences -> crystal pairs -> rebinned sinograms (``lors``), the ring's
system model of exact line integrals (``projector``), attenuation factors (``attenuation``),
MLEM/OSEM (``mlem``); the fully 3D mode's on-the-fly projector of every oblique LOR
(``projector3d``) and its OSEM with fan-sum randoms and geometric normalisation (``osem3d``);
the outputs a person opens: DICOM series (``dicom``), PNG preview (``preview``); and the per-scan
driver (``driver``: ROOT + truth -> ``recon/{scan}.npz``). The stage drivers are ``driver.py`` in
both ``simulate`` and ``recon`` (not ``scan.py``, which named two different modules)."""
