"""Cluster execution: the SLURM profile, the conda environments, and the workflow on a real SLURM.

Always run (seconds): every rule has a conda env; the envs are conda-forge only, pinned, and
cover every third-party module their rules' commands import; the post-deploy script installs
the package; the profile names only real rules.

Marker `slurm` (opt in with `pytest tests/test_slurm.py --run-slurm`; root and Debian's
packages, see docs/cluster.md): a local single-node cluster (tests/slurm/start_cluster.sh:
slurmctld + slurmd + munge on loopback, no accounting) runs the tiny config through
`snakemake --profile profiles/slurm` (snakemake-executor-plugin-slurm: sbatch, srun). Checked:
every job goes through sbatch and completes; the artifacts equal a local run's (same seed ->
identical arrays, compared by content, not bytes or mtimes); the profile's resources reach
SLURM; a failing job is reported with its rule log and its SLURM log; a rerun after the failure
resumes from the finished artifacts (only the missing jobs are submitted). These tests share
one workspace and run in file order. The last one (also `slow`) runs the whole workflow, every
rule as a SLURM job and the GPU rules with a GPU, and compares it with a local run too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "slurm_tiny.yaml"
CLUSTER = ROOT / "tests" / "slurm"
SCANS = ["scan_000", "scan_001", "scan_002"]
# The tiny config keeps config/config.yaml's short-scan twins (the Snakefile's configfile).
LOW_COUNT_FRACTIONS = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["dataset"]["low_count_fractions"]
# Every artifact of simulate -> system model -> reconstruct -> dataset, as `rule all` asks them.
# (Asking only for the dataset would let Snakemake skip a missing reconstruction whose consumer
# is up to date: a missing intermediate file alone does not make a job run.)
TARGETS = [
    "results/config.yaml",
    *(f"results/{stage}/{scan}.{ext}" for scan in SCANS for stage, ext in
      [("sim", "root"), ("sim", "json"), ("truth", "npz"), ("recon", "npz"), ("recon", "png")]),
    "results/dataset/positron.npz",
    "results/dataset/positron.png",
]
# Options for this one-node test cluster only; everything else comes from profiles/slurm.
# - squeue for job status: there is no slurmdbd, so sacct has nothing to report;
# - first status check after 2 s instead of 40 s (jobs here take seconds);
# - one thread per job: the profile asks up to 4 per rule and the node has 2; with one, two jobs
#   run at once, and every job computes with the thread count of the local run it is compared
#   with (float reductions may depend on it).
CLUSTER_OPTIONS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--max-threads",
    "1",
]
# Values that are wall-clock measurements, not results: they differ between any two runs.
TIMING_KEYS = re.compile(r"(seconds|elapsed|per_second|wall|duration|hostname|_time_s$)", re.I)

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
RUN_ID = re.compile(r"SLURM run ID: (\S+)")


# A snapshot of the package, taken once, that both runs import (through PYTHONPATH, which the
# SLURM jobs inherit with --export=ALL): an edit of src/ while the test runs cannot make the two
# runs use different code.
SNAPSHOT: dict[str, Path] = {}


def _env() -> dict:
    """The environment for Snakemake: this interpreter's bin first, so that `positrongan` and
    the plugin's `python -m snakemake` inside the job resolve to the same installation."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if "src" in SNAPSHOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SNAPSHOT["src"]), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def snakemake(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # Keep the whole log next to the workspace for the report (pytest -s prints a summary).
    with open(cwd / "snakemake-runs.log", "a") as fh:
        fh.write(f"\n$ snakemake {' '.join(args)}\n(rc={res.returncode})\n{res.stdout}{res.stderr}")
    return res


def submitted_jobs(output: str) -> list[tuple[str, str, str]]:
    """(SLURM job id, rule, wildcard values) of every sbatch submission in a Snakemake log.

    The plugin names each job's SLURM log `.snakemake/slurm_logs/rule_<rule>/<wildcards>/<id>.log`."""
    jobs = []
    for jobid, log in SUBMITTED.findall(output):
        parts = Path(log).parts
        i = next(k for k, p in enumerate(parts) if p.startswith("rule_"))
        wildcards = "/".join(parts[i + 1 : -1])
        jobs.append((jobid, parts[i][len("rule_") :], wildcards))
    return jobs


def slurm_states(run_id: str) -> dict[str, str]:
    """SLURM's own record of a run's jobs (job id -> state), from squeue (MinJobAge keeps
    finished jobs listed for 10 minutes on the test cluster)."""
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i|%T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("|", 1) for line in out.split())


