"""The fault suite (issue 15): bad config values, bad inputs, unwritable outputs, signals.

Every case asserts three things: the exit code, one message naming the key or file, and that
no existing artifact was deleted or changed (checksums and mtimes before and after). The
Snakemake cases rerun a finished tiny workflow (tests/configs/faults_tiny.yaml, built once per
session, about 3 minutes on 2 cores) in a temporary folder.

Read-only folders and a full disk need root here (a read-only bind mount, a small tmpfs); as
another user the read-only cases use chmod and the full disk is simulated (ENOSPC raised by the
write), so the suite runs everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from positrongan import io as pio
from positrongan.cli import COMMANDS, OUTPUTS, build_parser, main
from positrongan.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "faults_tiny.yaml"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
IS_ROOT = os.geteuid() == 0


# ---- helpers ----------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: relative path -> (sha256, mtime_ns)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def snakemake(*args, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "snakemake"), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def positrongan(*args, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "positrongan"), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def _can_mount() -> bool:
    if not IS_ROOT:
        return False
    probe = Path(f"/tmp/positrongan_mount_probe_{os.getpid()}")
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
    if ok.returncode == 0:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return ok.returncode == 0


CAN_MOUNT = _can_mount()


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` unwritable: a read-only bind mount as root (root ignores modes), else chmod."""
    if CAN_MOUNT:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True)
    elif IS_ROOT:
        pytest.skip("root without mount: no way to make a folder read-only")
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted at ``folder`` (root only)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def tiny_cfg(tmp: Path, **sections) -> Path:
    """The tiny config with some sections changed, as a file."""
    cfg = yaml.safe_load(TINY.read_text())
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """A tiny workflow run to the end, in a temporary folder."""
    work = tmp_path_factory.mktemp("finished")
    for item in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    shutil.copy(TINY, work / "tiny.yaml")
    res = snakemake("--cores", "2", "--configfile", "tiny.yaml", cwd=work, timeout=1800)
    assert res.returncode == 0, res.stderr[-4000:]
    return work


# ---- config faults: refused before planning, nothing lost ------------------------------------

# (YAML text of the bad config, the key its message must name). Each was, or would be, a late
# stage error: Snakemake removes a job's old outputs before running it, so a late config error
# costs them (a bad digitizer key cost every simulation).
CONFIG_FAULTS = [
    ("reconstruction: {subsets: 150}", "reconstruction.subsets"),
    ("digitizer: {delayed_offset_ns: 5.0}", "digitizer.delayed_offset_ns"),
    ("features: {method: pcanet, pcanet_filters: [8, 20]}", "features.pcanet_filters"),
    ("phantom: {outer_semi_axes_mm: [70.0, 40.0]}", "phantom.outer_semi_axes_mm"),  # bore radius 61 mm
    ("phantom: {outer_semi_axes_mm: [45.0, 30.0]}", "reconstruction.fov_mm"),  # 45 + 6 mm > 96 / 2
    ("phantom: {wall_thickness_mm: 30.0}", "phantom.wall_thickness_mm"),
    ("scanner: {crystals_per_ring: 95}", "scanner.crystals_per_ring"),
    ("reconstruction: {fov_mm: 130.0}", "reconstruction.fov_mm"),  # ring inner diameter 122 mm
    ("evaluation: {msssim_window: 6}", "evaluation.msssim_window"),
    ("evaluation: {swd_min_size: 64}", "evaluation.swd_min_size"),  # images are 32 px
    ("ct: {synthetic_size: 32}", "ct.min_size"),
    ("dataset: {split: [0.9, 0.9, 0.1]}", "dataset.split"),
    ("colour: red", "colour"),
    ("phantom: {activty_bq: 5}", "phantom.activty_bq"),
]


