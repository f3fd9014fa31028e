"""positrongan: simulate industrial positron-emission scans, reconstruct them with MLEM/OSEM,
and learn realistic positron images with an attention-memory GAN and a CT prior."""

__version__ = "0.1.0"