def scontrol_job(jobid: str) -> str:
    return subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True, check=True).stdout


# --- conda environments and the profile (no cluster needed) ----------------------------------------

ENVS = ROOT / "envs"
# Import name -> conda-forge (or PyPI) package name, where the two differ.
PACKAGE = {
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "PIL": "pillow",
    "torch": "pytorch",
    "ot": "pot",
    "pytorch_fid": "pytorch-fid",
    "pytorch_msssim": "pytorch-msssim",
    "sklearn": "scikit-learn",
}
# Imports a group's env leaves out on purpose, with the reason.
NOT_IN_ENV = {
    "sim": {
        "opengate": "the gate engine is optional: pip install opengate into the env (docs/cluster.md)",
        "itk": "comes with opengate",
        "torch": "imported lazily by runtime's torch helpers, which simulate never calls",
    },
}
BUILD_TOOLS = {"pip", "setuptools", "wheel"}


def rule_blocks() -> dict[str, str]:
    """rule name -> its text, for every rule in workflow/rules/*.smk."""
    blocks = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", smk.read_text(), flags=re.M)
        blocks.update(dict(zip(parts[1::2], parts[2::2])))
    return blocks


def rule_env(block: str) -> str | None:
    m = re.search(r'^\s+conda:\s*\n\s+"\.\./\.\./envs/(\w+)\.yaml"', block, re.M)
    return m.group(1) if m else None


def load_env(group: str) -> tuple[dict, dict[str, str], dict[str, str]]:
    """The env file, its conda packages (name -> version spec) and pip packages (same)."""
    import yaml

    env = yaml.safe_load((ENVS / f"{group}.yaml").read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for req in dep["pip"]:
                name, _, version = req.partition("==")
                pip[name.strip()] = version.strip()
        else:
            name, version = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
            conda[name] = version
    return env, conda, pip


def third_party_imports(module: str) -> set[str]:
    """Top-level third-party modules that `module` can import, following positrongan's own
    imports transitively (module level and inside functions: lazy imports count)."""
    import ast

    src = ROOT / "src"

    def path_of(name):
        p = src.joinpath(*name.split("."))
        return p / "__init__.py" if (p / "__init__.py").exists() else p.with_suffix(".py") if p.with_suffix(".py").exists() else None

    seen, found, todo = set(), set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or (path := path_of(name)) is None:
            continue
        seen.add(name)
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]  # parent packages
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top == "positrongan":
                    todo.append(n)
                elif top and top not in sys.stdlib_module_names and top != "__future__":
                    found.add(top)
    return found


def test_every_rule_has_a_conda_env_with_a_post_deploy_script():
    blocks = rule_blocks()
    assert blocks, "no rules found under workflow/rules/"
    missing = {rule: rule_env(b) for rule, b in blocks.items() if rule_env(b) is None or not (ENVS / f"{rule_env(b)}.yaml").exists()}
    assert not missing, f"rules without an existing conda env: {missing}"
    for group in {rule_env(b) for b in blocks.values()}:
        script = (ENVS / f"{group}.post-deploy.sh").read_text()
        assert "pip install" in script and "--no-deps" in script, group


def test_envs_are_conda_forge_only_and_pinned():
    for path in sorted(ENVS.glob("*.yaml")):
        env, conda, pip = load_env(path.stem)
        assert env["channels"] == ["conda-forge", "nodefaults"], path
        unpinned = [n for n, v in conda.items() if n not in BUILD_TOOLS and not re.fullmatch(r"=\d+(\.\d+)+", v)]
        assert not unpinned, f"{path.name}: conda packages without a version pin: {unpinned}"
        assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in pip.values()), f"{path.name}: pip {pip}"
        # A relative pip entry (`-e ..`) would resolve from .snakemake/conda/, where Snakemake
        # copies the env file; the package is installed by the post-deploy script instead.
        assert not any(n.startswith(("-", ".", "/")) for n in pip), f"{path.name}: pip {pip}"


