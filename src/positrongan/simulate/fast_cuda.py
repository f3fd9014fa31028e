"""The fast engine on an NVIDIA GPU: the compiled engine's decay, one CUDA thread per decay.

``simulation.kernel: cuda``. The physics is :func:`.fast_numba._decays`, the same function the CPU
engine runs for a chunk, compiled for the GPU by numba-cuda and run for one decay per thread:
emission, tube transport, crystal tracking, readout and digitizer. Only the random streams
differ: on the CPU a chunk is one xoshiro256+ stream; here decay ``k`` of a chunk draws from its
own stream (:func:`.fast_numba._seed_stream` of the chunk's seed and ``k``), so the result does
not depend on how threads are scheduled: the same seed gives the same file, and the singles agree
with the CPU engine within statistics (``tests/test_simulate_cuda.py``, marker ``gpu``).

Each decay writes its singles to ``slots`` places of its own; a second kernel packs them in
decay order (the CPU engine's order) at offsets from the host's cumulative sum of the counts, so
only the singles travel back. A decay with more singles than slots (possible only with an energy
window below half of 511 keV) makes the chunk run again with more slots and the same seed:
the same singles, more room.

The rest of the scan (the 176Lu background, time sorting, coincidences, writing) is the CPU's,
shared with the other fast engines.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, types

from ..errors import ConfigError
from . import fast_numba as fnb
from .fast_numba import MAX_HITS, NumbaEngine

# Threads per block. The decay kernel takes 172 registers per thread (ptxas, sm_90; 190 when it was
# timed), so a block holds at most 256; on an H200 the kernel alone ran 1.08e8, 1.16e8 and 1.33e8
# decays/s with 64, 128 and 256 (docs/benchmarks.md).
THREADS = 256
SLOTS = 2  # singles stored per decay: a photon leaves at most one in a window above 255.5 keV
# The singles' columns: name, dtype, rows (1: a vector; 3: x, y, z rows).
COLUMNS = (
    ("EventID", np.int64, 1),
    ("GlobalTime", np.float64, 1),
    ("TotalEnergyDeposit", np.float32, 1),
    ("PostPosition", np.float32, 3),
    ("CrystalID", np.int32, 1),
    ("PhantomScatters", np.int16, 1),
    ("SourcePosition", np.float32, 3),
)


def _decays_kernel(
    times,
    first_event,
    seed,
    slots,
    tp,
    df,
    cum,
    majorant,
    cdfs,
    ray_e,
    theta,
    cpe,
    cco,
    pp,
    gb,
    gt,
    dens,
    o_count,
    o_event,
    o_time,
    o_energy,
    o_pos,
    o_crystal,
    o_scat,
    o_src,
):
    k = cuda.grid(1)
    if k >= times.size:
        return
    s = cuda.local.array(4, types.uint64)
    fnb._seed_stream(seed, k, s)
    h_cry = cuda.local.array(MAX_HITS, types.int64)
    h_dep = cuda.local.array(MAX_HITS, types.float64)
    h_pos = cuda.local.array((3, MAX_HITS), types.float64)
    h_path = cuda.local.array(MAX_HITS, types.float64)
    h_nsc = cuda.local.array(MAX_HITS, types.int64)
    b = k * slots
    e = b + slots
    o_count[k] = fnb._decays(
        times[k : k + 1],
        first_event + k,
        tp,
        df,
        cum,
        majorant,
        cdfs,
        ray_e,
        theta,
        cpe,
        cco,
        pp,
        gb,
        gt,
        dens,
        s,
        h_cry,
        h_dep,
        h_pos,
        h_path,
        h_nsc,
        o_event[b:e],
        o_time[b:e],
        o_energy[b:e],
        o_pos[:, b:e],
        o_crystal[b:e],
        o_scat[b:e],
        o_src[:, b:e],
        0,
    )


def _pack_kernel(count, offset, slots, src_event, src_time, src_energy, src_pos, src_crystal, src_scat, src_src,
                 event, time, energy, pos, crystal, scat, src):  # fmt: skip
    k = cuda.grid(1)
    if k >= count.size:
        return
    for j in range(count[k]):
        a = k * slots + j
        o = offset[k] + j
        event[o] = src_event[a]
        time[o] = src_time[a]
        energy[o] = src_energy[a]
        crystal[o] = src_crystal[a]
        scat[o] = src_scat[a]
        for r in range(3):
            pos[r, o] = src_pos[r, a]
            src[r, o] = src_src[r, a]


@functools.cache
def kernels():
    """The two kernels, compiled on first launch (about a minute: the whole decay is inlined into
    one kernel) and cached on disk by numba-cuda."""
    return cuda.jit(cache=True)(_decays_kernel), cuda.jit(cache=True)(_pack_kernel)


def tables(engine: NumbaEngine) -> tuple[np.ndarray, ...]:
    """The engine's scene and physics tables, contiguous, in the order the decay kernel takes them."""
    return tuple(
        np.ascontiguousarray(a)
        for a in (
            engine.tp,
            engine.df,
            engine.cum,
            engine.majorant,
            engine.cdfs,
            engine.ray_e,
            engine.theta,
            engine.cpe,
            engine.cco,
            engine.pp,
            engine.gb,
            engine.gt,
            engine.dens,
        )
    )


