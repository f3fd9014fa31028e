"""Randoms estimates per crystal pair: the delayed window corrected for the sorter's multiples
policy, or the singles rates ``2 tau S_i S_j`` (the same correction applied).

The sorter (``coincidences.py``, opengate's offline sorter) lets every single ``i`` open a window
``(t_i, t_i + tau]``; the delayed window is ``(t_i + d, t_i + d + tau]`` with ``d`` > the time spread
of one decay's photons. A coincidence is *random* when its two singles come from different decays.

Model (derived here; the same idea as the "singles-prompts" method of Oliver and Rafecas,
PLoS ONE 11 (2016) e0162096, written for opengate's sorter). Decays that leave at least one
single in the energy window form a Poisson process of rate ``lambda``; a decay leaves one single
("lone") or two (a "pair", its two photons within a few ns, both inside one window). A fraction
``q_i`` of the singles of crystal ``i`` open a window that already holds their own decay's other
single (they are the first of a detected pair). The other decays' singles in a window of length
``tau`` are independent of the opener, in the prompt and in the delayed window alike:

- ``take_all_good`` keeps every pair: each single in crystal ``j`` from another decay makes a random
  with every opener, so ``R_ij = 2 tau S_i S_j`` (rates; ``S`` singles per second), and the delayed
  window has the same mean. No correction.
- ``kill_all`` keeps a window only when it holds exactly one partner. A random ``i -> j`` survives
  when the opener's own partner is absent (probability ``1 - q_i``) and ``j``'s single is the only
  other-decay single in the window: it is lone (not half of a pair, whose other half would also
  be in the window) and no other decay fell in (``exp(-lambda tau)``). So
  ``R_ij = tau exp(-lambda tau) [S_i (1 - q_i) L_j + S_j (1 - q_j) L_i]``, ``L`` the lone-singles
  rates. The delayed window never holds the opener's own partner, so it counts the same pairs
  without the ``(1 - q_i)``: the delayed window over-estimates kill_all's randoms by
  ``1 / (1 - q)`` (+27 % at the default scan, q ~ 0.21), and each delayed coincidence is weighted
  by ``1 - q_opener``.
- ``take_winner`` keeps the pair of largest summed energy: a random whose opener's own partner is
  in the window survives when it wins, taken here as probability 1/2 (the random single and the
  true partner come from the same in-window spectrum): weight ``1 - q_i / 2``; and the window
  keeps one random however many other-decay singles it holds (partner count
  ``S_j (1 - exp(-lambda tau)) / (lambda tau (1 + pi))``, ``1 + pi`` singles per decay). An
  approximation (docs/reconstruction.md: within 3 % of the truth on synthetic streams).

``q_i``, ``L`` and ``lambda`` come from the counts alone (singles per crystal ``S_i``, prompts per
opener crystal and per partner crystal, the window and the acquisition time) by a fixed point
(:func:`policy_model`): the prompts opened by crystal ``i`` are its non-random pairs,
``S_i q_i exp(-lambda tau)``, plus its randoms, ``S_i (1 - q_i) rho`` with
``rho = tau exp(-lambda tau) sum_j L_j`` (counts per second), and ``L_j = S_j`` less the singles of
``j`` that belong to a detected pair (its non-random prompts, as opener or partner, over
``exp(-lambda tau)``). A detected pair whose two singles straddle a window's edge leaves one single
in it: each paired single counts as ``delta / tau`` of a lone one, ``delta`` the mean time between
a pair's singles (~0.15 ns, from the prompts' ``|t2 - t1|``: :func:`pair_spread`; ~1 % of the
randoms at the default rate). Decays of three or more in-window singles are neglected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..geometry.scanner import Scanner

log = logging.getLogger(__name__)


@dataclass
class PolicyModel:
    """Per-crystal quantities of the randoms model (module docstring), all in counts over the
    acquisition.

    Attributes:
        opener_weight: (crystals,) probability that a random opened by this crystal survives the
            policy (``1 - q_i`` for kill_all, ``1 - q_i / 2`` for take_winner, 1 for take_all_good).
        partner: (crystals,) singles of each crystal that can be the partner of a surviving random
            (lone singles for kill_all, every single otherwise).
        survival: ``exp(-lambda tau)`` for kill_all, 1 otherwise.
        q: (crystals,) fraction of each crystal's singles that open a window with their own
            partner (0 where a crystal has no single).
        lam_per_s: rate of decays with at least one single in the window [1/s].
    """

    opener_weight: np.ndarray
    partner: np.ndarray
    survival: float
    q: np.ndarray
    lam_per_s: float
    pair_spread_ns: float = 0.0


def policy_model(
    singles: np.ndarray,
    prompt_opener: np.ndarray,
    prompt_partner: np.ndarray,
    window_ns: float,
    seconds: float,
    policy: str,
    iterations: int = 100,
    pair_spread_ns: float = 0.0,
) -> PolicyModel:
    """Solve the model of the module docstring for one scan.

    Params:
        singles: (crystals,) singles per crystal over the acquisition.
        prompt_opener, prompt_partner: (crystals,) prompts whose opener / partner single is in
            each crystal (the ``1`` and ``2`` columns of the Coincidences tree).
        window_ns: coincidence window tau.
        seconds: acquisition time (of the counts given).
        policy: ``take_all_good`` | ``kill_all`` | ``take_winner``.
        iterations: fixed-point iterations (converges in a handful: the corrections are small).
        pair_spread_ns: mean time between the two singles of a detected pair (kill_all): a pair
            straddling a window's edge leaves one single in it, so each paired single counts as
            ``pair_spread / tau`` of a lone one (:func:`pair_spread`).
    Returns:
        A :class:`PolicyModel`.
    """
    if policy not in ("take_all_good", "kill_all", "take_winner"):
        raise ValueError(f"unknown multiples policy {policy!r}")
    s = np.asarray(singles, np.float64)
    po = np.asarray(prompt_opener, np.float64)
    pp = np.asarray(prompt_partner, np.float64)
    tau = window_ns * 1e-9
    has = s > 0
    frac = np.divide(po, s, out=np.zeros_like(s), where=has)  # prompts opened per single
    e = 1.0
    lone = s.copy()
    q = np.zeros_like(s)
    lam = 0.0
    for _ in range(iterations):
        # Per policy: a single's chance to open a kept random when its own partner is absent
        # (rho), the prompts that gives, and the non-random prompts' survival (keep).
        if policy == "kill_all":
            single = lone + (s - lone) * (pair_spread_ns / window_ns)  # alone in a window, per crystal
            rho = tau * e * single.sum() / seconds  # exactly one other-decay single in the window
            q = np.clip((frac - rho) / max(e - rho, 1e-12), 0.0, 1.0)
            rand_open = s * (1 - q) * rho
            rand_partner = single * tau * e / seconds * (s * (1 - q)).sum()
            keep = e
        elif policy == "take_all_good":
            rho = tau * s.sum() / seconds  # every other-decay single in the window pairs
            q = np.clip(frac - rho, 0.0, 1.0)
            rand_open = s * rho
            rand_partner = s * rho
            keep = 1.0
        else:  # take_winner: one pair per window that holds any partner
            q = np.clip(1 - (1 - frac) / max(e, 1e-12), 0.0, 1.0)
            rand_open = s * ((1 - q) * (1 - e) + q * (1 - e) / 2)
            rand_partner = s / max(s.sum(), 1e-30) * rand_open.sum()
            keep = e + (1 - e) / 2
        paired = np.clip((po + pp - rand_open - rand_partner) / keep, 0.0, s)
        lone_new = s - paired
        lam = (lone_new.sum() + paired.sum() / 2) / seconds
        e_new = float(np.exp(-lam * tau))
        done = abs(e_new - e) < 1e-12 and np.allclose(lone_new, lone, rtol=1e-10, atol=1e-9)
        lone, e = lone_new, e_new
        if done:
            break
    if policy == "take_all_good":
        return PolicyModel(np.ones_like(s), s, 1.0, q, lam)
    if policy == "kill_all":
        return PolicyModel(1 - q, lone + (s - lone) * (pair_spread_ns / window_ns), e, q, lam)
    # take_winner: every opener keeps one pair when its window holds any other-decay single; the
    # chance of that, 1 - exp(-lambda tau), shared among the singles of the decays in the window
    # (S_total / (lambda T) per decay), replaces the take_all_good partner count S_j tau.
    partner = s * (1 - e) * seconds / (tau * s.sum()) if s.sum() > 0 else s
    return PolicyModel(1 - q / 2, partner, 1.0, q, lam)


def pair_spread(dt_ns: np.ndarray, window_ns: float, random_fraction: float, cut_ns: float | None = None) -> float:
    """Mean time between the two singles of a detected pair, from the prompts' ``|t2 - t1|``.

    Non-random pairs sit within ~1 ns (time resolution and flight paths); randoms spread
    uniformly over the window. Below ``cut_ns`` (default a quarter of the window) the randoms'
    share, ``random_fraction * prompts * cut / window`` with mean ``cut / 2``, is taken off.

    Params:
        dt_ns: |t2 - t1| of the prompts (all of them, or any unbiased sample), ns.
        window_ns: coincidence window.
        random_fraction: expected randoms over prompts (a first estimate is enough).
    Returns:
        The mean spread in ns (0 when nothing is left).
    """
    cut = window_ns / 4 if cut_ns is None else cut_ns
    dt = np.abs(np.asarray(dt_ns, np.float64))
    near = dt[dt <= cut]
    r = random_fraction * dt.size * cut / window_ns
    n = near.size - r
    return float(max(near.sum() - r * cut / 2, 0.0) / n) if n > 0 else 0.0


def crystal_factors(model: PolicyModel, singles: np.ndarray, window_ns: float, seconds: float):
    """(u, w, k) with ``R_ij = k (u_i w_j + u_j w_i)`` expected randoms of the pair (i, j) over the
    acquisition (counts): ``u = S * opener weight``, ``w`` the partner singles,
    ``k = tau * survival / T``."""
    u = np.asarray(singles, np.float64) * model.opener_weight
    return u, model.partner, window_ns * 1e-9 * model.survival / seconds


def pair_sinogram(
    u: np.ndarray,
    w: np.ndarray,
    k: float,
    scanner: Scanner,
    crystal_a: np.ndarray,
    crystal_b: np.ndarray,
) -> np.ndarray:
    """``R`` of every (ring pair, chord): row ``r1 * rings + r2`` holds crystal ``a`` of the chord
    in ring ``r1`` and ``b`` in ``r2`` (the 3D sinogram layout of ``projector3d``).

    Params:
        u, w, k: :func:`crystal_factors`.
        scanner: geometry (CrystalID = ring * crystals_per_ring + index).
        crystal_a, crystal_b: (chords,) in-ring crystal indices of each chord.
    Returns:
        (rings^2, chords) float64 expected randoms.
    """
    rings, n = scanner.rings, scanner.crystals_per_ring
    u2, w2 = u.reshape(rings, n), w.reshape(rings, n)
    ua, ub, wa, wb = u2[:, crystal_a], u2[:, crystal_b], w2[:, crystal_a], w2[:, crystal_b]
    est = ua[:, None, :] * wb[None, :, :] + ub[None, :, :] * wa[:, None, :]
    return (k * est).reshape(rings * rings, -1)


def fan_sum(
    scanner: Scanner,
    crystal_a: np.ndarray,
    crystal_b: np.ndarray,
    d1: np.ndarray,
    d2: np.ndarray,
    weights: np.ndarray | None,
    total: float,
) -> np.ndarray:
    """Fan-sum estimate from (weighted) delayed coincidences: ``r_ij = c F_i F_j`` with ``F`` the
    weighted delayed counts of each crystal, ``c`` such that the sum over the given chords is
    ``total`` (the weighted delayed coincidences that fall in them).

    Returns:
        (rings^2, chords) float32, the layout of :func:`pair_sinogram`.
    """
    both = np.concatenate([d1, d2])
    w = None if weights is None else np.concatenate([weights, weights])
    fan = np.bincount(both, weights=w, minlength=scanner.n_crystals).astype(np.float64)
    fan = fan.reshape(scanner.rings, scanner.crystals_per_ring)
    da, db = fan[:, crystal_a], fan[:, crystal_b]
    est = np.multiply(da[:, None, :], db[None, :, :], dtype=np.float32).reshape(scanner.rings**2, -1)
    s = float(est.sum(dtype=np.float64))
    est *= np.float32(total / s if s > 0 else 0.0)
    return est


def rebinned_sinogram(
    pairs: np.ndarray, scanner: Scanner, n_planes: int, max_ring_difference: int | None
) -> np.ndarray:
    """Single-slice rebinning of a (rings^2, cells) per-ring-pair estimate: ring pair (r1, r2)
    goes to plane r1 + r2 when |r1 - r2| <= max_ring_difference (as ``lors.rebin``)."""
    rings = scanner.rings
    dmax = rings - 1 if max_ring_difference is None else max_ring_difference
    r1, r2 = np.meshgrid(np.arange(rings), np.arange(rings), indexing="ij")
    r1, r2 = r1.ravel(), r2.ravel()
    keep = np.abs(r1 - r2) <= dmax
    out = np.zeros((n_planes, pairs.shape[1]), np.float64)
    np.add.at(out, (r1 + r2)[keep], pairs[keep])
    return out


def singles_counts(root, scanner: Scanner) -> tuple[np.ndarray | None, str]:
    """Singles per crystal of a scan: the ``SinglesRates`` tree, else the ``Singles`` tree counted.

    Returns:
        (counts (crystals,) int64 or None when the file has neither tree, the tree used).
    """
    from ..rootfile import read_singles_counts, tree_branches
    from .lors import has_tree

    counts = read_singles_counts(root, scanner.n_crystals)
    if counts is not None:
        return counts, "SinglesRates"
    if has_tree(root, "Singles") and "CrystalID" in tree_branches(root, "Singles"):
        from ..rootfile import read_tree

        ids = read_tree(root, "Singles", ["CrystalID"])["CrystalID"].astype(np.int64)
        ids = ids[(ids >= 0) & (ids < scanner.n_crystals)]
        return np.bincount(ids, minlength=scanner.n_crystals).astype(np.int64), "Singles"
    return None, ""


@dataclass
class RandomsSpec:
    """One scan's randoms estimate, ready to bin into either sinogram.

    Attributes:
        method: ``delayed`` or ``singles``.
        delayed: (crystal1, crystal2) of the delayed coincidences (delayed method), or None.
        weights: (delayed,) weight of each delayed coincidence (``1 - q_opener`` etc.), or None (1).
        factors: (u, w, k) of :func:`crystal_factors` (singles method), or None.
        model: the :class:`PolicyModel`, or None (delayed window under take_all_good without singles).
        policy: the sorter's multiples policy.
    """

    method: str
    delayed: tuple[np.ndarray, np.ndarray] | None
    weights: np.ndarray | None
    factors: tuple[np.ndarray, np.ndarray, float] | None
    model: PolicyModel | None
    policy: str

    def total_weight(self) -> float:
        """Sum of the delayed weights (delayed method): the estimate's total before FOV cuts."""
        if self.delayed is None:
            return 0.0
        return float(self.weights.sum()) if self.weights is not None else float(len(self.delayed[0]))

    def metadata(self) -> dict:
        """What the recon npz records about this estimate."""
        out = {
            "randoms_method": np.array(self.method),
            "randoms_policy": np.array(self.policy),
        }
        if self.model is not None:
            out["randoms_q_mean"] = np.float64(self.model.q.mean())
            out["randoms_survival"] = np.float64(self.model.survival)
            out["randoms_pair_spread_ns"] = np.float64(self.model.pair_spread_ns)
        if self.delayed is not None:
            out["randoms_delayed_scale"] = np.float64(self.total_weight() / max(len(self.delayed[0]), 1))
        return out


