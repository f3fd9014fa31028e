"""Memory of a simulate job, measured the way the Snakemake rule runs it: ``positrongan simulate``
in a process of its own, on the default config with the fast engine.

- On a fresh install, the job's first run compiles the numba engine. That compile must fit in the
  ``mem_mb`` that the ``simulate_scan`` rule declares: Snakemake schedules local jobs by it
  (``--resources mem_mb=...``), and a cluster profile that does not set its own value requests it
  (profiles/slurm asks 8 GB for GATE's sake). One regression peaked at 3.0 GB: numba inlined a
  per-decay function into the chunk's loop (docs/benchmarks.md).
- With the engine loaded from its cache, the peak stays flat in the number of decays: the decays,
  the singles and the coincidences stream through in chunks, so 10x the decays must not hold 10x
  anything. Holding a whole scan's singles or coincidences would add well over 100 MB here.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "config.yaml"

# A fresh Python as the parent: its RUSAGE_CHILDREN then holds the simulate process alone.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"  # Linux: KiB
)


def _rule_mem_mb(rule: str) -> int:
    text = (ROOT / "workflow" / "rules" / "simulate.smk").read_text()
    block = text.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
    return int(re.search(r"mem_mb=(\d+)", block).group(1))


def _simulate_peak_mb(tmp: Path, cache: Path, decays: float) -> float:
    """Peak resident memory (MB) of ``positrongan simulate`` for about ``decays`` decays of scan_000."""
    activity = 4.0e6  # config/config.yaml's phantom.activity_bq, set explicitly below
    cmd = [
        sys.executable,
        "-m",
        "positrongan",
        "simulate",
        "--config",
        str(CONFIG),
        "--set",
        "simulation.engine=fast",
        "--set",
        f"phantom.activity_bq={activity}",
        "--set",
        f"phantom.acquisition_s={decays / activity}",
        "--threads",
        "1",
        "--scan",
        "scan_000",
        "--root",
        str(tmp / "scan.root"),
        "--meta",
        str(tmp / "scan.json"),
    ]
    env = {"NUMBA_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    rc, peak = res.stdout.split()[-2:]
    assert int(rc) == 0, res.stderr[-3000:]
    return float(peak)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """An empty numba cache filled by one short simulate job: (the cache, that job's peak MB)."""
    tmp = tmp_path_factory.mktemp("simulate_memory")
    cache = tmp / "numba_cache"
    cache.mkdir()
    return cache, _simulate_peak_mb(tmp, cache, 2e5)


@pytest.mark.slow
def test_first_compile_fits_the_simulate_rules_memory(compiled):
    _, peak = compiled
    limit = _rule_mem_mb("simulate_scan")
    assert peak < limit, f"the first simulate job (numba compiling) peaked at {peak:.0f} MB > mem_mb={limit}"


@pytest.mark.slow
def test_peak_memory_is_flat_in_the_decays(compiled, tmp_path):
    cache, _ = compiled
    small = _simulate_peak_mb(tmp_path, cache, 2e6)
    large = _simulate_peak_mb(tmp_path, cache, 2e7)
    assert large - small < 50.0, f"peak RSS {small:.0f} MB at 2e6 decays, {large:.0f} MB at 2e7"
