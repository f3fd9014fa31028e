"""Shared test setup: one thread per numeric library (CI has 2 cores), and markers that skip
with a reason where the machine cannot run them. `gate` tests skip themselves, naming what is
missing (opengate or its Geant4 data)."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser):
    parser.addoption("--run-slurm", action="store_true", help="run tests that start a local SLURM cluster (root)")


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none here; run on a GPU machine)")
    skip_slurm = pytest.mark.skip(reason="starts a local SLURM cluster; opt in with --run-slurm (see README)")
    has_gpu = _gpu_available()
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        if "slurm" in item.keywords and not config.getoption("--run-slurm"):
            item.add_marker(skip_slurm)
