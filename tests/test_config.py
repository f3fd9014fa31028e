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


@pytest.mark.parametrize("name", ["study.yaml", "scarcity.yaml", "gpu.yaml"])
def test_shipped_overlays_validate_on_the_default(name):
    # The overlays are used as `--configfile config/config.yaml config/<name>`.
    cfg = configlib.load([ROOT / "config" / "config.yaml", ROOT / "config" / name])
    assert cfg["scanner"]["crystals_per_ring"] == 184


def test_gpu_config_keeps_the_default_scanner_with_more_counts():
    """config/gpu.yaml meets the crack target with counts, not another scanner (docs/detectability.md),
    and writes beside the default run instead of over it."""
    default = configlib.load([ROOT / "config" / "config.yaml"])
    gpu = configlib.load([ROOT / "config" / "config.yaml", ROOT / "config" / "gpu.yaml"])
    assert gpu["scanner"] == default["scanner"] and gpu["digitizer"] == default["digitizer"]
    assert gpu["phantom"]["acquisition_s"] == 4 * default["phantom"]["acquisition_s"]
    assert gpu["results_dir"] != default["results_dir"]
    assert gpu["enhancement"]["osem_max_iterations"] >= gpu["reconstruction"]["iterations"]


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
    # A variant's `set` holds training keys: the training section's own schema checks them when
    # the variant is resolved (tests/test_gan.py::test_variant_set_is_validated_against_the_training_schema).
    checked_elsewhere = {"<root>.training.variants.*.set"}

    def walk(node, path):
        if node.get("type") == "object" and path not in checked_elsewhere:
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):  # a map of named entries (training.variants): each entry is closed
                walk(extra, f"{path}.*")
            else:
                assert extra is False, path
            for name, sub in node.get("properties", {}).items():
                walk(sub, f"{path}.{name}")

    walk(configlib.schema(), "<root>")


def test_config_readme_is_generated_from_the_schema():
    assert (ROOT / "config" / "README.md").read_text() == configlib.documentation(), (
        "config/README.md is stale: run `positrongan config-docs --out config/README.md`"
    )


def test_package_schema_is_the_workflow_schema():
    # The CLI reads the schema as package data; in a source checkout that is a symlink to the
    # workflow's file (one file, never two copies), in an installed wheel a copy made at build time.
    from importlib import resources

    shipped = Path(str(resources.files("positrongan").joinpath("config.schema.yaml")))
    if (ROOT / "src" / "positrongan") == shipped.parent:
        assert shipped.is_symlink() and shipped.resolve() == SCHEMA.resolve()
    else:
        assert shipped.read_text() == SCHEMA.read_text()


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


# Every cross-key rule that needs only the config is checked by config.validate, so Snakemake
# and the CLI refuse the config before any job runs (tests/test_faults.py checks that nothing
# is lost). Each case: overrides, a key the message must name, a hint of what is allowed.
RULE_CASES = [
    (["reconstruction.subsets=150"], "reconstruction.subsets", "at most 92"),
    (["digitizer.delayed_offset_ns=5.0"], "digitizer.delayed_offset_ns", "must exceed"),
    (["features.method=pcanet", "features.pcanet_filters=[8, 20]"], "features.pcanet_filters", "at most 16"),
    (["features.method=pcanet", "features.pcanet_filters=[50, 8]"], "features.pcanet_filters", "pcanet_patch"),
    (["features.method=pcanet", "features.pcanet_block=128"], "features.pcanet_block", "dataset.image_size"),
    (["scanner.crystals_per_ring=95"], "scanner.crystals_per_ring", "even"),
    (["reconstruction.fov_mm=240"], "reconstruction.fov_mm", "inside the ring"),
    (["phantom.outer_semi_axes_mm=[130, 60]", "reconstruction.fov_mm=230"], "phantom.outer_semi_axes_mm", "bore"),
    (["phantom.outer_semi_axes_mm=[60, 40]"], "reconstruction.fov_mm", "field of view"),
    (["phantom.bend_mm=[0, 20]"], "phantom.bend_mm", "field of view"),
    (["phantom.wall_thickness_mm=20"], "phantom.wall_thickness_mm", "no lumen"),
    (["phantom.wall_thickness_mm=15", "phantom.wall_variation=0.7"], "phantom.wall_variation", "no lumen"),
    (["evaluation.msssim_window=6"], "evaluation.msssim_window", "odd"),
    (["evaluation.msssim_window=11", "dataset.image_size=32"], "evaluation.msssim_window", "coarsest scale"),
    (["evaluation.swd_min_size=128"], "evaluation.swd_min_size", "larger than the images"),
    (["evaluation.swd_patch_size=20"], "evaluation.swd_patch_size", "must not exceed"),
    (["ct.synthetic_size=128"], "ct.min_size", "skipped"),
    (["phantom.defects.bubbles.count=[0, 260]"], "phantom.defects.*.count", "at most 255"),
    (["reconstruction.psf_fwhm_mm=3", "reconstruction.mode=2d"], "reconstruction.psf_fwhm_mm", "3D reconstruction only"),
]


@pytest.mark.parametrize("overrides, key, hint", RULE_CASES)
def test_cross_key_rules_name_the_keys(overrides, key, hint):
    with pytest.raises(ConfigError) as err:
        configlib.load(overrides=overrides)
    assert f"'{key}'" in str(err.value)
    assert hint in str(err.value)


