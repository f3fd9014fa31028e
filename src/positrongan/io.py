"""Atomic artifact writing and small readers shared by every stage.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so an interrupted job leaves either the old file or nothing, never half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import ArtifactError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Params:
        path: the final destination. Its parent folders are created.
        suffix: suffix of the temporary file (defaults to the destination's, so libraries
            that pick a format from the extension still see it).
    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; artifacts are shared results, so give them the usual umask mode.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder (e.g. a DICOM series): built aside, then renamed."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (numpy scalars and arrays converted)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"cannot serialise {type(obj).__name__}")

    write_text(path, json.dumps(data, indent=2, default=default) + "\n")


def save_npz(path: str | Path, **arrays: Any) -> None:
    """Write a compressed ``.npz`` atomically. Dicts are stored as JSON strings."""
    packed = {k: (np.array(json.dumps(v)) if isinstance(v, Mapping) else v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **packed)


def load_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read a ``.npz`` fully into memory, checking the keys a stage needs.

    Params:
        path: the artifact.
        required: keys that must be present.
    Returns:
        A dict of arrays.
    Raises:
        ArtifactError: naming the file, when it is missing, corrupt or lacks a key.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile, pickle and value errors all mean "corrupt" here
        raise ArtifactError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ArtifactError(f"{path}: missing array(s) {missing}; was it written by another version?")
    return out


def read_json(path: str | Path) -> Any:
    """Read a JSON artifact, with a clear error naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc})") from None