def test_envs_cover_what_their_rules_import():
    sys.path.insert(0, str(ROOT / "src"))
    from positrongan.cli import COMMANDS

    needed: dict[str, dict[str, set[str]]] = {}
    for rule, block in rule_blocks().items():
        command = re.search(r'"positrongan ([a-z-]+)', block)
        assert command and command.group(1) in COMMANDS, f"rule {rule}: no positrongan command"
        module = f"positrongan.commands.{COMMANDS[command.group(1)][0]}"
        for top in third_party_imports(module):
            needed.setdefault(rule_env(block), {}).setdefault(top, set()).add(rule)
    for group, imports in needed.items():
        _, conda, pip = load_env(group)
        have = set(conda) | set(pip)
        lacking = {
            PACKAGE.get(top, top): sorted(rules)
            for top, rules in imports.items()
            if PACKAGE.get(top, top) not in have and top not in NOT_IN_ENV.get(group, {})
        }
        assert not lacking, f"envs/{group}.yaml lacks packages its rules import: {lacking}"


def test_profile_sets_resources_of_real_rules_only():
    import yaml

    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    rules = set(rule_blocks())
    assert profile["executor"] == "slurm"
    assert set(profile["set-resources"]) <= rules, set(profile["set-resources"]) - rules
    assert set(profile["set-threads"]) <= rules, set(profile["set-threads"]) - rules
    assert rules <= set(profile["set-resources"]), f"rules the profile gives no resources: {rules - set(profile['set-resources'])}"
    for rule, res in profile["set-resources"].items():
        assert {"mem_mb", "runtime"} <= set(res), rule


