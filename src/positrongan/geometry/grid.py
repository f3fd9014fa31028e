"""The reconstruction grid: one definition shared by the truth maps (``truth/{scan}.npz``) and the
reconstruction (``recon/{scan}.npz``), so both lie voxel for voxel on the same volume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .scanner import Scanner


@dataclass(frozen=True)
class ReconGrid:
    """Voxel grid of (planes, grid, grid) voxels indexed [z, y, x], centred on the scanner axis.

    Axially one voxel per rebinned plane (``2 rings - 1`` planes at half the axial pitch);
    transaxially ``grid`` x ``grid`` voxels over ``fov_mm``.

    Attributes:
        planes: number of axial planes.
        grid: voxels per transaxial side.
        fov_mm: transaxial field of view [mm].
        plane_mm: axial voxel size (plane spacing) [mm]; the planes are centred on z = 0.
    """

    planes: int
    grid: int
    fov_mm: float
    plane_mm: float

    @classmethod
    def from_config(cls, scanner: Scanner, recon_cfg: Mapping) -> "ReconGrid":
        """The grid of ``scanner`` and the ``reconstruction`` section (keys ``grid``, ``fov_mm``)."""
        return cls(
            planes=scanner.n_planes,
            grid=int(recon_cfg["grid"]),
            fov_mm=float(recon_cfg["fov_mm"]),
            plane_mm=scanner.axial_pitch_mm / 2,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(planes, grid, grid)."""
        return (self.planes, self.grid, self.grid)

    @property
    def pixel_mm(self) -> float:
        """Transaxial voxel size [mm]."""
        return self.fov_mm / self.grid

    @property
    def plane_z(self) -> np.ndarray:
        """z [mm] of every plane centre."""
        # (p - (rings - 1)) * pitch / 2, as Scanner.plane_z, in the same floating-point steps.
        return (np.arange(self.planes, dtype=np.float64) - (self.planes - 1) // 2) * self.plane_mm

    @property
    def centres_mm(self) -> np.ndarray:
        """Transaxial voxel centres [mm] (the same along x and y)."""
        return -self.fov_mm / 2 + (np.arange(self.grid) + 0.5) * self.pixel_mm

    @property
    def voxel_mm(self) -> np.ndarray:
        """Voxel size (z, y, x) [mm]."""
        pix = self.pixel_mm
        return np.array([self.plane_mm, pix, pix])

    @property
    def origin_mm(self) -> np.ndarray:
        """Centre of voxel [0, 0, 0], (z, y, x) [mm]."""
        c0 = -self.fov_mm / 2 + self.pixel_mm / 2
        return np.array([float(self.plane_z[0]), c0, c0])
