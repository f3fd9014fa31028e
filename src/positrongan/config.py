"""Load and validate the configuration against the one schema Snakemake also uses.

The schema lives at ``workflow/schemas/config.schema.yaml``; a copy is shipped inside the
package (``positrongan/config.schema.yaml``) so the installed CLI validates the same way.
A test keeps the two identical.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

from .errors import ConfigError


def schema() -> dict:
    """Return the config JSON-Schema (a fresh copy each call).

    Returns:
        The parsed schema as a dict.
    """
    text = resources.files("positrongan").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    # Same semantics as snakemake.utils.validate(set_default=True): fill a property's default
    # before descending, so an absent section gets {} and then its own keys' defaults.
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sub_schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, sub_schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key(error: jsonschema.ValidationError) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        extra = set(error.instance) - set(error.schema.get("properties", {}))
        path = path + sorted(extra)[:1]
    return ".".join(path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error)
    sch = error.schema
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(sch.get("properties", {})))
        return f"config key '{key}' is not a known key; allowed here: {allowed}"
    if error.validator == "enum":
        return f"config key '{key}' = {error.instance!r} is not allowed; choose one of {sch['enum']}"
    if error.validator == "type":
        return f"config key '{key}' = {error.instance!r} has the wrong type; expected {sch['type']}"
    bound = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
    }
    if error.validator in bound:
        return (
            f"config key '{key}' = {error.instance!r} is out of range; "
            f"it must be {bound[error.validator]} {error.validator_value}"
        )
    return f"config key '{key}': {error.message}"


def validate(cfg: Mapping[str, Any]) -> dict:
    """Validate a config and fill in every default.

    Params:
        cfg: the user's (possibly partial) config.
    Returns:
        A new dict: the complete, validated config.
    Raises:
        ConfigError: naming the first offending key and what is allowed.
    """
    out = copy.deepcopy(dict(cfg))
    sch = schema()
    cls = _with_defaults(jsonschema.validators.validator_for(sch))
    errors = sorted(cls(sch).iter_errors(out), key=lambda e: list(e.absolute_path))
    if errors:
        # The deepest error is the most specific (e.g. the bad leaf, not its parent object).
        err = max(errors, key=lambda e: len(e.absolute_path))
        more = f" ({len(errors) - 1} more problem(s) after this one)" if len(errors) > 1 else ""
        raise ConfigError(_describe(err) + more)
    _check_consistency(out)
    return _schema_order(out, sch)


def _schema_order(node: Any, sch: dict) -> Any:
    # Dicts come back in the schema's key order, so saved configs read like the docs.
    props = sch.get("properties")
    if not isinstance(node, dict) or not props:
        return node
    return {k: _schema_order(node[k], props[k]) for k in props if k in node}


def _check_consistency(cfg: dict) -> None:
    """Cross-key rules JSON-Schema cannot express."""
    for name in ("cracks", "pits", "blockages", "bubbles"):
        for key, rng in cfg["phantom"]["defects"][name].items():
            if rng[0] > rng[1]:
                raise ConfigError(
                    f"config key 'phantom.defects.{name}.{key}' = {rng}: the range must be [min, max] with min <= max"
                )
    for key in ("bend_mm",):
        rng = cfg["phantom"][key]
        if rng[0] > rng[1]:
            raise ConfigError(f"config key 'phantom.{key}' = {rng}: the range must be [min, max] with min <= max")
    lo, hi = cfg["digitizer"]["energy_window_kev"]
    if lo >= hi:
        raise ConfigError(f"config key 'digitizer.energy_window_kev' = {[lo, hi]}: low must be below high")
    lo, hi = cfg["ct"]["hu_window"]
    if lo >= hi:
        raise ConfigError(f"config key 'ct.hu_window' = {[lo, hi]}: low must be below high")
    split = cfg["dataset"]["split"]
    if abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(f"config key 'dataset.split' = {split}: the three fractions must sum to 1")
    if cfg["ct"]["source"] != "synthetic" and not cfg["ct"]["path"]:
        raise ConfigError(f"config key 'ct.path' must be set when ct.source is '{cfg['ct']['source']}'")


def _set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section")
    node[keys[-1]] = value


def _merge(base: dict, over: Mapping[str, Any]) -> dict:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def load(
    paths: Iterable[str | Path] = (),
    json_text: str | None = None,
    overrides: Iterable[str] = (),
) -> dict:
    """Build the config: defaults <- each YAML file <- JSON text <- ``key=value`` overrides.

    Params:
        paths: YAML config files, later ones win.
        json_text: a JSON object (what the Snakemake rules pass), merged after the files.
        overrides: ``dotted.key=value`` strings; values are parsed as YAML (``3``, ``true``, ``[1, 2]``).
    Returns:
        The complete, validated config.
    Raises:
        ConfigError: a file that cannot be read or parsed (naming it), or an invalid key.
    """
    cfg: dict = {}
    for path in paths:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
        _merge(cfg, data)
    if json_text:
        try:
            data = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config-json is not valid JSON: {exc}") from None
        _merge(cfg, data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        key, _, raw = item.partition("=")
        _set_dotted(cfg, key.strip(), yaml.safe_load(raw))
    return validate(cfg)


def dump(cfg: Mapping[str, Any]) -> str:
    """The config as YAML text, keys in schema order."""
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None)


def scan_ids(cfg: Mapping[str, Any]) -> list[str]:
    """Scan ids of the config: ``scan_000`` ... (zero-padded to at least three digits)."""
    n = cfg["scans"]["count"]
    width = max(3, len(str(n - 1)))
    return [f"scan_{i:0{width}d}" for i in range(n)]


def derived_seed(cfg: Mapping[str, Any], *keys: str | int) -> int:
    """A 63-bit seed derived from the master seed and a path of names (stable across runs).

    Params:
        cfg: the config (its ``seed``).
        keys: what the stream is for, e.g. ``("simulate", "scan_003")``.
    Returns:
        An int seed usable by numpy and torch.
    """
    import hashlib

    text = "/".join(str(k) for k in (cfg["seed"], *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def section(cfg: Mapping[str, Any], name: str) -> dict:
    """One top-level section, with a clear error if it is missing."""
    try:
        return cfg[name]
    except KeyError:
        raise ConfigError(f"config section '{name}' is missing") from None


def documentation() -> str:
    """Markdown documentation of every key, generated from the schema (config/README.md)."""
    sch = schema()
    lines = [
        "# Configuration keys",
        "",
        "Generated from `workflow/schemas/config.schema.yaml` by `positrongan config-docs`;",
        "do not edit by hand. Every key is optional: the default below applies when it is absent.",
        "Unknown keys are rejected, naming the key and what is allowed.",
        "",
        "| key | type | units | default | description |",
        "| --- | --- | --- | --- | --- |",
    ]

    def walk(node: dict, prefix: str) -> None:
        for name, sub in node.get("properties", {}).items():
            key = f"{prefix}{name}"
            typ = sub.get("type", "")
            if "enum" in sub:
                typ = " \\| ".join(f"`{v}`" for v in sub["enum"])
            elif isinstance(typ, list):
                typ = " or ".join(typ)
            if sub.get("type") == "object":
                lines.append(f"| **`{key}`** | section | | | {' '.join(sub.get('description', '').split())} |")
                walk(sub, key + ".")
                continue
            default = json.dumps(sub.get("default"))
            desc = " ".join(sub.get("description", "").split()).replace("|", "\\|")
            lines.append(f"| `{key}` | {typ} | {sub.get('units', '')} | `{default}` | {desc} |")

    walk(sch, "")
    return "\n".join(lines) + "\n"
