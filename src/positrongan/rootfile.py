"""The GATE ROOT schema of ``sim/{scan}.root``, written incrementally and read back with uproot.

Trees (docs/contract.md): ``Singles`` with GATE's branch names and units (ns, MeV, mm) plus
``CrystalID`` and truth branches; ``Coincidences`` with every Singles branch suffixed 1 and 2
(opengate's sorter convention); ``Delayed`` with the same schema when the delayed window is on;
``SinglesRates`` (always): the number of singles per crystal inside the energy window over the
whole acquisition (``CrystalID`` int32, ``Counts`` int64), for singles-rate randoms estimates
without the ``Singles`` tree (:func:`read_singles_counts`).
``Singles`` is written only with ``simulation.write_singles`` (GATE users often keep only the
coincidences; the reconstruction and the short-scan thinning read only the coincidence trees), the
truth branches only with ``simulation.write_truth``. Simulate writes these files, recon and export
read them: the module sits beside the packages, so none imports another's internals.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from .errors import ArtifactError
from .io import atomic_path

# Singles branches, in file order, with their types. GATE writes doubles; energy and positions
# are float32 here (1e-5 mm, 1e-7 MeV resolution, far below the detector's) to keep files small;
# GlobalTime needs float64 (ns over seconds of acquisition).
SINGLES_BRANCHES: dict[str, object] = {
    "EventID": np.int64,
    "GlobalTime": np.float64,  # ns
    "TotalEnergyDeposit": np.float32,  # MeV
    "PostPosition_X": np.float32,  # mm
    "PostPosition_Y": np.float32,
    "PostPosition_Z": np.float32,
    "PreStepUniqueVolumeID": "string",
    "CrystalID": np.int32,
    "PhantomScatters": np.int16,
    "SourcePosition_X": np.float32,  # mm, decay point (truth)
    "SourcePosition_Y": np.float32,
    "SourcePosition_Z": np.float32,
}


# GlobalTime is stored on a grid of 2^-10 ns (0.98 ps; rounding error <= 0.49 ps, far below the
# 300 ps time resolution): a multiple of a power of two is exact in float64 up to 2^43 ns (2.4 h of
# acquisition) and leaves the low mantissa bits zero, which the compressor then packs. The engines'
# times are rounded before the coincidence sorter sees them, so file and counts agree.
TIME_QUANTUM_NS = 2.0**-10


def quantise_time(t_ns: np.ndarray) -> np.ndarray:
    """Times (ns, float64) rounded to the nearest multiple of :data:`TIME_QUANTUM_NS`."""
    return np.round(np.asarray(t_ns, dtype=np.float64) * (1.0 / TIME_QUANTUM_NS)) * TIME_QUANTUM_NS


# Monte Carlo truth: no detector records these; written only with ``simulation.write_truth``.
TRUTH_BRANCHES = ("PhantomScatters", "SourcePosition_X", "SourcePosition_Y", "SourcePosition_Z")


def pair_branches(singles: Mapping[str, object] | None = None) -> dict[str, object]:
    """Branch types of the Coincidences / Delayed trees (of ``singles``, default the full schema)."""
    out: dict[str, object] = {}
    for name, typ in (SINGLES_BRANCHES if singles is None else singles).items():
        out[name + "1"] = typ
        out[name + "2"] = typ
    return out


def string_column(values: np.ndarray):
    """An awkward string array from a numpy array of strings, built from the fixed-width bytes.

    Much faster than letting uproot encode a unicode array element by element.
    """
    import awkward as ak

    arr = np.asarray(values)
    if arr.dtype.kind != "S":
        arr = arr.astype("S")
    width = max(arr.dtype.itemsize, 1)
    raw = (
        np.ascontiguousarray(arr).view(np.uint8).reshape(arr.size, width)
        if arr.size
        else np.zeros((0, width), np.uint8)
    )
    used = raw != 0  # fixed-width bytes are NUL-padded; volume ids contain no NUL
    # Lengths column by column: a reduction along the short byte axis is ~5x slower.
    lengths = np.zeros(arr.size, np.int64)
    for k in range(used.shape[1]):
        lengths += used[:, k]
    offsets = np.zeros(arr.size + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    content = ak.contents.NumpyArray(raw[used], parameters={"__array__": "char"})
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), content, parameters={"__array__": "string"}))


def volume_id_table(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Byte rows and lengths of the volume id of every CrystalID (for :func:`string_column_from_ids`).

    Params:
        ids: fixed-width bytes array (n_crystals,), NUL-padded, the id string of each CrystalID.
    Returns:
        (raw (n_crystals, width) uint8, lengths (n_crystals,) int64).
    """
    arr = np.ascontiguousarray(np.asarray(ids, dtype="S"))
    width = max(arr.dtype.itemsize, 1)
    raw = arr.view(np.uint8).reshape(arr.size, width)
    return raw, (raw != 0).sum(axis=1).astype(np.int64)


