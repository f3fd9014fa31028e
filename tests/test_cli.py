"""The positrongan CLI: help lists every stage, config errors are one line naming the key."""

import subprocess
import sys

import pytest

from positrongan import cli


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_stage_has_help_with_config_options(name, capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main([name, "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--set" in out


def test_console_script_and_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "positrongan", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "stages" in res.stdout


def test_bad_config_is_one_line_naming_the_key(capsys):
    assert cli.main(["config", "--set", "scanner.ringz=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("positrongan config: error: config key 'scanner.ringz'")
    assert "Traceback" not in "\n".join(err)


def test_config_saves_the_resolved_config(tmp_path):
    out = tmp_path / "resolved.yaml"
    assert cli.main(["config", "--set", "seed=3", "--out", str(out)]) == 0
    import yaml

    cfg = yaml.safe_load(out.read_text())
    assert cfg["seed"] == 3 and cfg["scanner"]["rings"] == 64


def test_stage_cannot_read_a_section_it_was_not_given():
    cfg = cli.StageConfig({"seed": 0, "scanner": {}, "training": {}}, given={"scanner"})
    assert cfg["scanner"] == {} and cfg["seed"] == 0
    with pytest.raises(Exception, match="'training' was not passed"):
        cfg["training"]
    full = cli.StageConfig({"training": {}}, given=None)
    assert full["training"] == {}