@pytest.mark.slow
def test_post_deploy_script_installs_the_package(tmp_path):
    """What Snakemake does after `conda env create`: run envs/<group>.post-deploy.sh inside the
    env, from the working directory. Here the env is a bare venv that borrows this interpreter's
    site-packages (build tools), so nothing is downloaded."""
    import sysconfig

    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrow.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    (checkout / "README.md").write_text("positrongan\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}

    res = subprocess.run(["bash", ENVS / "sim.post-deploy.sh"], cwd=checkout, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (venv / "bin" / "positrongan").exists()
    # Run from anywhere else, it says where it looked and how to point it at the checkout.
    res = subprocess.run(["bash", ENVS / "sim.post-deploy.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 1 and "POSITRONGAN_SRC" in res.stderr


# --- comparing two results trees by content ------------------------------------------------------


def _equal_arrays(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _diff_npz(a: Path, b: Path) -> list[str]:
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        if set(x.files) != set(y.files):
            return [f"keys {sorted(x.files)} != {sorted(y.files)}"]
        return [k for k in x.files if not TIMING_KEYS.search(k) and not _equal_arrays(x[k], y[k])]


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if not TIMING_KEYS.search(k)}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _diff_json(a: Path, b: Path) -> list[str]:
    x, y = _strip_timing(json.loads(a.read_text())), _strip_timing(json.loads(b.read_text()))
    return [] if x == y else ["content"]


def _diff_root(a: Path, b: Path) -> list[str]:
    import uproot

    diffs = []
    with uproot.open(a) as fa, uproot.open(b) as fb:
        trees_a = sorted(k.split(";")[0] for k in fa.keys())
        trees_b = sorted(k.split(";")[0] for k in fb.keys())
        if trees_a != trees_b:
            return [f"trees {trees_a} != {trees_b}"]
        for name in trees_a:
            ta, tb = fa[name], fb[name]
            if sorted(ta.keys()) != sorted(tb.keys()) or ta.num_entries != tb.num_entries:
                diffs.append(f"{name}: branches or entries differ")
                continue
            xa, xb = ta.arrays(library="np"), tb.arrays(library="np")
            diffs += [f"{name}.{br}" for br in ta.keys() if not _equal_arrays(xa[br], xb[br])]
    return diffs


def _diff_png(a: Path, b: Path) -> list[str]:
    from PIL import Image

    return [] if _equal_arrays(np.asarray(Image.open(a)), np.asarray(Image.open(b))) else ["pixels"]


def _diff_csv(a: Path, b: Path) -> list[str]:
    import pandas as pd

    x, y = pd.read_csv(a), pd.read_csv(b)
    keep = [c for c in x.columns if not TIMING_KEYS.search(str(c))]
    if list(x.columns) != list(y.columns):
        return ["columns"]
    return [] if x[keep].equals(y[keep]) else ["values"]


def _diff_pt(a: Path, b: Path) -> list[str]:
    import torch

    def same(x, y) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and bool(torch.equal(x, y))
        if isinstance(x, dict):
            keys = [k for k in x if not TIMING_KEYS.search(str(k))]
            return isinstance(y, dict) and set(keys) == {k for k in y if not TIMING_KEYS.search(str(k))} and all(
                same(x[k], y[k]) for k in keys
            )
        if isinstance(x, (list, tuple)):
            return isinstance(y, (list, tuple)) and len(x) == len(y) and all(map(same, x, y))
        return x == y

    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return [] if same(x, y) else ["tensors or values"]


COMPARE = {
    ".npz": _diff_npz,
    ".json": _diff_json,
    ".root": _diff_root,
    ".png": _diff_png,
    ".csv": _diff_csv,
    ".pt": _diff_pt,
}
# Not compared: Snakemake's marker of a directory() output (it holds a time stamp), the
# Markdown table, which renders metrics.csv (compared, without its wall-clock columns) together
# with those wall-clock columns, and the run records under results/: the rules' logs and
# Snakemake's benchmarks (times, hosts).
SKIP = {".snakemake_timestamp", "table.md"}
SKIP_DIRS = {"logs", "benchmarks"}


def _result_files(root: Path) -> list[Path]:
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.name not in SKIP and p.relative_to(root).parts[0] not in SKIP_DIRS
    )


def diff_results(a: Path, b: Path) -> list[str]:
    """Files that differ in content between two results trees (empty list: identical)."""
    files_a = _result_files(a)
    files_b = _result_files(b)
    if files_a != files_b:
        return [f"file lists differ: only in slurm run {sorted(set(files_a) - set(files_b))}, "
                f"only in local run {sorted(set(files_b) - set(files_a))}"]
    diffs = []
    for rel in files_a:
        compare = COMPARE.get(rel.suffix)
        if compare is None:
            if (a / rel).read_bytes() != (b / rel).read_bytes():
                diffs.append(f"{rel}: bytes")
        elif bad := compare(a / rel, b / rel):
            diffs.append(f"{rel}: {', '.join(bad)}")
    return diffs


# --- fixtures --------------------------------------------------------------------------------------


def _copy_workflow(dst: Path) -> Path:
    """A self-contained copy of the workflow (results land in the copy, not in the repo)."""
    dst.mkdir(parents=True)
    shutil.copy2(ROOT / "Snakefile", dst / "Snakefile")
    for d in ("workflow", "config", "envs", "profiles"):
        shutil.copytree(ROOT / d, dst / d)
    shutil.copy2(TINY, dst / "tiny.yaml")
    return dst


@pytest.fixture(scope="module")
def cluster():
    """The local cluster, started for these tests (and stopped after, unless it was already up)."""
    for exe in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(exe) is None:
            pytest.fail(f"'{exe}' not found: apt-get install -y slurmctld slurmd slurm-client munge")
    was_up = subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP") > 0
    res = subprocess.run(["bash", str(CLUSTER / "start_cluster.sh")], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    print(res.stdout)
    yield
    if not was_up:
        subprocess.run(["bash", str(CLUSTER / "stop_cluster.sh")], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm")
    SNAPSHOT["src"] = base / "src"
    shutil.copytree(ROOT / "src", SNAPSHOT["src"], ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    yield {"slurm": _copy_workflow(base / "slurm"), "local": _copy_workflow(base / "local")}
    SNAPSHOT.clear()


@pytest.fixture(scope="module")
def local_run(workspace):
    res = snakemake(workspace["local"], "--cores", "2", "--configfile=tiny.yaml", *TARGETS)
    assert res.returncode == 0, res.stderr[-4000:]
    return workspace["local"] / "results"


def slurm_run(workspace, *extra):
    return snakemake(
        workspace["slurm"], "--profile", "profiles/slurm", "--configfile=tiny.yaml", *CLUSTER_OPTIONS, *extra, *TARGETS
    )


# --- tests -----------------------------------------------------------------------------------------


@pytest.mark.slurm
def test_slurm_run_matches_local_run(cluster, workspace, local_run):
    res = slurm_run(workspace)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]

    jobs = submitted_jobs(out)
    rules = sorted({rule for _, rule, _ in jobs})
    # Every job of the pipeline went through sbatch (only `all` runs locally): the default's 3D
    # mode needs no system model, its normalisation source is a job, and its short-scan twins are
    # jobs of their own.
    assert rules == [
        "build_normalisation",
        "build_positron_dataset",
        "reconstruct_lowcount",
        "reconstruct_scan",
        "save_config",
        "simulate_scan",
    ]
    assert sorted(w for _, r, w in jobs if r == "simulate_scan") == SCANS
    # ... and SLURM itself recorded each as COMPLETED.
    states = slurm_states(RUN_ID.search(out).group(1))
    assert {jid: states.get(jid) for jid, _, _ in jobs} == {jid: "COMPLETED" for jid, _, _ in jobs}

    # The profile's per-rule resources reached sbatch: simulate_scan asks 8000 MB and 240 min,
    # and 4 threads, cut to 1 CPU by --max-threads.
    sim_job = next(jid for jid, rule, _ in jobs if rule == "simulate_scan")
    info = scontrol_job(sim_job)
    assert "MinMemoryNode=8000M" in info, info
    assert "TimeLimit=04:00:00" in info, info
    assert re.search(r"NumCPUs=1\b", info), info

    diffs = diff_results(workspace["slurm"] / "results", local_run)
    assert not diffs, diffs


@pytest.mark.slurm
def test_failing_job_is_reported_with_its_logs(cluster, workspace):
    # Corrupt one scan's coincidence file: its reconstruction reruns on the cluster and fails.
    root = workspace["slurm"] / "results" / "sim" / "scan_001.root"
    root.write_bytes(b"this is not a ROOT file")
    res = slurm_run(workspace)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-4000:]

    jobs = submitted_jobs(out)
    failed = [(jid, w) for jid, rule, w in jobs if rule == "reconstruct_scan"]
    assert [w for _, w in failed] == ["scan_001"], jobs
    jobid = failed[0][0]
    slurm_log = workspace["slurm"] / ".snakemake" / "slurm_logs" / "rule_reconstruct_scan" / "scan_001" / f"{jobid}.log"
    rule_log = "results/logs/reconstruct_scan/scan_001.log"
    # Snakemake names both logs in its error report ...
    report = out[out.index("Error in rule reconstruct_scan") :]
    assert rule_log in report and str(slurm_log) in report, report[:3000]
    assert f"SLURM-job '{jobid}' failed" in report
    # ... the job really failed on SLURM, its SLURM log is kept, and the rule log says why.
    assert slurm_states(RUN_ID.search(out).group(1))[jobid] == "FAILED"
    assert "Error in rule reconstruct_scan" in slurm_log.read_text()
    assert "scan_001.root" in (workspace["slurm"] / rule_log).read_text()
    # The failed job left no output behind, and the dataset was not rebuilt from a partial set.
    assert not (workspace["slurm"] / "results" / "recon" / "scan_001.npz").exists()


@pytest.mark.slurm
def test_rerun_resumes_from_finished_artifacts(cluster, workspace, local_run):
    # Put the good file back (as a user would after fixing the cause) and run again: only the
    # missing reconstruction, the twins made from the same file, and what depends on them are
    # submitted; no scan is simulated again.
    shutil.copy2(local_run / "sim" / "scan_001.root", workspace["slurm"] / "results" / "sim" / "scan_001.root")
    res = slurm_run(workspace)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    jobs = sorted((rule, w) for _, rule, w in submitted_jobs(out))
    twins = [("reconstruct_lowcount", f"scan_001_{f:g}") for f in sorted(LOW_COUNT_FRACTIONS)]
    assert jobs == [("build_positron_dataset", ""), *twins, ("reconstruct_scan", "scan_001")], jobs

    diffs = diff_results(workspace["slurm"] / "results", local_run)
    assert not diffs, diffs


@pytest.mark.slurm
@pytest.mark.slow
def test_whole_workflow_on_slurm_matches_local_run(cluster, workspace, tmp_path_factory):
    """Every rule of the workflow (`rule all`) as a SLURM job, the GPU rules with a GPU."""
    import yaml

    base = tmp_path_factory.mktemp("whole")
    local, remote = _copy_workflow(base / "local"), _copy_workflow(base / "slurm")
    res = snakemake(local, "--cores", "2", "--configfile=tiny.yaml")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    res = snakemake(remote, "--profile", "profiles/slurm", "--configfile=tiny.yaml", *CLUSTER_OPTIONS)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]

    jobs = submitted_jobs(out)
    assert {rule for _, rule, _ in jobs} == set(rule_blocks()), "every rule runs as a SLURM job"
    states = slurm_states(RUN_ID.search(out).group(1))
    assert {jid: states.get(jid) for jid, _, _ in jobs} == {jid: "COMPLETED" for jid, _, _ in jobs}
    # The profile's `gpu: 1` became --gpus=1: SLURM gave those jobs the node's (stand-in) GPU.
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    for jid, rule, _ in jobs:
        wants_gpu = bool(profile["set-resources"].get(rule, {}).get("gpu"))
        assert bool(re.search(r"gres[/:]gpu[:=]1", scontrol_job(jid))) == wants_gpu, (rule, scontrol_job(jid))

    diffs = diff_results(remote / "results", local / "results")
    assert not diffs, diffs