def string_column_from_ids(crystal: np.ndarray, table: tuple[np.ndarray, np.ndarray]):
    """The awkward string column of the volume ids of ``crystal`` (CrystalIDs), from a
    :func:`volume_id_table`, without materialising one Python or numpy string per entry."""
    import awkward as ak

    raw, lengths = table
    crystal = np.asarray(crystal, dtype=np.int64)
    offsets = np.zeros(crystal.size + 1, np.int64)
    np.cumsum(lengths.take(crystal), out=offsets[1:])
    rows = raw.take(crystal, axis=0)
    content = rows[rows != 0] if crystal.size else np.zeros(0, np.uint8)
    content = ak.contents.NumpyArray(content, parameters={"__array__": "char"})
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), content, parameters={"__array__": "string"}))


class RootWriter:
    """Append-only writer of the trees; the file appears only when closed without error.

    Use :func:`open_writer` (a context manager). A string branch (``PreStepUniqueVolumeID``)
    missing from the columns is derived from the matching ``CrystalID`` branch through
    ``volume_ids`` (the id string of every CrystalID), so engines need not carry strings.
    With ``volume_id_branches`` False the string branches are not written at all, with
    ``truth`` False neither are the :data:`TRUTH_BRANCHES`.
    """

    def __init__(
        self,
        file,
        delayed: bool,
        write_singles: bool = True,
        volume_ids: np.ndarray | None = None,
        volume_id_branches: bool = True,
        truth: bool = True,
    ):
        import awkward as ak

        # The string type parsed once: uproot would parse the datashape "string" for every string
        # branch (~20 ms each with awkward's parser); the written branch type is the same.
        string = ak.types.from_datashape("string", highlevel=False)

        def spec(schema: Mapping[str, object]) -> dict:
            return {k: (string if t == "string" else t) for k, t in schema.items()}

        self.file = file
        self.write_singles = write_singles
        self.id_table = volume_id_table(volume_ids) if volume_ids is not None else None
        self.singles_schema = {
            k: t
            for k, t in SINGLES_BRANCHES.items()
            if (volume_id_branches or k != "PreStepUniqueVolumeID") and (truth or k not in TRUTH_BRANCHES)
        }
        self.pair_schema = pair_branches(self.singles_schema)
        if write_singles:
            self.file.mktree("Singles", spec(self.singles_schema), title="Singles (fast engine, GATE schema)")
        self.file.mktree("Coincidences", spec(self.pair_schema), title="Prompt coincidences")
        self.delayed = delayed
        if delayed:
            self.file.mktree("Delayed", spec(self.pair_schema), title="Delayed-window coincidences")

    def _typed(self, columns: Mapping[str, np.ndarray], schema: Mapping[str, object]) -> dict:
        out = {}
        for name, typ in schema.items():
            if typ != "string":
                out[name] = np.ascontiguousarray(columns[name], dtype=typ)
            elif name in columns:
                out[name] = string_column(columns[name])
            else:
                crystal = columns[name.replace("PreStepUniqueVolumeID", "CrystalID")]
                if self.id_table is None:
                    raise ValueError(f"column {name} is missing and no volume_ids were given to derive it")
                out[name] = string_column_from_ids(crystal, self.id_table)
        return out

    def add(
        self,
        singles: Mapping[str, np.ndarray],
        prompts: Mapping[str, np.ndarray],
        delayed: Mapping[str, np.ndarray] | None,
    ) -> None:
        """Append one batch to each tree (empty batches are skipped; singles are ignored, and may
        be None, when the writer was made with ``write_singles=False``)."""
        if self.write_singles and singles is not None and len(singles["EventID"]):
            self.file["Singles"].extend(self._typed(singles, self.singles_schema))
        if len(prompts["EventID1"]):
            self.file["Coincidences"].extend(self._typed(prompts, self.pair_schema))
        if self.delayed and delayed is not None and len(delayed["EventID1"]):
            self.file["Delayed"].extend(self._typed(delayed, self.pair_schema))

    def write_singles_rates(self, counts: np.ndarray) -> None:
        """Write the ``SinglesRates`` tree: one entry per crystal, ``CrystalID`` and ``Counts``
        (singles in the energy window over the whole acquisition). Call once, at the end."""
        counts = np.asarray(counts, dtype=np.int64)
        self.file.mktree(
            "SinglesRates",
            {"CrystalID": np.int32, "Counts": np.int64},
            title="Singles per crystal in the energy window, whole acquisition",
        )
        self.file["SinglesRates"].extend({"CrystalID": np.arange(counts.size, dtype=np.int32), "Counts": counts})


