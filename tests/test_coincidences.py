"""The coincidence sorter: hand-made singles with known pairs for each multiples policy,
streaming equals one-shot sorting, delayed windows, and agreement with opengate's sorter."""

import os

import numpy as np
import pytest

from positrongan.coincidences import StreamSorter, apply_policy, window_pairs


def _singles(times, crystals=None, energies=None, events=None):
    n = len(times)
    return {
        "EventID": np.arange(n, dtype=np.int64) if events is None else np.asarray(events, np.int64),
        "GlobalTime": np.asarray(times, float),
        "TotalEnergyDeposit": np.full(n, 0.5) if energies is None else np.asarray(energies, float),
        "CrystalID": np.arange(n, dtype=np.int32) if crystals is None else np.asarray(crystals, np.int32),
        "PhantomScatters": np.zeros(n, np.int16),
    }


def _pairs(times, policy, crystals=None, energies=None):
    s = _singles(times, crystals, energies)
    t = s["GlobalTime"]
    i, j = window_pairs(t, np.arange(t.size), 0.0, 10.0, exclusive_start=True)
    i, j = apply_policy(i, j, s["CrystalID"], s["TotalEnergyDeposit"], policy)
    return sorted(zip(i.tolist(), j.tolist()))


TIMES = [0.0, 5.0, 30.0, 32.0, 34.0, 100.0, 110.0]  # window 10 ns, inclusive


def test_pairs_for_each_policy():
    # Every single opens a window: 0->1; 2->3, 2->4 (a multiple); 3->4; 5->6 (exactly 10 ns apart).
    assert _pairs(TIMES, "take_all_good") == [(0, 1), (2, 3), (2, 4), (3, 4), (5, 6)]
    assert _pairs(TIMES, "kill_all") == [(0, 1), (3, 4), (5, 6)]
    energies = [0.5, 0.5, 0.4, 0.45, 0.6, 0.5, 0.5]
    assert _pairs(TIMES, "take_winner", energies=energies) == [(0, 1), (2, 4), (3, 4), (5, 6)]


def test_same_crystal_pairs_are_dropped_before_multiples():
    crystals = [1, 1, 7, 8, 7, 3, 4]
    # 0-1 same crystal: gone. 2->4 same crystal: gone, so window 2 holds one pair (2, 3).
    assert _pairs(TIMES, "kill_all", crystals=crystals) == [(2, 3), (3, 4), (5, 6)]


def test_every_coincidence_is_inside_the_window():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 1e5, 20000))
    s = _singles(t, crystals=rng.integers(0, 500, t.size))
    prompts = StreamSorter(10.0, "take_all_good", None).push(s, None)[1]
    dt = prompts["GlobalTime2"] - prompts["GlobalTime1"]
    assert dt.size > 1000 and np.all((dt >= 0) & (dt <= 10.0))
    # Every pair within the window is found: compare with a brute-force count.
    brute = sum(
        int(np.sum((t[k + 1 :] - t[k] <= 10.0) & (s["CrystalID"][k + 1 :] != s["CrystalID"][k]))) for k in range(t.size)
    )
    assert dt.size == brute


@pytest.mark.parametrize("policy", ["kill_all", "take_all_good", "take_winner"])
def test_streaming_in_batches_equals_one_shot(policy):
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 1e5, 30000))
    s = _singles(t, crystals=rng.integers(0, 300, t.size), energies=rng.uniform(0.35, 0.65, t.size))
    one = StreamSorter(10.0, policy, 100.0).push(s, None)
    sorter = StreamSorter(10.0, policy, 100.0)
    outs = []
    edges = [0, 7000, 7001, 15000, 29000, t.size]
    for a, b in zip(edges[:-1], edges[1:]):
        batch = {k: v[a:b] for k, v in s.items()}
        known = float(t[b]) if b < t.size else None
        outs.append(sorter.push(batch, known))
    outs.append(sorter.push({k: v[:0] for k, v in s.items()}, None))
    for part in (0, 1, 2):
        for key in one[part]:
            streamed = np.concatenate([o[part][key] for o in outs])
            assert np.array_equal(streamed, one[part][key]), (part, key)


def test_delayed_window_estimates_the_randoms():
    # Uncorrelated singles at a constant rate: every prompt is random, and the delayed window
    # sees the same rate of pairs.
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 1e7, 200000))  # 2e4 /us -> ~0.2 pairs per 10 ns window
    s = _singles(t, crystals=rng.integers(0, 10000, t.size))
    sorter = StreamSorter(10.0, "take_all_good", 100.0)
    _, prompts, delayed = sorter.push(s, None)
    n_p, n_d = prompts["EventID1"].size, delayed["EventID1"].size
    assert abs(n_p - n_d) < 5 * np.sqrt(n_p)
    dt = delayed["GlobalTime2"] - delayed["GlobalTime1"]
    assert np.all((dt > 100.0) & (dt <= 110.0))
    assert sorter.stats.randoms == n_p


def _opengate_sorter():
    os.environ["GATEONRTD"] = "1"  # the sorter needs no Geant4 data; skip opengate's download check
    try:
        from opengate.actors.coincidences import coincidences_sorter
    except ImportError as exc:
        pytest.skip(f"opengate is not installed ({exc}); install the [gate] extra to compare with its sorter")
    return coincidences_sorter


@pytest.mark.parametrize(
    "policy,gate_policy",
    [("kill_all", "RemoveMultiples"), ("take_all_good", "TakeAllGoods"), ("take_winner", "TakeWinnerOfGoods")],
)
def test_agrees_with_opengate_offline_sorter(tmp_path, policy, gate_policy):
    import uproot

    coincidences_sorter = _opengate_sorter()
    rng = np.random.default_rng(4)
    n = 20000
    t = np.sort(rng.uniform(0, 2e6, n))  # dense: many multiples
    crystal = rng.integers(0, 2000, n).astype(np.int32)
    s = _singles(t, crystals=crystal, energies=rng.uniform(0.35, 0.65, n))
    s.update(
        PreStepUniqueVolumeID=np.array([f"0_0_{c // 100}_{c % 100}" for c in crystal]),
        PostPosition_X=rng.normal(size=n),
        PostPosition_Y=rng.normal(size=n),
        PostPosition_Z=rng.normal(size=n),
    )
    path = tmp_path / "singles.root"
    with uproot.recreate(path) as f:
        f["Singles"] = {k: v for k, v in s.items()}
    with uproot.open(path) as f:
        ref = coincidences_sorter(f["Singles"], 10.0, gate_policy, None, None, None, chunk_size=5000, return_type="pd")
    ours = StreamSorter(10.0, policy, None).push(s, None)[1]
    want = sorted(zip(ref["EventID1"].tolist(), ref["EventID2"].tolist()))
    got = sorted(zip(ours["EventID1"].tolist(), ours["EventID2"].tolist()))
    assert len(got) > 500
    assert got == want
