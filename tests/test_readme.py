"""The README's two commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fenced_commands(text: str) -> list[str]:
    return [c.strip() for c in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_cmd = next(c for c in _fenced_commands(readme) if c.endswith("pytest"))
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_readme_run_command_installs_and_runs_the_pipeline():
    readme = (ROOT / "README.md").read_text()
    run_cmd = next(c for c in _fenced_commands(readme) if "snakemake --cores" in c)
    assert "pip install -e ." in run_cmd and run_cmd.startswith("python3 -m venv")