@pytest.mark.slow
@pytest.mark.parametrize("text, key", CONFIG_FAULTS, ids=[k for _, k in CONFIG_FAULTS])
def test_config_fault_is_refused_before_planning_and_loses_nothing(finished, tmp_path, text, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "\n")
    before = snapshot(finished / "results")

    dry = snakemake("-n", "--cores", "2", "--configfile", "tiny.yaml", str(bad), cwd=finished)
    out = dry.stdout + dry.stderr
    assert dry.returncode != 0
    assert f"'{key}'" in out
    assert "Building DAG" not in out and "Job stats" not in out, "the config error came after planning"
    assert len(out.splitlines()) < 15, "more than a short message (the schema printed?)"

    cli = positrongan("config", "-c", str(finished / "tiny.yaml"), "-c", str(bad))
    assert cli.returncode == 2
    assert f"'{key}'" in cli.stderr and "Traceback" not in cli.stderr

    run = snakemake("--cores", "2", "--configfile", "tiny.yaml", str(bad), cwd=finished)
    assert run.returncode != 0
    assert f"'{key}'" in run.stdout + run.stderr
    assert snapshot(finished / "results") == before


@pytest.mark.slow
@pytest.mark.parametrize("text", ["", "phantom:\n  activity_bq: [1,\n"], ids=["empty", "yaml_syntax"])
def test_unreadable_config_file_loses_nothing(finished, tmp_path, text):
    # Snakemake reads --configfile before the Snakefile, so its own message (which names neither
    # file nor line) is what it prints; `positrongan config` names both.
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    before = snapshot(finished / "results")
    run = snakemake("--cores", "2", "--configfile", "tiny.yaml", str(bad), cwd=finished)
    assert run.returncode != 0
    assert "Config file" in run.stdout + run.stderr
    cli = positrongan("config", "-c", str(bad))
    assert cli.returncode == 2 and "bad.yaml" in cli.stderr
    assert ("line 3" in cli.stderr) if text else ("is empty" in cli.stderr)
    assert snapshot(finished / "results") == before


@pytest.mark.slow
def test_numbers_as_text_and_two_scans_plan_with_a_warning(finished, tmp_path):
    # activity_bq: 4e6 is text to PyYAML: accepted as the number it means. Two scans leave the
    # validation split empty: planned, with a warning naming scans.count.
    ok = tmp_path / "ok.yaml"
    ok.write_text("phantom: {activity_bq: 4e6}\nscans: {count: 2}\n")
    before = snapshot(finished / "results")
    dry = snakemake("-n", "--cores", "2", "--configfile", "tiny.yaml", str(ok), cwd=finished)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "'scans.count' = 2" in dry.stdout + dry.stderr
    assert snapshot(finished / "results") == before


@pytest.mark.slow
def test_read_only_results_folder_is_refused_before_any_job(finished, tmp_path):
    # A changed evaluation key reruns the evaluation, whose folder is read-only.
    change = tmp_path / "change.yaml"
    change.write_text("evaluation: {msssim_pairs: 3}\n")
    before = snapshot(finished / "results")
    with read_only(finished / "results" / "eval"):
        run = snakemake("--cores", "2", "--configfile", "tiny.yaml", str(change), cwd=finished)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "results/eval" in out
    assert "remove_existing_output" not in out and "Traceback" not in out
    assert snapshot(finished / "results") == before


# ---- write faults: one message naming the path, before the work -------------------------------


def test_every_output_option_exists():
    # cli.OUTPUTS drives the up-front write checks: every command declares its outputs, and each
    # named option is a real option of that command.
    assert set(OUTPUTS) == set(COMMANDS)
    for command, outputs in OUTPUTS.items():
        dests = {a.dest for a in build_parser(command)._subparsers._group_actions[0].choices[command]._actions}
        assert set(outputs) <= dests, command


