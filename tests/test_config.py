"""The one config schema: both shipped configs validate; bad configs are rejected naming the key."""

from pathlib import Path

import pytest
import yaml

from positrongan import config as configlib
from positrongan.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    cfg = configlib.load([ROOT / "config" / name])
    assert cfg["scanner"]["crystals_per_ring"] == 184
    assert cfg["scanner"]["rings"] == 64


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_validate_with_snakemake(name):
    from snakemake.utils import validate

    data = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(data, str(SCHEMA))
    # Snakemake fills the same defaults as the CLI does.
    assert data == configlib.load([ROOT / "config" / name])


def test_paper_config_is_the_papers_scale():
    cfg = configlib.load([ROOT / "config" / "paper.yaml"])
    assert cfg["simulation"]["engine"] == "gate"
    assert cfg["ct"]["source"] == "deeplesion"
    assert cfg["dataset"]["image_size"] == 256
    assert cfg["device"] == "cuda"
    assert cfg["phantom"]["activity_bq"] == 600.0 and cfg["phantom"]["acquisition_s"] == 0.1


@pytest.mark.parametrize(
    "overrides, key, hint",
    [
        (["phantom.activty_bq=5"], "phantom.activty_bq", "not a known key"),
        (["scanner.ringz=8"], "scanner.ringz", "allowed here"),
        (["colour=red"], "colour", "not a known key"),
        (["scanner.rings=eight"], "scanner.rings", "wrong type"),
        (["scanner.rings=0"], "scanner.rings", ">= 1"),
        (["digitizer.energy_resolution=1.5"], "digitizer.energy_resolution", "<= 1"),
        (["simulation.engine=geant"], "simulation.engine", "auto"),
        (["dataset.split=[0.5, 0.5, 0.5]"], "dataset.split", "sum to 1"),
        (["digitizer.energy_window_kev=[650, 350]"], "digitizer.energy_window_kev", "low"),
        (["phantom.defects.pits.count=[3, 1]"], "phantom.defects.pits.count", "min <= max"),
        (["ct.source=deeplesion"], "ct.path", "must be set"),
    ],
)
def test_bad_config_names_the_key(overrides, key, hint):
    with pytest.raises(ConfigError) as err:
        configlib.load(overrides=overrides)
    assert f"'{key}'" in str(err.value)
    assert hint in str(err.value)


def test_snakemake_rejects_unknown_key():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    with pytest.raises(WorkflowError, match="tubex"):
        validate({"phantom": {"tubex": 1}}, str(SCHEMA))


def test_unreadable_config_file_is_named(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("phantom: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        configlib.load([bad])
    with pytest.raises(ConfigError, match="missing.yaml"):
        configlib.load([tmp_path / "missing.yaml"])


def test_later_sources_win(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("scans: {count: 3}\nseed: 5\n")
    cfg = configlib.load([a], json_text='{"seed": 7}', overrides=["scans.count=4"])
    assert cfg["seed"] == 7 and cfg["scans"]["count"] == 4


def _leaves(node, prefix=""):
    for name, sub in node.get("properties", {}).items():
        if sub.get("type") == "object":
            yield from _leaves(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", sub


def test_every_schema_key_is_documented_and_has_a_default():
    sch = configlib.schema()
    assert sch["additionalProperties"] is False
    leaves = dict(_leaves(sch))
    assert len(leaves) > 50
    for key, sub in leaves.items():
        assert sub.get("description"), key
        assert "default" in sub, key
        assert "type" in sub or "enum" in sub, key
        for unit_suffix, unit in (("_mm", "mm"), ("_ns", "ns"), ("_ps", "ps"), ("_bq", "Bq"), ("_kev", "keV")):
            if key.endswith(unit_suffix):
                assert sub.get("units") == unit, key


def test_every_section_rejects_unknown_keys():
    def walk(node, path):
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, path
            for name, sub in node.get("properties", {}).items():
                walk(sub, f"{path}.{name}")

    walk(configlib.schema(), "<root>")


def test_config_readme_is_generated_from_the_schema():
    assert (ROOT / "config" / "README.md").read_text() == configlib.documentation(), (
        "config/README.md is stale: run `positrongan config-docs --out config/README.md`"
    )


def test_package_schema_is_the_workflow_schema():
    assert yaml.safe_load(SCHEMA.read_text()) == configlib.schema()


def test_derived_seeds_are_stable_and_distinct():
    cfg = configlib.load()
    a = configlib.derived_seed(cfg, "simulate", "scan_000")
    assert a == configlib.derived_seed(cfg, "simulate", "scan_000")
    assert a != configlib.derived_seed(cfg, "simulate", "scan_001")
    assert a != configlib.derived_seed({**cfg, "seed": 1}, "simulate", "scan_000")
    assert 0 <= a < 2**63


def test_scan_ids_are_zero_padded():
    assert configlib.scan_ids({"scans": {"count": 3}}) == ["scan_000", "scan_001", "scan_002"]
    assert configlib.scan_ids({"scans": {"count": 1001}})[-1] == "scan_1000"