@contextlib.contextmanager
def open_writer(
    path: str | Path,
    delayed: bool,
    compression_level: int = 1,
    write_singles: bool = True,
    volume_ids: np.ndarray | None = None,
    volume_id_branches: bool = True,
    truth: bool = True,
) -> Iterator[RootWriter]:
    """Write ``path`` atomically through a :class:`RootWriter`.

    Params:
        path: the destination ``.root`` file.
        delayed: create the ``Delayed`` tree.
        compression_level: ZSTD level (0: none). ZSTD 1 is ~4x faster than ZLIB 1 for the same
            size; ROOT >= 6.20 reads it, and uproot through cramjam (one of its dependencies).
        write_singles: create and fill the ``Singles`` tree.
        volume_ids: id string of every CrystalID, to derive ``PreStepUniqueVolumeID`` columns
            that the engine did not produce.
        volume_id_branches: write the ``PreStepUniqueVolumeID`` string branches.
        truth: write the Monte Carlo truth branches (:data:`TRUTH_BRANCHES`).
    """
    import uproot

    with atomic_path(path) as tmp:
        compression = uproot.ZSTD(compression_level) if compression_level > 0 else None
        with uproot.recreate(tmp, compression=compression) as f:
            yield RootWriter(
                f,
                delayed,
                write_singles=write_singles,
                volume_ids=volume_ids,
                volume_id_branches=volume_id_branches,
                truth=truth,
            )


@contextlib.contextmanager
def open_tree(path: str | Path, tree: str) -> Iterator[object]:
    """Open one tree of a simulation ROOT file (an uproot TTree) for reading.

    Every way a file can be unusable (missing, empty, truncated, not ROOT, no such tree, a read
    failing inside the block) becomes one ArtifactError naming the file, so stages never show
    uproot's tracebacks.

    Params:
        path: the ROOT file.
        tree: ``Singles``, ``Coincidences`` or ``Delayed``.
    Yields:
        The tree, valid inside the ``with`` block.
    Raises:
        ArtifactError: as above.
    """
    import uproot

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ArtifactError(f"{path}: empty file (an interrupted simulation?); rerun the simulate step")
    try:
        with uproot.open(path) as f:
            if tree not in f:
                have = sorted({k.split(";")[0] for k in f.keys()})
                raise ArtifactError(
                    f"{path}: no tree '{tree}' (it has {have}); was it written by positrongan simulate?"
                )
            yield f[tree]
    except ArtifactError:
        raise
    except Exception as exc:  # uproot raises many types on a truncated/corrupt file
        detail = " ".join(str(exc).split())[:200]  # uproot's messages span lines; the CLI prints one
        raise ArtifactError(
            f"{path}: not a readable ROOT file ({type(exc).__name__}: {detail}); it may be truncated or corrupt"
        ) from None


def tree_branches(path: str | Path, tree: str) -> set[str]:
    """The branch names of one tree (errors as :func:`open_tree`)."""
    with open_tree(path, tree) as t:
        return set(t.keys())


def read_tree(path: str | Path, tree: str, branches: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read a tree of a simulation ROOT file into numpy arrays, with errors that name the file.

    Params:
        path: the ROOT file.
        tree: ``Singles``, ``Coincidences`` or ``Delayed``.
        branches: branches to read (default: all).
    Returns:
        dict branch -> array.
    Raises:
        ArtifactError: missing, truncated or corrupt file, or a missing tree/branch.
    """
    with open_tree(path, tree) as t:
        missing = [b for b in (branches or []) if b not in t.keys()]
        if missing:
            raise ArtifactError(f"{path}: tree '{tree}' lacks branch(es) {missing}")
        arrays = t.arrays(branches, library="np")
    return {k: np.asarray(v) for k, v in arrays.items()}


def read_singles_counts(path: str | Path, n_crystals: int | None = None) -> np.ndarray | None:
    """Singles per crystal in the energy window over the whole acquisition, from ``SinglesRates``.

    Params:
        path: the ROOT file.
        n_crystals: length of the result (default: the largest CrystalID + 1 in the tree).
    Returns:
        int64 array indexed by CrystalID, or None when the file has no ``SinglesRates`` tree
        (files written before it existed). Divide by the acquisition time for rates [1/s].
    Raises:
        ArtifactError: missing, truncated or corrupt file; a CrystalID out of range.
    """
    if "SinglesRates" not in tree_names(path):
        return None
    t = read_tree(path, "SinglesRates", ["CrystalID", "Counts"])
    ids = t["CrystalID"].astype(np.int64)
    size = int(n_crystals) if n_crystals is not None else (int(ids.max()) + 1 if ids.size else 0)
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise ArtifactError(f"{path}: SinglesRates CrystalID outside 0..{size - 1}")
    out = np.zeros(size, np.int64)
    np.add.at(out, ids, t["Counts"].astype(np.int64))
    return out


def tree_names(path: str | Path) -> set[str]:
    """Names of the trees in a simulation ROOT file (errors as :func:`open_tree`)."""
    import uproot

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file not found")
    try:
        with uproot.open(path) as f:
            return {k.split(";")[0] for k in f.keys()}
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ArtifactError(f"{path}: not a readable ROOT file ({type(exc).__name__}: {detail})") from None
