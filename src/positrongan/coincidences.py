"""Singles -> coincidences: a vectorised, streaming coincidence sorter.

Semantics follow opengate's offline sorter (``opengate.actors.coincidences.coincidences_sorter``
with ``allDigiOpenCoincGate=True``, no transaxial/axial cuts), so the two agree pair for pair
(``tests/test_coincidences.py`` compares them when opengate is installed):

- singles are ordered by ``GlobalTime``; EVERY single i opens a window and pairs with each later
  single j with ``t_j - t_i <= window`` (ties kept);
- pairs of two singles in the same crystal are dropped;
- the pairs sharing an opener form one window; the multiples policy acts per window:
  ``kill_all`` keeps windows with exactly one pair (opengate's RemoveMultiples),
  ``take_all_good`` keeps every pair (TakeAllGoods), ``take_winner`` keeps the pair with the
  largest summed energy (TakeWinnerOfGoods).

Delayed coincidences (randoms estimate) use the same rules with the partner window shifted to
``(t_i + offset, t_i + offset + window]``; a true pair cannot fall there when the offset exceeds
the window plus the time spread of one decay's photons (a few ns).

Streaming: :class:`StreamSorter` receives time-ordered batches and the time before which every
single is known, and emits the singles and pairs that can no longer change. It finds the pairs
with :func:`sorted_pairs`, one compiled pass (numba) over the time-sorted singles that applies the
same rules as :func:`window_pairs` + :func:`apply_policy` (the vectorised reference; the tests
check that both give the same pairs for every policy, prompt and delayed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numba import njit

POLICIES = ("take_all_good", "kill_all", "take_winner")


def window_pairs(
    t: np.ndarray, openers: np.ndarray, start: float, width: float, exclusive_start: bool
) -> tuple[np.ndarray, np.ndarray]:
    """All (opener, partner) index pairs with partner time in the window after each opener.

    Params:
        t: sorted times (n,).
        openers: indices of the singles that open a window.
        start: the window starts at t_i + start (0 for prompts, the offset for delayed).
        width: window width.
        exclusive_start: prompts pair with later singles only (partner index > opener);
            delayed windows start strictly after t_i + start.
    Returns:
        (i, j) index arrays, grouped by opener in increasing order.
    """
    if exclusive_start:
        lo = openers + 1
    else:
        lo = np.searchsorted(t, t[openers] + start, side="right")
    hi = np.searchsorted(t, t[openers] + start + width, side="right")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    i = np.repeat(openers, counts)
    first = np.repeat(lo, counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return i, first + offsets


def apply_policy(
    i: np.ndarray, j: np.ndarray, crystal: np.ndarray, energy: np.ndarray, policy: str
) -> tuple[np.ndarray, np.ndarray]:
    """Drop same-crystal pairs, then resolve multiples per window (see module docstring).

    Params:
        i, j: opener and partner indices, grouped by opener.
        crystal: CrystalID of every single.
        energy: energy of every single.
        policy: one of :data:`POLICIES`.
    Returns:
        The kept (i, j).
    """
    good = np.flatnonzero(crystal.take(i) != crystal.take(j))
    i, j = i.take(good), j.take(good)
    if policy == "take_all_good" or i.size == 0:
        return i, j
    if policy == "kill_all":
        first = np.ones(i.size, bool)
        first[1:] = i[1:] != i[:-1]
        last = np.ones(i.size, bool)
        last[:-1] = i[1:] != i[:-1]
        alone = first & last
        return i[alone], j[alone]
    if policy == "take_winner":
        esum = energy[i] + energy[j]
        order = np.lexsort((-esum, i))
        i, j = i[order], j[order]
        first = np.ones(i.size, bool)
        first[1:] = i[1:] != i[:-1]
        return i[first], j[first]
    raise ValueError(f"unknown multiples policy {policy!r}; choose one of {POLICIES}")


def pair_columns(singles: Mapping[str, np.ndarray], i: np.ndarray, j: np.ndarray) -> dict[str, np.ndarray]:
    """Coincidence columns: every singles branch suffixed 1 (opener) and 2 (partner)."""
    out = {}
    for name, col in singles.items():
        out[name + "1"] = col.take(i)
        out[name + "2"] = col.take(j)
    return out


@njit(cache=True, nogil=True)
def _pairs_kernel(t, crystal, energy, n_open, start, width, exclusive, policy, fill, out_i, out_j):
    """One pass over sorted singles: the pairs of :func:`window_pairs` + :func:`apply_policy`.

    ``policy``: 0 take_all_good, 1 kill_all, 2 take_winner. With ``fill`` False only counts the
    kept pairs; with ``fill`` True also writes them to ``out_i``/``out_j``. Returns the count.
    """
    n = t.size
    lo = 0
    hi = 0
    count = 0
    for i in range(n_open):
        if exclusive:
            jlo = i + 1
        else:
            thr_lo = t[i] + start
            while lo < n and t[lo] <= thr_lo:
                lo += 1
            jlo = lo
        thr_hi = t[i] + start + width
        while hi < n and t[hi] <= thr_hi:
            hi += 1
        ci = crystal[i]
        if policy == 0:
            for j in range(jlo, hi):
                if crystal[j] != ci:
                    if fill:
                        out_i[count] = i
                        out_j[count] = j
                    count += 1
        else:
            n_good = 0
            keep = -1
            best = energy[i]
            for j in range(jlo, hi):
                if crystal[j] != ci:
                    esum = energy[i] + energy[j]
                    if n_good == 0 or esum > best:
                        best = esum
                        keep = j
                    n_good += 1
            if n_good == 0 or (policy == 1 and n_good != 1):
                continue
            if fill:
                out_i[count] = i
                out_j[count] = keep
            count += 1
    return count


def sorted_pairs(
    t: np.ndarray,
    crystal: np.ndarray,
    energy: np.ndarray,
    n_open: int,
    start: float,
    width: float,
    exclusive_start: bool,
    policy: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The kept (opener, partner) pairs of the first ``n_open`` singles of time-sorted arrays.

    Params:
        t: sorted times (n,).
        crystal, energy: CrystalID and energy of every single.
        n_open: singles 0 .. n_open - 1 open a window.
        start, width, exclusive_start: the window (see :func:`window_pairs`).
        policy: one of :data:`POLICIES` (see :func:`apply_policy`).
    Returns:
        (i, j) int64 index arrays, grouped by opener in increasing order.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown multiples policy {policy!r}; choose one of {POLICIES}")
    code = POLICIES.index(policy)
    t = np.ascontiguousarray(t, dtype=np.float64)
    crystal = np.ascontiguousarray(crystal)
    energy = np.ascontiguousarray(energy)
    args = (t, crystal, energy, int(n_open), float(start), float(width), bool(exclusive_start), code)
    none = np.empty(0, np.int64)
    m = _pairs_kernel(*args, False, none, none)
    i, j = np.empty(m, np.int64), np.empty(m, np.int64)
    _pairs_kernel(*args, True, i, j)
    return i, j


@dataclass
class SortStats:
    """Counts kept by :class:`StreamSorter`.

    A negative ``EventID`` marks a single of a background decay (the crystals' 176Lu,
    :mod:`positrongan.simulate.lyso`). ``trues`` and ``scatters`` are pairs of one source decay;
    ``background_trues`` pairs of one background decay (a beta in one crystal and a gamma in
    another); ``randoms`` pairs of two decays, of either kind. So prompts = trues + scatters +
    randoms + background_trues. ``background_*`` count the singles, prompts and delayed pairs with
    at least one background single.
    """

    singles: int = 0
    prompts: int = 0
    trues: int = 0
    scatters: int = 0
    randoms: int = 0
    delayed: int = 0
    background_singles: int = 0
    background_prompts: int = 0
    background_trues: int = 0
    background_delayed: int = 0


class StreamSorter:
    """Streaming coincidence sorter over time-ordered batches of singles.

    Params:
        window_ns: coincidence window.
        policy: multiples policy.
        delayed_offset_ns: offset of the delayed window, or None for no delayed window.
        keep_singles: return the final singles (time-sorted) from :meth:`push`; False returns
            None instead and skips sorting every column (only the pairs' columns are gathered).
        n_crystals: length of :attr:`crystal_singles` (it grows if a larger CrystalID comes).

    Attributes:
        crystal_singles: int64 count of the singles that entered the sorter, per CrystalID (the
            per-crystal singles rates x acquisition time, for a singles-rate randoms estimate).
    """

    def __init__(
        self,
        window_ns: float,
        policy: str,
        delayed_offset_ns: float | None,
        keep_singles: bool = True,
        n_crystals: int = 0,
    ):
        if policy not in POLICIES:
            raise ValueError(f"unknown multiples policy {policy!r}; choose one of {POLICIES}")
        self.window = float(window_ns)
        self.policy = policy
        self.offset = delayed_offset_ns
        self.reach = self.window + (delayed_offset_ns or 0.0)
        self.keep_singles = keep_singles
        self.buffer: dict[str, np.ndarray] | None = None
        self.stats = SortStats()
        self.crystal_singles = np.zeros(int(n_crystals), np.int64)

    def compile(self) -> None:
        """Compile the pair-finding kernel (or load it from numba's cache) for both energy types
        the engines produce, so that timing a scan can tell it apart from the sorting."""
        for dtype in (np.float32, np.float64):
            sorted_pairs(np.zeros(2), np.arange(2, dtype=np.int32), np.zeros(2, dtype), 2, 0.0, 1.0, True, self.policy)

    def push(self, singles: Mapping[str, np.ndarray], known_until: float | None):
        """Add a batch of singles; return what is final.

        Params:
            singles: columns; need ``GlobalTime``, ``CrystalID``, ``TotalEnergyDeposit``,
                ``EventID``, ``PhantomScatters``. Any order.
            known_until: every single with an earlier time has been pushed (None: the end).
        Returns:
            (singles, prompts, delayed): final singles (time-sorted; None when the sorter was made
            with ``keep_singles=False``) and coincidence columns (delayed is None without a
            delayed window).
        """
        if self.buffer is None or not self.buffer["GlobalTime"].size:
            merged = dict(singles)
        else:
            merged = {k: np.concatenate([self.buffer[k], singles[k]]) for k in self.buffer}
        merged = {k: np.asarray(v) for k, v in merged.items()}
        order = np.argsort(merged["GlobalTime"], kind="stable")
        t = merged["GlobalTime"].take(order)
        crystal = merged["CrystalID"].take(order)
        energy = merged["TotalEnergyDeposit"].take(order)
        n_final = t.size if known_until is None else int(np.searchsorted(t, known_until - self.reach, side="left"))
        i, j = sorted_pairs(t, crystal, energy, n_final, 0.0, self.window, True, self.policy)
        prompts = pair_columns(merged, order.take(i), order.take(j))
        delayed = None
        if self.offset is not None:
            di, dj = sorted_pairs(t, crystal, energy, n_final, self.offset, self.window, False, self.policy)
            delayed = pair_columns(merged, order.take(di), order.take(dj))
            self.stats.delayed += di.size
            if di.size:
                self.stats.background_delayed += int(((delayed["EventID1"] < 0) | (delayed["EventID2"] < 0)).sum())
        rest = order[n_final:]
        self.buffer = {k: v.take(rest) for k, v in merged.items()}
        out = None
        if self.keep_singles:
            first = order[:n_final]
            out = {k: v.take(first) for k, v in merged.items()}
        self._count(n_final, prompts)
        if n_final:
            self.stats.background_singles += int((merged["EventID"].take(order[:n_final]) < 0).sum())
        if n_final:
            counts = np.bincount(crystal[:n_final], minlength=self.crystal_singles.size)
            if counts.size > self.crystal_singles.size:
                counts[: self.crystal_singles.size] += self.crystal_singles
                self.crystal_singles = counts.astype(np.int64)
            else:
                self.crystal_singles += counts
        return out, prompts, delayed

    def _count(self, n_singles: int, prompts: Mapping[str, np.ndarray]) -> None:
        s = self.stats
        s.singles += n_singles
        n = prompts["EventID1"].size
        s.prompts += n
        if n:
            e1, e2 = prompts["EventID1"], prompts["EventID2"]
            same = e1 == e2
            bg = (e1 < 0) | (e2 < 0)
            source = same & ~bg
            scat = (prompts["PhantomScatters1"] > 0) | (prompts["PhantomScatters2"] > 0)
            s.trues += int((source & ~scat).sum())
            s.scatters += int((source & scat).sum())
            s.randoms += int((~same).sum())
            s.background_prompts += int(bg.sum())
            s.background_trues += int((same & bg).sum())
