"""The GATE engine: the opengate scene is built (not run) and checked against the scanner and
phantom conventions; the fast engine's file sorts identically with opengate's offline sorter;
missing Geant4 data gives a clear error; the fast-vs-gate cross-check runs where Geant4 can."""

import importlib.util
import json
import logging
import os

import numpy as np
import pytest

from positrongan import config as configlib
from positrongan.config import derived_seed
from positrongan.errors import ConfigError
from positrongan.geometry.scanner import Scanner
from positrongan.rootfile import read_tree
from positrongan.simulate import gate
from positrongan.simulate.driver import draw_phantom, engine_parts, resolve_engine, run_scan, simulate_scan

HAS_OPENGATE = importlib.util.find_spec("opengate") is not None
needs_opengate = pytest.mark.skipif(
    not HAS_OPENGATE, reason="opengate is not installed (pip install 'positrongan[gate]')"
)
GATE_OK, GATE_REASON = gate.availability()

SMALL = {
    "scans": {"count": 1},
    "scanner": {"crystals_per_ring": 32, "rings": 4, "crystal_pitch_mm": 12.0},
    "simulation": {"engine": "fast", "chunk_decays": 4000},
    "reconstruction": {"grid": 32, "fov_mm": 96.0},
    "phantom": {
        "activity_bq": 1.0e6,
        "acquisition_s": 0.005,
        "length_mm": 16.0,
        "outer_semi_axes_mm": [20.0, 15.0],
        "wall_thickness_mm": 3.0,
        "defects": {k: {"count": [0, 0]} for k in ("cracks", "pits", "blockages", "bubbles")},
    },
    "digitizer": {"delayed_window": False},
}


def _cfg(**over):
    data = json.loads(json.dumps(SMALL))
    for k, v in over.items():
        data.setdefault(k, {}).update(v)
    return configlib.validate(data)


