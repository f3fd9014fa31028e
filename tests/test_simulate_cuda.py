"""The GPU engine (``simulation.kernel: cuda``): its random streams, its kernels and its scans.

Everywhere: splitmix64 seeds each decay's xoshiro256+ stream with the reference generator's
published outputs; the kernels compile to PTX (so a change to the shared decay that the GPU
cannot compile fails here, on a machine without one); and numba-cuda's simulator runs the
kernels and the host code on the CPU, decay for decay the CPU's decays from each decay's stream
(so a change to the slots, the rerun on overflow or the packing fails here too), and a whole
``cuda`` scan through the driver, with the CPU engine's counts. On a GPU (marker ``gpu``): a seeded
scan gives the same file twice; a chunk whose decays overflow their slots gives the singles of
a run with room to spare; and scans agree with the CPU engine (``numba``) in counts, scatter
fraction, spectra and axial profiles, within statistics (5 standard deviations; chi-square
p > 1e-4), as ``tests/test_simulate_numba.py`` checks the CPU engine against the numpy one.
"""

import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from helpers import assert_same_rates, fast_scan, two_sample_chi2

from positrongan import config as configlib
from positrongan.errors import ConfigError
from positrongan.rootfile import read_tree
from positrongan.simulate import fast_numba as fnb
from positrongan.simulate.driver import draw_phantom, engine_parts

# splitmix64 from state 1234567: the first five outputs of Vigna's reference C implementation.
SPLITMIX_1234567 = [
    6457827717110365317,
    3203168211198807973,
    9817491932198370423,
    4593380528125082431,
    16408922859458223821,
]


def _splitmix64(x, n):
    """n outputs of splitmix64 from state x, in Python integers (mod 2^64)."""
    out = []
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) % 2**64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        out.append(z ^ (z >> 31))
    return out


def test_decay_streams_are_consecutive_splitmix64_outputs():
    assert _splitmix64(1234567, 5) == SPLITMIX_1234567
    s = np.zeros(4, np.uint64)
    fnb._seed_stream(np.uint64(1234567), 0, s)
    assert s.tolist() == SPLITMIX_1234567[:4]
    for seed, k in ((1234567, 1), (2**64 - 3, 7), (0, 1_000_003)):
        fnb._seed_stream(np.uint64(seed), k, s)  # stream k starts where stream k - 1's four end
        assert s.tolist() == _splitmix64(seed, 4 * k + 4)[4 * k :]


def _parts(cfg):
    return engine_parts(cfg, draw_phantom(cfg, "scan_000"))


def test_kernels_compile_to_ptx_for_hopper():
    from numba import cuda, types  # numba-cuda with NVVM: the dev extra

    from positrongan.simulate import fast_cuda

    tables = [numba.typeof(a) for a in fast_cuda.tables(fnb.NumbaEngine(*_parts(configlib.validate({}))))]
    cols = [numba.typeof(np.empty((rows, 4) if rows > 1 else 4, dt)) for _, dt, rows in fast_cuda.COLUMNS]
    sig = (types.float64[::1], types.int64, types.uint64, types.int64, *tables, types.int64[::1], *cols)
    ptx, _ = cuda.compile_ptx(fast_cuda._decays_kernel, sig, cc=(9, 0))
    assert ".entry" in ptx and "sm_90" in ptx
    sig = (types.int64[::1], types.int64[::1], types.int64, *cols, *cols)
    assert ".entry" in cuda.compile_ptx(fast_cuda._pack_kernel, sig, cc=(9, 0))[0]


def test_cuda_kernel_without_a_gpu_names_the_key():
    from positrongan.simulate import fast_cuda

    if fast_cuda.available()[0]:
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="simulation.kernel"):
        fast_cuda.CudaEngine(*_parts(configlib.validate({})))


