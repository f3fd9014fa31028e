"""Short-scan twins: list-mode thinning is a Poisson thinning (mean and variance f times the
full scan's), reproducible, and reaches the reconstruction through `--fraction`."""

import numpy as np
import pytest

from positrongan.recon.thinning import fraction_tag, thin


def test_thinned_counts_are_poisson_with_f_times_the_mean():
    # A "sinogram" of 400 bins with known Poisson means, as a list of events (bin per event).
    rng = np.random.default_rng(0)
    lam = np.linspace(20.0, 200.0, 400)
    f = 0.1
    kept = []
    for _ in range(300):  # 300 independent scans, each thinned once
        counts = rng.poisson(lam)
        events = np.repeat(np.arange(lam.size), counts)
        (k,) = thin((events,), f, rng)
        kept.append(np.bincount(k, minlength=lam.size))
    kept = np.array(kept, dtype=np.float64)
    mean, var = kept.mean(0), kept.var(0, ddof=1)
    # Mean f*lambda per bin: the pooled relative error over 400 bins is ~1e-3.
    assert mean.sum() / (f * lam).sum() == pytest.approx(1.0, abs=0.01)
    # Poisson: variance = mean (a binomial thinning of a fixed list would give f(1-f)n instead).
    assert (var / mean).mean() == pytest.approx(1.0, abs=0.03)
    assert np.corrcoef(mean, f * lam)[0, 1] > 0.99


def test_thinning_keeps_pairs_together_and_is_seeded():
    a = np.arange(10_000)
    b = a * 2
    x1, y1 = thin((a, b), 0.3, np.random.default_rng(5))
    x2, y2 = thin((a, b), 0.3, np.random.default_rng(5))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(y1, 2 * x1)
    assert np.all(np.diff(x1) > 0)  # time order kept
    assert abs(x1.size - 3000) < 5 * np.sqrt(3000 * 0.7)


def test_fraction_one_is_the_full_scan_and_bad_fractions_are_refused():
    a = np.arange(5)
    assert thin((a,), 1.0, np.random.default_rng(0))[0] is a
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            thin((a,), bad, np.random.default_rng(0))
    assert fraction_tag(0.1) == "f0.1" and fraction_tag(0.01) == "f0.01" and fraction_tag(0.25) == "f0.25"
