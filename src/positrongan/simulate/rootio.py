"""The GATE ROOT schema of ``sim/{scan}.root``, written incrementally and read back with uproot.

Trees (docs/contract.md): ``Singles`` with GATE's branch names and units (ns, MeV, mm) plus
``CrystalID`` and truth branches; ``Coincidences`` with every Singles branch suffixed 1 and 2
(opengate's sorter convention); ``Delayed`` with the same schema when the delayed window is on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from ..errors import ArtifactError
from ..io import atomic_path

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


def pair_branches() -> dict[str, object]:
    """Branch types of the Coincidences / Delayed trees."""
    out: dict[str, object] = {}
    for name, typ in SINGLES_BRANCHES.items():
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


class RootWriter:
    """Append-only writer of the three trees; the file appears only when closed without error.

    Use :func:`open_writer` (a context manager).
    """

    def __init__(self, file, delayed: bool):
        import awkward as ak

        # The string type parsed once: uproot would parse the datashape "string" for every string
        # branch (~20 ms each with awkward's parser); the written branch type is the same.
        string = ak.types.from_datashape("string", highlevel=False)

        def spec(schema: Mapping[str, object]) -> dict:
            return {k: (string if t == "string" else t) for k, t in schema.items()}

        self.file = file
        self.file.mktree("Singles", spec(SINGLES_BRANCHES), title="Singles (fast engine, GATE schema)")
        self.file.mktree("Coincidences", spec(pair_branches()), title="Prompt coincidences")
        self.delayed = delayed
        if delayed:
            self.file.mktree("Delayed", spec(pair_branches()), title="Delayed-window coincidences")

    @staticmethod
    def _typed(columns: Mapping[str, np.ndarray], schema: Mapping[str, object]) -> dict:
        out = {}
        for name, typ in schema.items():
            col = columns[name]
            out[name] = string_column(col) if typ == "string" else np.ascontiguousarray(col, dtype=typ)
        return out

    def add(
        self,
        singles: Mapping[str, np.ndarray],
        prompts: Mapping[str, np.ndarray],
        delayed: Mapping[str, np.ndarray] | None,
    ) -> None:
        """Append one batch to each tree (empty batches are skipped)."""
        if len(singles["EventID"]):
            self.file["Singles"].extend(self._typed(singles, SINGLES_BRANCHES))
        if len(prompts["EventID1"]):
            self.file["Coincidences"].extend(self._typed(prompts, pair_branches()))
        if self.delayed and delayed is not None and len(delayed["EventID1"]):
            self.file["Delayed"].extend(self._typed(delayed, pair_branches()))


@contextlib.contextmanager
def open_writer(path: str | Path, delayed: bool, compression_level: int = 1) -> Iterator[RootWriter]:
    """Write ``path`` atomically through a :class:`RootWriter`.

    Params:
        path: the destination ``.root`` file.
        delayed: create the ``Delayed`` tree.
        compression_level: ZSTD level (0: none). ZSTD 1 is ~4x faster than ZLIB 1 for the same
            size; ROOT >= 6.20 reads it, and uproot through cramjam (one of its dependencies).
    """
    import uproot

    with atomic_path(path) as tmp:
        compression = uproot.ZSTD(compression_level) if compression_level > 0 else None
        with uproot.recreate(tmp, compression=compression) as f:
            yield RootWriter(f, delayed)


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
