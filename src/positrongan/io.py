"""Atomic artifact writing and small readers shared by every stage.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so an interrupted job leaves either the old file or nothing, never half a file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import ArtifactError, OutputError

# Errors of writing (not of the computation inside an atomic block): reported as one message
# naming the output instead of a traceback.
_WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EIO,
}
# Below this, an output folder is treated as full before a stage starts computing.
MIN_FREE_BYTES = 1 << 20
# tempfile's random part: 8 characters of [a-z0-9_].
_RANDOM = "[a-z0-9_]{8}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_error(path: Path, exc: OSError) -> OutputError:
    folder = path.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        try:
            free = f", {shutil.disk_usage(folder).free / 1e6:.1f} MB free"
        except OSError:
            free = ""
        what = f"no space left in {folder} ({exc.strerror}{free}); free some space and rerun"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = f"the folder {folder} is not writable ({exc.strerror}); make it writable or choose another output path"
    elif exc.errno == errno.EISDIR:
        what = "it is a folder; remove it or choose another output path"
    elif exc.errno == errno.ENOTDIR:
        what = f"a part of {folder} is a file, not a folder ({exc.strerror})"
    else:
        what = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {what}")


def _is_write_error(exc: BaseException, *ours: Path) -> bool:
    # An OSError about some other file (an input read inside the block) is not a write error.
    if not isinstance(exc, OSError) or exc.errno not in _WRITE_ERRNOS:
        return False
    return exc.filename is None or any(Path(exc.filename) == p for p in ours)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write {path}: {path.parent} is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: cannot create the folder {path.parent} ({exc.strerror})") from None


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files or folders that :func:`atomic_path` / :func:`atomic_dir` left for
    ``path`` when their process was killed (SIGKILL, power loss)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    file_tmp = re.compile(rf"^\.{re.escape(path.stem)}\.{_RANDOM}\.tmp{re.escape(path.suffix)}$")
    dir_tmp = re.compile(rf"^\.{re.escape(path.name)}\.{_RANDOM}\.tmp$")
    return [p for p in path.parent.iterdir() if file_tmp.match(p.name) or dir_tmp.match(p.name)]


def check_output(path: str | Path, folder: bool = False) -> None:
    """Make sure ``path`` can be written before a stage computes it; remove its stale temporaries.

    Params:
        path: an output of the stage.
        folder: the output is a folder (a DICOM series, a corpus), not a file.
    Raises:
        OutputError: naming the path, when it is a folder where a file goes (or the reverse), its
            folder cannot be created or written, or the disk is full.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind, want = ("a folder", "a file") if path.is_dir() else ("a file", "a folder")
        raise OutputError(f"cannot write {path}: it is {kind}, where {want} goes; remove it or choose another path")
    _make_parent(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _write_error(path, exc) from None
    if shutil.disk_usage(path.parent).free < MIN_FREE_BYTES:
        raise _write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    for tmp in stale_temporaries(path):
        # A killed job's leftover (up to ~200 MB for a scan's ROOT file): nothing else removes it.
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


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
    _make_parent(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder, where a file goes; remove it or choose another path")
    suffix = path.suffix if suffix is None else suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; artifacts are shared results, so give them the usual umask mode.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _is_write_error(exc, tmp, path):
            raise _write_error(path, exc) from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder (e.g. a DICOM series): built aside, then renamed."""
    path = Path(path)
    _make_parent(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot write {path}: it is a file, where a folder goes; remove it or choose another path")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (
            isinstance(exc, OSError)
            and exc.errno in _WRITE_ERRNOS
            and (exc.filename is None or Path(exc.filename).parent in (tmp, path.parent) or Path(exc.filename) == path)
        ):
            raise _write_error(path, exc) from None
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


def load_torch(path: str | Path, required: tuple[str, ...] = (), what: str = "torch file") -> dict[str, Any]:
    """Read a ``.pt`` artifact (model, generator, checkpoint) with ``weights_only=True``.

    Pickled Python objects are never loaded: they can run code. Tensors land on the CPU.

    Params:
        path: the artifact.
        required: keys the stored dict must have.
        what: what the file should be, for the messages (``"VAE model file"``).
    Returns:
        The stored dict.
    Raises:
        ArtifactError: naming the file, when it is missing, unreadable, not a dict or lacks a key.
    """
    import torch  # here, not at the top: most stages never read a torch file

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- zip, pickle and runtime errors all mean "corrupt" here
        raise ArtifactError(f"{path}: not a readable {what} ({exc})") from None
    missing = [k for k in required if not isinstance(blob, dict) or k not in blob]
    if not isinstance(blob, dict) or missing:
        raise ArtifactError(f"{path}: not a {what} (expected keys {sorted(required)}, missing {missing})")
    return blob
