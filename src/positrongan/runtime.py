"""Process-wide runtime helpers: logging, progress bars and device choice."""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

log = logging.getLogger("positrongan")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr with timestamps; Snakemake sends stderr to the rule's log file."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm progress bar on stderr; quiet when stderr is not a terminal but still logged
    at a modest rate (mininterval), so a log file shows progress without being flooded."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if interactive else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)


def progress_estimated(iterable: Iterable, total: int, **kwargs: Any) -> Iterator:
    """Iterate ``iterable`` under a :func:`progress` bar whose ``total`` is only an estimate (a
    Poisson scan can take a chunk more or less than its expected count). Each step counts when the
    loop's body has finished with its item; the total grows rather than being overrun, and the bar
    ends at the true count (at 100 %, not as a bare counter past its total)."""
    bar = progress(total=total, **kwargs)
    try:
        for item in iterable:
            yield item
            if bar.n + 1 > bar.total:
                bar.total = bar.n + 1
            bar.update(1)
        bar.total = bar.n
        bar.refresh()
    finally:
        bar.close()


@contextmanager
def timed(what: str) -> Iterator[dict]:
    """Log how long a block took; the dict receives ``seconds``."""
    info: dict = {}
    t0 = time.perf_counter()
    yield info
    info["seconds"] = time.perf_counter() - t0
    log.info("%s took %.2f s", what, info["seconds"])


def torch_device(choice: str = "auto"):
    """Resolve the ``device`` config key to a torch.device, and log it.

    Params:
        choice: ``auto``, ``cpu`` or ``cuda``.
    Returns:
        torch.device.
    Raises:
        RuntimeError: ``cuda`` requested but not available.
    """
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config key 'device' = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(choice)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    log.info("torch device: %s (%s)", dev, name)
    return dev


def set_threads(threads: int | None) -> None:
    """Cap numeric library threads (Snakemake passes ``{threads}``)."""
    if not threads:
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