def _build(cfg, tube, workdir):
    return gate.build_simulation(
        *engine_parts(cfg, tube),
        derived_seed(cfg, "gate", "scan_000"),
        workdir,
        require_data=False,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not HAS_OPENGATE:
        pytest.skip("opengate is not installed (pip install 'positrongan[gate]')")
    cfg = _cfg()
    tube = draw_phantom(cfg, "scan_000")
    work = tmp_path_factory.mktemp("gate")
    sim, out, tree = _build(cfg, tube, work)
    return cfg, tube, sim, out, tree, work


def test_crystals_are_repeated_around_each_ring_with_the_scanner_convention(built):
    cfg, _, sim, *_ = built
    import opengate as og

    mm = og.g4_units.mm
    sc = Scanner.from_config(cfg["scanner"])
    crystal = sim.volume_manager.get_volume("crystal")
    ring = sim.volume_manager.get_volume("ring")
    assert crystal.mother == "ring" and crystal.material == "LYSO"
    tr = np.array(crystal.translation) / mm
    assert tr.shape == (32, 3)
    phi = np.mod(np.arctan2(tr[:, 1], tr[:, 0]), 2 * np.pi)
    assert np.allclose(phi, sc.azimuth(np.arange(32)), atol=1e-9)
    assert np.allclose(np.hypot(tr[:, 0], tr[:, 1]), sc.inner_radius_mm + sc.crystal_depth_mm / 2)
    rz = np.array(ring.translation)[:, 2] / mm
    assert np.allclose(rz, sc.ring_z(np.arange(4)))
    depth, width, axial = np.array(crystal.size) / mm
    assert depth == pytest.approx(20.0) and width < sc.crystal_pitch_mm and axial < sc.axial_pitch_mm
    # Neighbouring crystals do not overlap: front-face corners stay apart.
    assert width <= 2 * sc.inner_radius_mm * np.sin(np.pi / 32)


def test_phantom_image_holds_the_tube_materials_and_the_source_the_fluid(built):
    _, tube, sim, _, _, work = built
    import itk

    phantom = sim.volume_manager.get_volume("phantom")
    labels = itk.array_from_image(itk.imread(phantom.image))
    activity = itk.array_from_image(itk.imread(sim.source_manager.get_source("fluid_source").image))
    assert set(np.unique(labels).astype(int)) <= {0, 1, 2, 3, 4} and (labels == 2).any()
    assert np.array_equal(activity > 0, labels == 1)
    mats = {int(round((lo + hi) / 2)): m for lo, hi, m in phantom.voxel_materials}
    assert mats[1] == "G4_WATER" and mats[2] == "G4_Al" and mats[3] == "G4_CALCIUM_CARBONATE"
    # The image covers the tube: fluid volume against the phantom's own sampling.
    voxel = gate.VOXEL_MM**3
    fluid_cm3 = (labels == 1).sum() * voxel
    phi = np.linspace(0, 2 * np.pi, 4001)
    assert fluid_cm3 == pytest.approx(0.5 * np.trapezoid(tube.r_in(phi) ** 2, phi) * tube.length_mm, rel=0.03)


def test_source_is_back_to_back_or_f18_positrons(built, tmp_path):
    cfg, tube, sim, *_ = built
    import opengate as og

    # Positron range is on by default: F-18 positrons; only beta+ decays emit.
    src = sim.source_manager.get_source("fluid_source")
    assert src.particle == "e+" and src.energy.type == "F18"
    assert src.activity == pytest.approx(1.0e6 * 0.9686 * og.g4_units.Bq)
    assert sim.run_timing_intervals == [[0, 0.005 * og.g4_units.second]]
    cfg2 = _cfg(phantom={"positron_range": False}, simulation={"beta_plus_branching": False})
    sim2, *_ = _build(cfg2, tube, tmp_path)
    src2 = sim2.source_manager.get_source("fluid_source")
    assert src2.particle == "back_to_back" and src2.energy.mono == pytest.approx(511 * og.g4_units.keV)
    assert src2.direction.accolinearity_flag
    assert src2.direction.accolinearity_fwhm == pytest.approx(0.5 * og.g4_units.deg)
    assert src2.activity == pytest.approx(1.0e6 * og.g4_units.Bq)


def test_digitizer_chain_parameters(built):
    cfg, _, sim, out, tree, _ = built
    import opengate as og

    u = og.g4_units
    am = sim.actor_manager
    chain = ["Hits", "Readout", "EnergyBlur", "TimeBlur", "EnergyWindow"]
    for prev, name in zip(chain[:-1], chain[1:]):
        assert am.get_actor(name).input_digi_collection == prev
    assert am.get_actor("Readout").policy == "EnergyWinnerPosition"
    eb = am.get_actor("EnergyBlur")
    assert eb.blur_method == "InverseSquare" and eb.blur_resolution == 0.15
    assert eb.blur_reference_value == pytest.approx(511 * u.keV)
    tb = am.get_actor("TimeBlur")
    assert tb.blur_attribute == "GlobalTime" and tb.blur_fwhm == pytest.approx(300 * u.ps)
    (ch,) = am.get_actor("EnergyWindow").channels
    assert ch["name"] == tree and ch["min"] == pytest.approx(350 * u.keV) and ch["max"] == pytest.approx(650 * u.keV)


# Every digitizer key, a non-default value, and how to read it back from the GATE scene (None: the
# key acts after GATE, in the coincidence sorter that both engines share) and from the fast engines.
DIGITIZER_VALUES = {
    "energy_resolution": 0.12,
    "energy_reference_mev": 0.662,
    "time_resolution_ps": 250.0,
    "energy_window_kev": [400.0, 600.0],
    "coincidence_window_ns": 6.0,
    "multiples_policy": "take_winner",
    "delayed_window": False,
    "delayed_offset_ns": 80.0,
    "readout": "crystal",
    "readout_policy": "energy_centroid",
    "readout_discretize": False,
}


def _gate_values(sim):
    import opengate as og

    u = og.g4_units
    am = sim.actor_manager
    eb, tb, ro = am.get_actor("EnergyBlur"), am.get_actor("TimeBlur"), am.get_actor("Readout")
    (ch,) = am.get_actor("EnergyWindow").channels
    return {
        "energy_resolution": eb.blur_resolution,
        "energy_reference_mev": eb.blur_reference_value / u.MeV,
        "time_resolution_ps": tb.blur_fwhm / u.ps,
        "energy_window_kev": [ch["min"] / u.keV, ch["max"] / u.keV],
        "readout": "crystal" if ro.group_volume == "crystal" else ro.group_volume,
        "readout_policy": {
            "EnergyWinnerPosition": "energy_winner",
            "EnergyWeightedCentroidPosition": "energy_centroid",
        }[ro.policy],
        "readout_discretize": type(ro).__name__ == "DigitizerReadoutActor",
    }


def _fast_values(cfg, tube):
    from positrongan.simulate import fast_numba as fnb
    from positrongan.simulate.fast import FastEngine

    args = engine_parts(cfg, tube)
    numba, numpy_ = fnb.NumbaEngine(*args), FastEngine(*args)
    pp, d = numba.pp, numpy_.digitizer
    assert numpy_.digitizer is args[2]  # the reference reads every key from the typed settings
    return {
        "energy_resolution": pp[fnb.PP_RES],
        "energy_reference_mev": pp[fnb.PP_EREF],
        "time_resolution_ps": pp[fnb.PP_T_SIGMA] / (1e-3 * fnb.FWHM_TO_SIGMA),
        "energy_window_kev": [pp[fnb.PP_E_LO] * 1000, pp[fnb.PP_E_HI] * 1000],
        "readout": "crystal" if pp[fnb.PP_CRYSTAL_READOUT] else "annulus",
        "readout_policy": "energy_centroid" if pp[fnb.PP_CENTROID] else "energy_winner",
        "readout_discretize": bool(pp[fnb.PP_DISCRETIZE]),
        # The numpy reference: the same keys from its Digitizer.
        "numpy": {k: getattr(d, k) for k in DIGITIZER_VALUES if k != "energy_window_kev"}
        | {"energy_window_kev": list(d.energy_window_kev)},
    }


@needs_opengate
def test_every_digitizer_parameter_reaches_the_gate_scene_and_the_fast_engines(tmp_path):
    schema_keys = set(configlib.schema()["properties"]["digitizer"]["properties"])
    assert schema_keys == set(DIGITIZER_VALUES), "a digitizer key without a check here"
    cfg = _cfg(digitizer=DIGITIZER_VALUES)
    for key, value in DIGITIZER_VALUES.items():
        # readout: GATE has only `crystal`, the default (`annulus` is refused, tested below).
        default = configlib.validate({})["digitizer"][key]
        assert value != default or key == "readout", f"{key}: the test value must differ from the default"
    tube = draw_phantom(cfg, "scan_000")
    sim, *_ = _build(cfg, tube, tmp_path)
    gate_v, fast_v = _gate_values(sim), _fast_values(cfg, tube)
    numpy_v = fast_v.pop("numpy")
    for key, value in DIGITIZER_VALUES.items():
        assert numpy_v[key] == pytest.approx(value), key
        if key in gate_v:
            assert gate_v[key] == pytest.approx(value), key
            assert fast_v[key] == pytest.approx(value), key
    # The sorter keys act after either engine, in the one sorter the driver builds from the same Digitizer.
    sorter_keys = set(DIGITIZER_VALUES) - set(gate_v)
    assert sorter_keys == {"coincidence_window_ns", "multiples_policy", "delayed_window", "delayed_offset_ns"}
    # The default readout is the same in both engines: per crystal, energy winner, discretised.
    d_cfg = _cfg()
    d_sim, *_ = _build(d_cfg, tube, tmp_path / "d")
    d_fast = _fast_values(d_cfg, tube)
    d_fast.pop("numpy")
    for key, value in _gate_values(d_sim).items():
        assert d_fast[key] == pytest.approx(value), key


@needs_opengate
def test_gate_scene_flags_phantom_scatters_and_switches_rayleigh_off(built, tmp_path):
    cfg, tube, sim, *_ = built
    atts = sim.auxiliary_attributes
    assert {n: (a.process_name, a.volume_name, a.propagate_from_parent_track) for n, a in atts.items()} == {
        "PhantomCompton": ("compt", "phantom", True),
        "PhantomRayleigh": ("Rayl", "phantom", True),
    }
    assert {"PhantomCompton", "PhantomRayleigh"} <= set(sim.actor_manager.get_actor("Hits").attributes)
    assert not any("Rayl" in c for c in sim.g4_commands_after_init)
    sim2, *_ = _build(_cfg(simulation={"rayleigh": False}), tube, tmp_path)
    assert "/process/inactivate Rayl gamma" in sim2.g4_commands_after_init
    with pytest.raises(ConfigError, match="digitizer.readout"):
        _build(_cfg(digitizer={"readout": "annulus"}), tube, tmp_path / "a")


def test_crystal_ids_from_gate_volume_ids():
    sc = Scanner(crystals_per_ring=32, rings=4)
    ids = gate.crystal_ids_from_volume_ids(np.array(["0_0_3_31", "0_2_0", "0-0_1_5"]), sc)
    assert ids.tolist() == [3 * 32 + 31, 2 * 32 + 0, 1 * 32 + 5]


@pytest.mark.skipif(GATE_OK, reason="the Geant4 data are present here")
def test_gate_engine_without_geant4_data_says_how_to_get_them(monkeypatch, tmp_path, caplog):
    cfg = _cfg(simulation={"engine": "gate"})
    tube = draw_phantom(cfg, "scan_000")
    with pytest.raises(ConfigError, match="simulation.engine.*(Geant4|opengate)"):
        run_scan(cfg, "scan_000", tube, tmp_path / "x.root", "gate")
    with caplog.at_level(logging.INFO):
        assert resolve_engine({"engine": "auto"}) == "fast"
    assert "engine auto -> fast" in caplog.text


@needs_opengate
def test_fast_engine_file_sorts_identically_with_opengate_sorter(tmp_path):
    os.environ["GATEONRTD"] = "1"  # the sorter needs no Geant4 data; skip opengate's download check
    import uproot
    from opengate.actors.coincidences import coincidences_sorter

    cfg = _cfg(phantom={"activity_bq": 2.0e7, "acquisition_s": 0.001})
    root = tmp_path / "s.root"
    simulate_scan(cfg, "scan_000", root, tmp_path / "s.json", None)
    with uproot.open(root) as f:
        ref = coincidences_sorter(
            f["Singles"], 10.0, "RemoveMultiples", None, None, None, chunk_size=20000, return_type="pd"
        )
    ours = read_tree(root, "Coincidences", ["EventID1", "EventID2", "GlobalTime1"])
    assert ours["EventID1"].size > 100
    assert np.array_equal(np.sort(ours["GlobalTime1"]), np.sort(ref["GlobalTime1"].to_numpy()))
    assert sorted(zip(ours["EventID1"], ours["EventID2"])) == sorted(zip(ref["EventID1"], ref["EventID2"]))


@pytest.mark.gate
@pytest.mark.skipif(not GATE_OK, reason=f"needs Geant4: {GATE_REASON}")
def test_fast_and_gate_agree_on_counts_scatter_and_spectrum(tmp_path):
    cfg = _cfg(phantom={"activity_bq": 2.0e5, "acquisition_s": 0.05})
    fast = simulate_scan(cfg, "scan_000", tmp_path / "f.root", tmp_path / "f.json", None)
    g = simulate_scan(
        _cfg(simulation={"engine": "gate"}, phantom={"activity_bq": 2.0e5, "acquisition_s": 0.05}),
        "scan_000",
        tmp_path / "g.root",
        tmp_path / "g.json",
        None,
    )
    assert g["engine"] == "gate"
    assert g["singles"] == pytest.approx(fast["singles"], rel=0.15)
    assert g["prompts"] == pytest.approx(fast["prompts"], rel=0.15)
    ef = read_tree(tmp_path / "f.root", "Singles", ["TotalEnergyDeposit"])["TotalEnergyDeposit"]
    eg = read_tree(tmp_path / "g.root", "Singles", ["TotalEnergyDeposit"])["TotalEnergyDeposit"]
    edges = np.linspace(0.35, 0.65, 16)
    hf, _ = np.histogram(ef, edges, density=True)
    hg, _ = np.histogram(eg, edges, density=True)
    assert np.abs(hf - hg).sum() * (edges[1] - edges[0]) < 0.15