def available() -> tuple[bool, str]:
    """Whether the CUDA engine can run here, and why not."""
    try:
        ok = cuda.is_available()
    except Exception as exc:  # a broken driver or toolkit raises instead of answering
        return False, f"numba-cuda cannot reach a GPU ({exc})"
    return (True, "") if ok else (False, "numba-cuda finds no NVIDIA GPU and driver")


class CudaEngine(NumbaEngine):
    """:class:`.fast_numba.NumbaEngine` with its chunks of decays simulated on the GPU."""

    def __init__(self, *args, **kwargs):
        ok, why = available()
        if not ok:
            raise ConfigError(
                f"config key 'simulation.kernel' = 'cuda' needs an NVIDIA GPU and numba-cuda with NVVM "
                f"(pip install -e '.[cuda]'): {why}; use 'numba' on a CPU"
            )
        super().__init__(*args, **kwargs)
        self._decays, self._pack = kernels()
        self._tables = tuple(cuda.to_device(a) for a in tables(self))

    def simulate_chunk(self, times: np.ndarray, first_event: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Simulate the decays at ``times`` on the GPU (see :meth:`NumbaEngine.simulate_chunk`;
        ``rng`` draws the chunk's seed)."""
        times = np.ascontiguousarray(times, dtype=np.float64)
        n = times.size
        if n == 0:  # no launch of an empty grid: the CPU's empty columns
            return super().simulate_chunk(times, first_event, rng)
        seed = np.uint64(rng.integers(0, np.iinfo(np.uint64).max, dtype=np.uint64, endpoint=True))
        d_times = cuda.to_device(times)
        d_count = cuda.device_array(n, np.int64)
        blocks = (n + THREADS - 1) // THREADS
        slots = SLOTS
        while True:
            slot_cols = [cuda.device_array((rows, n * slots) if rows > 1 else n * slots, dt) for _, dt, rows in COLUMNS]
            self._decays[blocks, THREADS](d_times, first_event, seed, slots, *self._tables, d_count, *slot_cols)
            count = d_count.copy_to_host()
            most = int(count.max(initial=0))
            if most <= slots:
                break
            slots = most  # same seed, same singles: only more room
        offset = np.zeros(n, np.int64)
        np.cumsum(count[:-1], out=offset[1:])
        total = int(offset[-1] + count[-1])
        cols = [cuda.device_array((rows, total) if rows > 1 else total, dt) for _, dt, rows in COLUMNS]
        if total:
            self._pack[blocks, THREADS](d_count, cuda.to_device(offset), slots, *slot_cols, *cols)
        host = [c.copy_to_host() for c in cols]
        out = {}
        for (name, _, rows), col in zip(COLUMNS, host):
            if rows == 1:
                out[name] = col
            else:
                for r, axis in enumerate("XYZ"):
                    out[f"{name}_{axis}"] = col[r]
        return out
