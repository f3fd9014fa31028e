# Config validation, paths and target functions shared by every rule file.
import json
import os

from snakemake.utils import min_version, validate

min_version("8.10")


# The package's validation first: one line naming the key for any schema error (Snakemake's
# own prints the whole schema), then every cross-key rule, so that no config error can start a
# job (Snakemake removes a job's old outputs before running it). Then Snakemake's validation of
# the same schema file, which fills the same defaults and now always passes.
try:
    from positrongan.config import check_warnings as _check_warnings
    from positrongan.config import scan_ids as _scan_ids
    from positrongan.recon.thinning import fraction_tag as _fraction_tag
    from positrongan.config import validate as _pg_validate
    from positrongan.errors import ConfigError as _ConfigError
except ImportError as exc:
    raise WorkflowError(
        "the positrongan package is not importable from Snakemake's Python; "
        "install it first: pip install -e .  (see README.md)"
    ) from exc
try:
    _resolved = _pg_validate(config)
except _ConfigError as exc:
    raise WorkflowError(f"invalid config: {exc}") from None
config.clear()
config.update(_resolved)
validate(config, "../schemas/config.schema.yaml")
for _text in _check_warnings(config):
    logger.warning(f"config: {_text}")


RESULTS = config["results_dir"]


# Scan ids are scan_NNN (so results/recon/{scan}.npz never matches system_model.npz or a file in
# recon/lowcount/); fractions are plain decimal numbers as fraction_tag writes them.
wildcard_constraints:
    scan=r"scan_\d+",
    fraction=r"[0-9.e-]+",


SCANS = _scan_ids(config)
# Short-scan twins: the file-name tag of each low-count fraction (f0.1), one owner of the format.
LOW_COUNT_TAGS = [_fraction_tag(f) for f in config["dataset"]["low_count_fractions"]]
METHODS = config["training"]["methods"]


def results(*parts):
    """A path under the results root."""
    return "/".join([RESULTS, *parts])


def logs(*parts):
    """A rule's log, under the results root: runs with another ``results_dir`` (config/gpu.yaml,
    config/paper.yaml) keep their own logs instead of overwriting the default run's."""
    return results("logs", *parts)


def benchmarks(*parts):
    """A rule's benchmark TSV (run time, memory), under the results root like its log."""
    return results("benchmarks", *parts)


def cfg_json(*keys):
    """The config a rule depends on, as JSON for `positrongan <stage> --config-json`.

    Keys are sections ("scanner") or dotted keys ("reconstruction.grid"). Passing only these as
    a param means Snakemake reruns a rule exactly when a key it reads changes; the stage refuses
    to read a section it was not given (a dotted key gives its section, other keys defaulted).
    """
    picked = {}
    for key in ("seed", "device", *keys):
        *parents, leaf = key.split(".")
        src, dst = config, picked
        for part in parents:
            src = src[part]
            dst = dst.setdefault(part, {})
        dst[leaf] = src[leaf]
    return json.dumps(picked, sort_keys=True, separators=(",", ":"))


def capped_threads(n):
    """Threads for a rule, never more than the cores given to Snakemake."""
    try:
        cores = workflow.cores
    except WorkflowError:
        # `snakemake --report` and `--lint` run without --cores and execute nothing.
        return n
    return min(n, cores)


# Each stage registers its final artifacts here, as TARGETS["<stage>"] = [...];
# `rule all` (in the Snakefile, after every include) asks for all of them.
TARGETS = {}


def all_targets():
    """Every final artifact of the workflow for the current config."""
    targets = [results("config.yaml")]
    for paths in TARGETS.values():
        targets.extend(paths)
    return targets


def _unwritable_outputs():
    """Outputs of the jobs about to run whose folder cannot be written (one line each)."""
    problems = {}
    for job in workflow.dag.needrun_jobs():
        for out in job.output:
            folder = os.path.dirname(os.path.abspath(out)) or "."
            while not os.path.exists(folder):
                folder = os.path.dirname(folder)
            if not os.access(folder, os.W_OK):
                problems.setdefault(folder, out)
    return [
        f"{folder} is not writable (needed for {out})"
        for folder, out in sorted(problems.items())
    ]


onstart:
    # Snakemake removes a job's old outputs before running it, and crashes with a traceback in
    # that step when their folder is read-only: refuse before any job starts, naming the folder.
    _bad = _unwritable_outputs()
    if _bad:
        raise WorkflowError(
            "cannot write the outputs: "
            + "; ".join(_bad)
            + ". Make the folder writable (chmod u+w) "
            "or set results_dir to another folder; nothing was run or removed."
        )


# -- input functions of the evaluation and enhancement rules (snakemake --lint keeps functions here)


def _detector(wildcards):
    # The defect detector (train_detector), when the workflow has that step; its feature space
    # gives the domain metrics of the evaluation.
    if "train_detector" in {r.name for r in workflow.rules}:
        return [results("detect", "detector.pt")]
    return []


def _enhance_inputs(wildcards):
    inputs = {"dataset": results("dataset", "positron.npz")}
    if wildcards.enh_method == "ours":
        inputs["features"] = results("features", "positron_features.npz")
    # The reconstruction-side baselines choose among candidate images of every twin.
    if wildcards.enh_method == "osem_early":
        inputs["candidates"] = [
            results("recon", "lowcount", f"{scan}_{tag}_iterations.npz")
            for scan in SCANS
            for tag in LOW_COUNT_TAGS
        ]
    elif wildcards.enh_method == "map_rdp":
        inputs["candidates"] = [
            results("recon", "map", f"{scan}_{tag}.npz")
            for scan in SCANS
            for tag in LOW_COUNT_TAGS
        ]
    return inputs


def _enhance_extra(wildcards, input):
    if wildcards.enh_method == "ours":
        return f"--features {input.features}"
    if wildcards.enh_method in ("osem_early", "map_rdp"):
        return "--candidates " + " ".join(input.candidates)
    return ""