def test_output_path_that_is_a_folder(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    folder = tmp_path / "resolved.yaml"
    (folder / "inside").mkdir(parents=True)
    (folder / "inside" / "old.txt").write_text("kept")
    before = snapshot(tmp_path)
    assert main(["config", "-c", str(cfg), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {folder}: it is a folder" in err and len(err.splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_read_only_output_folder_is_refused_before_computing(tmp_path):
    cfg = tiny_cfg(tmp_path)
    out = tmp_path / "ro"
    out.mkdir()
    (out / "positron_features.npz").write_bytes(b"old artifact")
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    with read_only(out):
        res = positrongan(
            "extract-features", "-c", str(cfg), "--dataset", str(tmp_path / "missing.npz"),
            "--out", str(out / "positron_features.npz"),
        )  # fmt: skip
    assert res.returncode == 2
    # The output is checked first: the missing input is not even reached.
    assert f"cannot write {out / 'positron_features.npz'}: the folder {out} is not writable" in res.stderr
    assert "Traceback" not in res.stderr and time.perf_counter() - t0 < 60
    assert snapshot(tmp_path) == before


def _fill(folder: Path, leave: int) -> None:
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


@pytest.mark.skipif(not CAN_MOUNT, reason="needs root and tmpfs (the simulated case below runs instead)")
def test_full_disk_is_refused_before_computing(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with small_disk(tmp_path / "disk", "2m") as disk:
        (disk / "config.yaml").write_text("old")
        _fill(disk, 64 * 1024)
        before = snapshot(disk)
        res = positrongan("config", "-c", str(cfg), "--out", str(disk / "config.yaml"))
        assert res.returncode == 2
        assert f"cannot write {disk / 'config.yaml'}: no space left in {disk}" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert snapshot(disk) == before


@pytest.mark.skipif(not CAN_MOUNT, reason="needs root and tmpfs (the simulated case below runs instead)")
def test_disk_full_while_writing_keeps_the_old_artifact(tmp_path):
    with small_disk(tmp_path / "disk", "4m") as disk:
        pio.save_npz(disk / "a.npz", x=np.zeros(10))
        before = snapshot(disk)
        noise = np.random.default_rng(0).random(1_000_000)  # 8 MB, incompressible
        with pytest.raises(OutputError, match=f"cannot write {disk / 'a.npz'}: no space left in {disk}") as err:
            pio.save_npz(disk / "a.npz", x=noise)
        assert err.value.__cause__ is None and err.value.__suppress_context__
        assert snapshot(disk) == before  # the old file, and no temporary left


def test_disk_full_while_writing_simulated(tmp_path, monkeypatch, capsys):
    # The same fault without root: the write itself raises ENOSPC.
    cfg = tiny_cfg(tmp_path)
    out = tmp_path / "resolved.yaml"
    out.write_text("old")
    before = snapshot(tmp_path)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    assert main(["config", "-c", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out}: no space left in {tmp_path}" in err and len(err.splitlines()) == 1
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_stale_temporaries_of_an_output_are_removed_when_its_stage_starts(tmp_path):
    cfg = tiny_cfg(tmp_path)
    out = tmp_path / "res"
    out.mkdir()
    stale = [out / ".config.k3j9x_2a.tmp.yaml", out / ".scan_000_dicom.abcdefgh.tmp"]
    stale[0].write_bytes(b"x" * 1000)
    stale[1].mkdir()
    other = out / ".other.abcdefgh.tmp.yaml"  # another output's: not ours to remove
    other.write_text("x")
    assert main(["config", "-c", str(cfg), "--out", str(out / "config.yaml")]) == 0
    assert not stale[0].exists() and other.exists()
    assert pio.stale_temporaries(out / "scan_000_dicom") == [stale[1]]


# ---- signals: no partial artifact, a clear message --------------------------------------------


def _start(args: list[str]) -> subprocess.Popen:
    # Ctrl-C's SIGINT as a terminal delivers it: a shell without job control (a CI script's
    # `cmd &`) starts its background commands with SIGINT ignored, and the CLI would inherit that.
    return subprocess.Popen(
        [str(BIN / "positrongan"), *args],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _simulate_until_writing(tmp_path: Path, sig: int) -> tuple[subprocess.CompletedProcess, dict, dict]:
    cfg = tiny_cfg(tmp_path, phantom={"activity_bq": 5.0e6}, simulation={"engine": "fast", "chunk_decays": 20000})
    sim = tmp_path / "sim"
    sim.mkdir()
    for name in ("scan_000.root", "scan_000.json", "scan_000.npz"):
        (sim / name).write_text(f"old {name}")
    before = snapshot(sim)
    args = ["simulate", "-c", str(cfg), "--scan", "scan_000", "--root", str(sim / "scan_000.root")]
    args += ["--meta", str(sim / "scan_000.json"), "--truth", str(sim / "scan_000.npz")]
    proc = _start(args)
    deadline = time.time() + 120
    while not list(sim.glob(".scan_000.*.tmp.root")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the simulation never started writing"
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, "", err), before, snapshot(sim)


def test_sigterm_leaves_no_partial_artifact(tmp_path):
    # SIGTERM is what a SLURM cancel or time limit sends.
    res, before, after = _simulate_until_writing(tmp_path, signal.SIGTERM)
    assert res.returncode == 143
    assert "positrongan simulate: terminated (SIGTERM" in res.stderr and "Traceback" not in res.stderr
    assert after == before  # the old artifacts, and no temporary file


def test_sigint_leaves_no_partial_artifact(tmp_path):
    res, before, after = _simulate_until_writing(tmp_path, signal.SIGINT)
    assert res.returncode == 130
    assert "positrongan simulate: interrupted" in res.stderr and "Traceback" not in res.stderr
    assert after == before


def test_sigterm_during_training_keeps_the_checkpoint(tmp_path):
    import torch

    cfg = tiny_cfg(tmp_path, training={"iterations": 5000, "checkpoint_every": 1})
    ds = tmp_path / "positron.npz"
    rng = np.random.default_rng(0)
    pio.save_npz(ds, images=rng.random((8, 32, 32)).astype(np.float32), split=np.array(["train"] * 6 + ["test"] * 2))
    out = tmp_path / "train"
    args = ["train", "-c", str(cfg), "--method", "dcgan", "--dataset", str(ds), "--checkpoint", str(out / "c.pt")]
    args += ["--generator", str(out / "g.pt"), "--losses", str(out / "l.csv"), "--samples", str(out / "s.png")]
    proc = _start(args)
    deadline = time.time() + 120
    while not (out / "c.pt").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated (SIGTERM" in err and "Traceback" not in err
    assert not (out / "g.pt").exists(), "a generator of an unfinished run"
    assert not list(out.glob(".*")), "a temporary file was left"
    state = torch.load(out / "c.pt", map_location="cpu", weights_only=True)
    assert state["step"] >= 1


# ---- bad inputs: refused naming the file, outputs kept ----------------------------------------


def _refused(tmp_path: Path, capsys, argv: list[str], names: str, outputs: list[Path]) -> str:
    for p in outputs:
        p.write_bytes(b"old artifact")
    before = snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err
    for unsafe in ("weights_only=False", "weights_only` set to `False", "allow_pickle=True", "safe_globals"):
        assert unsafe not in err, err
    assert snapshot(tmp_path) == before
    return err


def test_corrupt_root_file(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    bad = tmp_path / "scan_000.root"
    bad.write_bytes(b"not a ROOT file" * 100)
    out = tmp_path / "scan_000.npz"
    argv = ["reconstruct", "-c", str(cfg), "--scan", "scan_000", "--root", str(bad), "--out", str(out)]
    argv += ["--set", "reconstruction.attenuation_correction=false"]
    _refused(tmp_path, capsys, argv, str(bad), [out])


def test_corrupt_npz(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    bad = tmp_path / "positron.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    out = tmp_path / "features.npz"
    _refused(tmp_path, capsys, ["extract-features", "-c", str(cfg), "--dataset", str(bad), "--out", str(out)],
             str(bad), [out])  # fmt: skip


def test_npz_with_pickled_objects_is_refused_without_unsafe_advice(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    bad = tmp_path / "positron.npz"
    np.savez(bad, images=np.array([{"x": 1}], dtype=object))
    out = tmp_path / "features.npz"
    err = _refused(
        tmp_path, capsys, ["extract-features", "-c", str(cfg), "--dataset", str(bad), "--out", str(out)],
        str(bad), [out],
    )  # fmt: skip
    assert "pickled Python objects" in err


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_generator_is_refused_without_unsafe_advice(tmp_path, capsys):
    import torch

    cfg = tiny_cfg(tmp_path)
    evil = tmp_path / "generator.pt"
    torch.save({"method": "dcgan", "state_dict": _Evil(), "hparams": {}}, evil)
    out = tmp_path / "dcgan.npz"
    argv = ["sample", "-c", str(cfg), "--method", "dcgan", "--generator", str(evil), "--out", str(out)]
    err = _refused(tmp_path, capsys, argv, str(evil), [out])
    assert "pickled Python objects" in err


def test_corrupt_checkpoint(tmp_path, capsys):
    from positrongan.train.checkpoint import load_checkpoint  # noqa: F401 -- the reader under test

    cfg = tiny_cfg(tmp_path)
    ds = tmp_path / "positron.npz"
    rng = np.random.default_rng(0)
    pio.save_npz(
        ds, images=rng.random((6, 32, 32)).astype(np.float32), split=np.array(["train"] * 4 + ["test"] * 2),
    )  # fmt: skip
    ckpt = tmp_path / "checkpoint.pt"
    outs = [tmp_path / n for n in ("generator.pt", "losses.csv", "samples.png")]
    for p in outs:
        p.write_bytes(b"old artifact")
    ckpt.write_bytes(b"not a checkpoint")
    before = snapshot(tmp_path)
    argv = ["train", "-c", str(cfg), "--method", "dcgan", "--dataset", str(ds), "--checkpoint", str(ckpt)]
    argv += ["--generator", str(outs[0]), "--losses", str(outs[1]), "--samples", str(outs[2])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


# ---- DICOM: only true attributes ----------------------------------------------------------------

# Type 1 attributes of the PET Image IOD's modules (patient, study, series, PET series, frame of
# reference, image plane, image pixel, PET image, SOP common): present and not empty.
PET_TYPE1 = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "FrameOfReferenceUID", "SeriesDate", "SeriesTime", "Units", "CountsSource", "SeriesType",
    "DecayCorrection", "NumberOfSlices", "ImageType", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleIntercept", "RescaleSlope",
    "FrameReferenceTime", "ImageIndex", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
    "SliceThickness", "Rows", "Columns", "PixelData",
)  # fmt: skip
# Type 2: present, may be empty.
PET_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "InstanceNumber", "Manufacturer",
    "PositionReferenceIndicator", "CorrectedImage", "CollimatorType", "AcquisitionDate", "AcquisitionTime",
    "ActualFrameDuration", "RadiopharmaceuticalInformationSequence", "PatientOrientationCodeSequence",
    "PatientGantryRelationshipCodeSequence",
)  # fmt: skip


@pytest.mark.parametrize("ac, rc", [(True, True), (False, False), (True, False), (False, True)])
def test_dicom_claims_only_the_corrections_applied(tmp_path, ac, rc):
    import pydicom

    from positrongan.recon.dicom import PET_IMAGE_STORAGE, write_series

    vol = np.random.default_rng(1).random((4, 8, 8))
    files = write_series(vol, np.array([2.0, 1.0, 1.0]), np.zeros(3), tmp_path / "s", "scan_000", "OSEM", 7, ac, rc)
    want = [c for c, on in (("ATTN", ac), ("RAN", rc)) if on]
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path, force=False)
        assert ds.file_meta.MediaStorageSOPClassUID == PET_IMAGE_STORAGE == ds.SOPClassUID
        for key in PET_TYPE1:
            assert key in ds and ds[key].value not in (None, "", []), key
        for key in PET_TYPE2:
            assert key in ds, key
        got = ds.CorrectedImage
        got = [] if got in ("", None) else ([got] if isinstance(got, str) else list(got))
        assert got == want
        assert ("RandomsCorrectionMethod" in ds) == rc and ("AttenuationCorrectionMethod" in ds) == ac
        assert ds.DecayCorrection == "NONE" and "DECY" not in got and "SCAT" not in got
        assert ds.NumberOfSlices == 4 and ds.ImageIndex == i + 1 == ds.InstanceNumber
        assert ds.CountsSource == "EMISSION"
        # The stored values read back to the volume within the 16-bit quantisation.
        np.testing.assert_allclose(ds.pixel_array * float(ds.RescaleSlope), vol[i], atol=vol[i].max() / 65535 + 1e-12)


@pytest.mark.slow
def test_reconstruct_writes_the_corrections_it_applied(finished, tmp_path):
    import pydicom

    cfg = tiny_cfg(tmp_path)
    sim = finished / "results" / "sim"
    res = positrongan(
        "reconstruct", "-c", str(cfg), "--scan", "scan_000", "--root", str(sim / "scan_000.root"),
        "--out", str(tmp_path / "r.npz"), "--dicom", str(tmp_path / "dicom"),
        "--set", "reconstruction.attenuation_correction=false", "--set", "reconstruction.randoms_correction=false",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    z = np.load(tmp_path / "r.npz")
    assert not z["attenuation_corrected"] and not z["randoms_corrected"]
    for path in sorted((tmp_path / "dicom").iterdir()):
        assert pydicom.dcmread(path).CorrectedImage in ("", None, [])