def test_rules_accept_the_edges():
    # Each bound is allowed exactly at the limit the rule names.
    configlib.load(overrides=["reconstruction.subsets=92"])  # 184 / 2 views
    configlib.load(overrides=["reconstruction.algorithm=mlem", "reconstruction.subsets=150"])  # ignored by MLEM
    configlib.load(overrides=["digitizer.delayed_window=false", "digitizer.delayed_offset_ns=5.0"])
    configlib.load(overrides=["phantom.outer_semi_axes_mm=[42, 26]"])  # 42 + 6 = 48 = fov / 2
    configlib.load(overrides=["features.pcanet_filters=[8, 20]"])  # PCA: the PCANet keys are unused


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_subsets_rule_holds_in_both_modes(mode):
    # OSEM subsets are interleaved views (crystals_per_ring / 2) in 2D and 3D alike: the 3D
    # projector refuses more subsets than views too.
    cfg = configlib.load(overrides=[f"reconstruction.mode={mode}"])
    cfg["reconstruction"]["subsets"] = 150
    assert any("reconstruction.subsets" in p for p in configlib.check_rules(cfg))
    cfg["reconstruction"]["subsets"] = 92
    assert not any("reconstruction.subsets" in p for p in configlib.check_rules(cfg))


def test_tube_reach_includes_the_bend():
    # 40 + 6 mm sagitta = 46 mm fits a 96 mm FOV; a 10 mm sagitta does not.
    configlib.load(overrides=["phantom.outer_semi_axes_mm=[40, 26]"])
    with pytest.raises(ConfigError, match="reaches 50 mm"):
        configlib.load(overrides=["phantom.outer_semi_axes_mm=[40, 26]", "phantom.bend_mm=[0, 10]"])


def test_a_stage_checks_only_the_rules_over_keys_it_was_given():
    # The evaluate rule passes only training and evaluation: the image-size rules were checked
    # by Snakemake on the whole config, and the stage's defaulted dataset.image_size is not its own.
    cfg = configlib.load(json_text='{"evaluation": {"swd_min_size": 128}}')
    assert cfg["evaluation"]["swd_min_size"] == 128
    with pytest.raises(ConfigError, match="evaluation.swd_min_size"):
        configlib.load(
            json_text='{"evaluation": {"swd_min_size": 128, "swd_patch_size": 7}, "dataset": {"image_size": 64}}'
        )
    # A rule over one key is checked whenever that key is given.
    with pytest.raises(ConfigError, match="evaluation.msssim_window"):
        configlib.load(json_text='{"evaluation": {"msssim_window": 6}}')
    # A config file (or no source at all) means every key is the config's: every rule applies.
    with pytest.raises(ConfigError, match="evaluation.swd_min_size"):
        configlib.load(overrides=["evaluation.swd_min_size=128"])
    assert configlib.given_keys({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": 2}) == {"a.b", "a.c.d", "e"}


def test_numbers_written_as_text_are_accepted(tmp_path):
    # PyYAML reads 4e6 as text (YAML 1.1); Snakemake's --config passes nested values as text.
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("phantom:\n  activity_bq: 4e6\n  acquisition_s: 1E-1\nscans:\n  count: '5'\n")
    cfg = configlib.load([cfg_file])
    assert cfg["phantom"]["activity_bq"] == 4e6 and cfg["phantom"]["acquisition_s"] == 0.1
    assert cfg["scans"]["count"] == 5
    with pytest.raises(ConfigError, match=r"'scans.count' = '1e3'.*write 1000"):
        configlib.load(overrides=["scans.count='1e3'"])


def test_empty_and_broken_config_files_are_named_with_the_line(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        configlib.load([empty])
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: 1\nphantom:\n  activity_bq: [1,\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML at line \d+, column \d+"):
        configlib.load([broken])


def test_too_few_scans_for_the_split_warns():
    assert configlib.check_warnings(configlib.load()) == []
    (two,) = configlib.check_warnings(configlib.load(overrides=["scans.count=2"]))
    assert "'scans.count' = 2" in two and "no validation scan" in two
    test, val = configlib.check_warnings(configlib.load(overrides=["scans.count=1"]))
    assert "no test scan" in test and "evaluation" in test and "no validation scan" in val
    (test,) = configlib.check_warnings(configlib.load(overrides=["dataset.split=[0.8, 0.2, 0.0]"]))
    assert "'dataset.split'" in test and "no test scan" in test
    (window,) = configlib.check_warnings(configlib.load(overrides=["digitizer.energy_window_kev=[520, 650]"]))
    assert "511 keV" in window


def test_no_stage_module_keeps_a_config_only_rule():
    # The rules moved to config.py; the stages keep only checks that need data.
    src = ROOT / "src" / "positrongan"
    assert "check_digitizer" not in (src / "simulate" / "driver.py").read_text()
    assert "from .driver import" not in (src / "simulate" / "gate.py").read_text()  # no import cycle
    assert "'reconstruction.subsets'" not in (src / "recon" / "driver.py").read_text()
    assert "leave no lumen" not in (src / "geometry" / "phantom.py").read_text()
    assert "pcanet_filters" not in (src / "commands" / "extract_features.py").read_text()
