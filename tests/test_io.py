"""Atomic artifact writes: an interrupted write leaves no partial file; bad inputs are named."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from positrongan.errors import ArtifactError
from positrongan.io import atomic_dir, atomic_path, load_npz, read_json, save_npz, write_json


def test_failed_write_leaves_nothing(tmp_path):
    dest = tmp_path / "out" / "a.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_failed_write_keeps_the_previous_artifact(tmp_path):
    dest = tmp_path / "a.txt"
    dest.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dest) as tmp:
            tmp.write_text("new but incomplete")
            raise KeyboardInterrupt
    assert dest.read_text() == "old"


def test_killed_process_leaves_no_partial_artifact(tmp_path):
    dest = tmp_path / "big.bin"
    code = f"""
import time
from positrongan.io import atomic_path
with atomic_path({str(dest)!r}) as tmp:
    with open(tmp, "wb") as fh:
        fh.write(b"x" * 1000)
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not dest.exists()


def test_artifacts_get_the_usual_permissions(tmp_path):
    dest = tmp_path / "a.txt"
    with atomic_path(dest) as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_dir(tmp_path):
    dest = tmp_path / "series"
    with pytest.raises(ValueError):
        with atomic_dir(dest) as tmp:
            (tmp / "1.dcm").write_bytes(b"x")
            raise ValueError
    assert not dest.exists()
    with atomic_dir(dest) as tmp:
        (tmp / "1.dcm").write_bytes(b"x")
    assert (dest / "1.dcm").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["series"]


def test_npz_round_trip_and_clear_errors(tmp_path):
    path = tmp_path / "a.npz"
    save_npz(path, image=np.arange(6.0).reshape(2, 3), meta={"scan": "scan_000"})
    data = load_npz(path, required=("image",))
    assert np.array_equal(data["image"], np.arange(6.0).reshape(2, 3))
    with pytest.raises(ArtifactError, match="missing array"):
        load_npz(path, required=("sinogram",))
    with pytest.raises(ArtifactError, match="nope.npz"):
        load_npz(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ArtifactError, match="bad.npz"):
        load_npz(bad)


def test_json_round_trip(tmp_path):
    write_json(tmp_path / "m.json", {"counts": np.int64(3), "pos": np.array([1.0, 2.0])})
    assert read_json(tmp_path / "m.json") == {"counts": 3, "pos": [1.0, 2.0]}
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ArtifactError, match="x.json"):
        read_json(tmp_path / "x.json")


def test_write_errors_name_the_output_but_input_errors_pass_through(tmp_path):
    import errno

    from positrongan.errors import OutputError

    dest = tmp_path / "a.npz"
    with pytest.raises(OutputError, match=f"cannot write {dest}: no space left in {tmp_path}"):
        with atomic_path(dest):
            raise OSError(errno.ENOSPC, "No space left on device")
    # An error about another file (an input read inside the block) is not a write error.
    with pytest.raises(PermissionError):
        with atomic_path(dest):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "input.root"))
    assert list(tmp_path.iterdir()) == []


def test_check_output(tmp_path):
    from positrongan.errors import OutputError
    from positrongan.io import check_output, stale_temporaries

    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(OutputError, match="it is a folder, where a file goes"):
        check_output(tmp_path / "dir.npz")
    (tmp_path / "file_dicom").write_text("x")
    with pytest.raises(OutputError, match="it is a file, where a folder goes"):
        check_output(tmp_path / "file_dicom", folder=True)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(tmp_path / "file_dicom" / "a.npz")
    # Stale temporaries of this output (the pattern of atomic_path) go; look-alikes stay.
    stale = tmp_path / ".scan_000.ab_cd123.tmp.root"
    stale.write_text("x")
    keep = [tmp_path / ".scan_000.ab_cd123.tmp.json", tmp_path / ".scan_0001.ab_cd123.tmp.root"]
    for p in keep:
        p.write_text("x")
    assert stale_temporaries(tmp_path / "scan_000.root") == [stale]
    check_output(tmp_path / "scan_000.root")
    assert not stale.exists() and all(p.exists() for p in keep)