def build_spec(
    method: str,
    policy: str,
    prompts: tuple[np.ndarray, np.ndarray],
    delayed: tuple[np.ndarray, np.ndarray] | None,
    singles: np.ndarray | None,
    window_ns: float,
    seconds: float,
    n_crystals: int,
    prompt_dt_ns: np.ndarray | None = None,
) -> RandomsSpec:
    """The randoms estimate of one scan (module docstring).

    Params:
        method: ``delayed`` | ``singles`` (``reconstruction.randoms``).
        policy: ``digitizer.multiples_policy``.
        prompts: (opener, partner) CrystalIDs of the prompts (after any thinning).
        delayed: the same for the delayed coincidences, or None.
        singles: singles per crystal over ``seconds`` (already scaled by any thinning), or None.
        window_ns: ``digitizer.coincidence_window_ns``.
        seconds: acquisition time of the counts (``phantom.acquisition_s`` x thinning fraction).
        n_crystals: crystals of the scanner.
        prompt_dt_ns: |t2 - t1| of the prompts, any unbiased sample (kill_all's pair spread,
            :func:`pair_spread`), or
            None (taken as 0: the estimate then runs ~1 % low at the default rate).
    Raises:
        ValueError: with the config key to change, when the inputs the method needs are missing.
    """
    model = None
    if singles is not None:
        po = np.bincount(prompts[0], minlength=n_crystals)
        pp = np.bincount(prompts[1], minlength=n_crystals)
        model = policy_model(singles, po, pp, window_ns, seconds, policy)
        if policy == "kill_all" and prompt_dt_ns is not None and len(prompt_dt_ns):
            u, w, k = crystal_factors(model, singles, window_ns, seconds)
            rand = k * (u.sum() * w.sum() - (u * w).sum())
            spread = pair_spread(prompt_dt_ns, window_ns, rand / max(len(prompts[0]), 1))
            model = policy_model(singles, po, pp, window_ns, seconds, policy, pair_spread_ns=spread)
            model.pair_spread_ns = spread
    if method == "singles":
        if model is None:
            raise ValueError("no singles counts")
        return RandomsSpec(method, None, None, crystal_factors(model, singles, window_ns, seconds), model, policy)
    if method != "delayed":
        raise ValueError(f"unknown randoms method {method!r}")
    if delayed is None:
        raise ValueError("no delayed coincidences")
    if policy != "take_all_good" and model is None:
        raise ValueError("no singles counts")
    weights = None if policy == "take_all_good" else model.opener_weight[delayed[0]]
    return RandomsSpec(method, delayed, weights, None, model, policy)
