# Config validation, paths and target functions shared by every rule file.
import json

from snakemake.utils import min_version, validate

min_version("8.10")


# Snakemake's own validation (fills defaults, names the key on error), then the package's,
# which adds the cross-key rules JSON-Schema cannot express. Both read the same schema file.
validate(config, "../schemas/config.schema.yaml")
try:
    from positrongan.config import scan_ids as _scan_ids
    from positrongan.config import validate as _pg_validate
    from positrongan.errors import ConfigError as _ConfigError
except ImportError as exc:
    raise WorkflowError(
        "the positrongan package is not importable from Snakemake's Python; "
        "install it first: pip install -e .  (see README.md)"
    ) from exc
try:
    config.update(_pg_validate(config))
except _ConfigError as exc:
    raise WorkflowError(f"invalid config: {exc}") from None


RESULTS = config["results_dir"]
SCANS = _scan_ids(config)
METHODS = config["training"]["methods"]


def results(*parts):
    """A path under the results root."""
    return "/".join([RESULTS, *parts])


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
