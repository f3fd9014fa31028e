"""The cylindrical PET scanner: crystal ids, centres, orientations and ring planes.

Convention (shared by the simulation engines, the ROOT files and the reconstruction):
- the scanner axis is z, centred at 0; ring ``r`` (0 .. rings-1) sits at
  ``z = (r - (rings - 1) / 2) * axial_pitch_mm``;
- crystal ``i`` (0 .. crystals_per_ring-1) of a ring is centred at azimuth
  ``phi_i = 2 pi i / crystals_per_ring``, its front face at the inner radius, its depth radial;
- ``CrystalID = ring * crystals_per_ring + i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class Scanner:
    """A ring scanner of ``rings`` x ``crystals_per_ring`` radial crystals."""

    crystals_per_ring: int = 184
    rings: int = 64
    crystal_pitch_mm: float = 4.0
    axial_pitch_mm: float = 4.0
    crystal_depth_mm: float = 20.0
    crystal_material: str = "LYSO"

    @classmethod
    def from_config(cls, scanner_cfg: Mapping) -> "Scanner":
        """Build from the ``scanner`` config section."""
        return cls(**{k: scanner_cfg[k] for k in cls.__dataclass_fields__})

    @property
    def inner_radius_mm(self) -> float:
        """Radius of the crystals' front faces: the ring's circumference is crystals x pitch."""
        return self.crystals_per_ring * self.crystal_pitch_mm / (2 * math.pi)

    @property
    def outer_radius_mm(self) -> float:
        return self.inner_radius_mm + self.crystal_depth_mm

    @property
    def axial_length_mm(self) -> float:
        return self.rings * self.axial_pitch_mm

    @property
    def n_crystals(self) -> int:
        return self.rings * self.crystals_per_ring

    @property
    def n_planes(self) -> int:
        """Direct + cross planes of single-slice rebinning: 2 * rings - 1."""
        return 2 * self.rings - 1

    def crystal_id(self, ring: np.ndarray, index: np.ndarray) -> np.ndarray:
        """CrystalID from ring and in-ring index (index taken modulo crystals_per_ring)."""
        return np.asarray(ring) * self.crystals_per_ring + np.mod(index, self.crystals_per_ring)

    def ring_and_index(self, crystal_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`crystal_id`."""
        crystal_id = np.asarray(crystal_id)
        return crystal_id // self.crystals_per_ring, crystal_id % self.crystals_per_ring

    def azimuth(self, index: np.ndarray) -> np.ndarray:
        """Azimuth (radians) of crystal centres."""
        return 2 * np.pi * np.asarray(index, dtype=np.float64) / self.crystals_per_ring

    def ring_z(self, ring: np.ndarray) -> np.ndarray:
        """z (mm) of ring centres."""
        return (np.asarray(ring, dtype=np.float64) - (self.rings - 1) / 2) * self.axial_pitch_mm

    def plane_z(self, plane: np.ndarray) -> np.ndarray:
        """z (mm) of rebinned plane ``p`` = ring1 + ring2 (0 .. 2 rings - 2)."""
        return (np.asarray(plane, dtype=np.float64) - (self.rings - 1)) * self.axial_pitch_mm / 2

    def crystal_centre(self, crystal_id: np.ndarray, depth_mm: float | np.ndarray | None = None) -> np.ndarray:
        """Position (..., 3) in mm of a point at ``depth_mm`` behind the front face (default: mid-depth)."""
        ring, index = self.ring_and_index(crystal_id)
        depth = self.crystal_depth_mm / 2 if depth_mm is None else np.asarray(depth_mm)
        r = self.inner_radius_mm + depth
        phi = self.azimuth(index)
        return np.stack([r * np.cos(phi), r * np.sin(phi), self.ring_z(ring) + 0 * r], axis=-1)

    def locate(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """CrystalID of the crystal containing (or nearest to) each point: nearest azimuth and ring.

        Returns -1 for points outside the axial extent.
        """
        phi = np.mod(np.arctan2(y, x), 2 * np.pi)
        index = np.rint(phi * self.crystals_per_ring / (2 * np.pi)).astype(np.int64) % self.crystals_per_ring
        ring = np.floor(np.asarray(z) / self.axial_pitch_mm + self.rings / 2).astype(np.int64)
        ids = self.crystal_id(ring, index)
        return np.where((ring >= 0) & (ring < self.rings), ids, -1)
