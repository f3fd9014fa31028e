"""Exports of our scans to formats other PET tools read.

- :mod:`.gate9`: a GATE 9 ``cylindricalPET`` geometry macro and the coincidences in GATE 9's
  classic ROOT layout (pytomography, CASToR's and STIR's GATE readers);
- :mod:`.petsird`: list-mode data with the scanner description in the PETSIRD standard.

Both stream the input in chunks (:mod:`.listmode`), so a scan's list mode is never held in
memory whole. docs/interop.md documents the id mappings and how to use the files.
"""