def _cudasim(mode, out):
    """Run tests/cudasim.py (numba-cuda's simulator) in a process of its own."""
    import cudasim

    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    run = subprocess.run(
        [sys.executable, cudasim.__file__, mode, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]


def test_cuda_engine_under_the_simulator_gives_the_cpu_decays_stream_by_stream(tmp_path):
    """The GPU engine's kernels and host code, run by numba-cuda's simulator (tests/cudasim.py),
    give, bit for bit, decay k of the chunk simulated on the CPU from stream k of the chunk's seed:
    the slot slices, the rerun on overflow and the packing in decay order hold without a GPU."""
    import cudasim as sim

    from positrongan.simulate import fast_cuda

    out = tmp_path / "chunk.npz"
    _cudasim("chunk", out)
    gpu = dict(np.load(out))

    engine = fnb.NumbaEngine(*sim.engine_args())
    times = sim.chunk_times()
    seed = np.random.default_rng(sim.CHUNK_SEED).integers(0, np.iinfo(np.uint64).max, dtype=np.uint64, endpoint=True)
    tables = fast_cuda.tables(engine)
    s = np.empty(4, np.uint64)
    # The kernel's output columns, in its order (fast_cuda.COLUMNS), with room for any decay.
    cols = [np.empty((rows, 64) if rows > 1 else 64, dt) for _, dt, rows in fast_cuda.COLUMNS]
    parts = []
    for k in range(times.size):
        fnb._seed_stream(seed, k, s)
        n = fnb._simulate_chunk(
            times[k : k + 1], sim.FIRST_EVENT + k, *tables, s,
            engine.h_cry, engine.h_dep, engine.h_pos, engine.h_path, engine.h_nsc, *cols, 0,
        )  # fmt: skip
        assert n <= 64
        parts.append([c[..., :n].copy() for c in cols])
    ref = {}
    for (name, _, rows), col in zip(fast_cuda.COLUMNS, (np.concatenate(p, axis=-1) for p in zip(*parts))):
        ref.update({name: col} if rows == 1 else {f"{name}_{a}": col[r] for r, a in enumerate("XYZ")})

    assert set(ref) == set(gpu) - {"slots"}
    per_decay = np.bincount(gpu["EventID"] - sim.FIRST_EVENT)
    assert per_decay.max() > gpu["slots"]  # some decays overflowed their slots: the rerun ran
    assert ref["EventID"].size > sim.DECAYS  # singles from most decays, not an empty chunk
    for name, col in ref.items():
        assert gpu[name].dtype == col.dtype and np.array_equal(gpu[name], col), name


def test_cuda_scan_under_the_simulator_runs_through_the_driver(tmp_path):
    """``simulation.kernel: cuda`` for a whole scan (driver, sorting, coincidences, writing) under
    the simulator: it writes its trees, and its counts per decay agree with a CPU-engine scan
    within statistics (5 SD; 2e4 decays each, so only gross errors show)."""
    import cudasim as sim

    out = tmp_path / "cuda"
    out.mkdir()
    _cudasim("scan", out)
    gpu = json.loads((out / "info.json").read_text())
    cpu, _ = fast_scan(tmp_path, "numba", sim.SCAN_SEED + 1, decays=sim.SCAN_DECAYS)
    assert gpu["prompts"] > 100 and gpu["delayed"] > 0
    assert_same_rates(cpu, gpu)
    root = out / f"cuda_{sim.SCAN_SEED}.root"
    assert read_tree(root, "Coincidences", ["EventID1"])["EventID1"].size == gpu["prompts"]
    assert read_tree(root, "Singles", ["EventID"])["EventID"].size == gpu["singles"]


# ---- on a GPU -------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_scan_is_reproducible(tmp_path):
    runs = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        runs.append(fast_scan(tmp_path / d, "cuda", 4, decays=200_000))
    (a, ra), (b, rb) = runs
    assert a["singles"] == b["singles"] > 0
    for tree in ("Singles", "Coincidences"):
        ta, tb = read_tree(ra, tree), read_tree(rb, tree)
        assert all(np.array_equal(ta[k], tb[k]) for k in ta)


@pytest.mark.gpu
def test_overflowing_slots_rerun_to_the_same_singles(monkeypatch):
    from positrongan.simulate import fast_cuda

    # A window from 50 keV: a photon's Compton deposit and its escape can both pass, so decays
    # leave more than the default two singles.
    args = _parts(configlib.validate({"digitizer": {"energy_window_kev": [50, 750]}}))
    times = np.sort(np.random.default_rng(0).uniform(0, 1e8, 200_000))
    tight = fast_cuda.CudaEngine(*args).simulate_chunk(times, 0, np.random.default_rng(1))
    counts = np.bincount(tight["EventID"])
    assert counts.max() > fast_cuda.SLOTS  # the overflow path ran
    monkeypatch.setattr(fast_cuda, "SLOTS", 16)
    roomy = fast_cuda.CudaEngine(*args).simulate_chunk(times, 0, np.random.default_rng(1))
    assert all(np.array_equal(tight[k], roomy[k]) for k in tight)
    assert np.all(np.diff(tight["EventID"]) >= 0)  # decay order, as the CPU engine's


@pytest.fixture(scope="module")
def cpu_and_gpu(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cuda")
    return {k: fast_scan(tmp, k, seed, decays=1_000_000) for k, seed in (("numba", 1), ("cuda", 2))}


@pytest.mark.gpu
def test_cuda_counts_agree_with_the_cpu_engine(cpu_and_gpu):
    assert_same_rates(cpu_and_gpu["numba"][0], cpu_and_gpu["cuda"][0])


@pytest.mark.gpu
def test_cuda_spectra_agree_with_the_cpu_engine(cpu_and_gpu):
    cols = ["TotalEnergyDeposit", "PhantomScatters", "PostPosition_Z", "SourcePosition_Z"]
    sa = read_tree(cpu_and_gpu["numba"][1], "Singles", cols)
    sb = read_tree(cpu_and_gpu["cuda"][1], "Singles", cols)
    assert two_sample_chi2(sa["TotalEnergyDeposit"], sb["TotalEnergyDeposit"], np.linspace(0.35, 0.65, 61)) > 1e-4
    sel_a, sel_b = sa["PhantomScatters"] > 0, sb["PhantomScatters"] > 0
    e_a, e_b = sa["TotalEnergyDeposit"][sel_a], sb["TotalEnergyDeposit"][sel_b]
    assert two_sample_chi2(e_a, e_b, np.linspace(0.35, 0.65, 31)) > 1e-4
    assert two_sample_chi2(sa["PhantomScatters"], sb["PhantomScatters"], np.arange(-0.5, 4.5)) > 1e-4
    assert two_sample_chi2(sa["PostPosition_Z"], sb["PostPosition_Z"], np.linspace(-128, 128, 33)) > 1e-4
    assert two_sample_chi2(sa["SourcePosition_Z"], sb["SourcePosition_Z"], np.linspace(-128, 128, 33)) > 1e-4
