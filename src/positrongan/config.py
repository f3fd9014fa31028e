"""Load and validate the configuration against the one schema Snakemake also uses.

The schema lives at ``workflow/schemas/config.schema.yaml``; the package ships it as
``positrongan/config.schema.yaml`` (a symlink in a source checkout, a copy in a wheel) so the
installed CLI validates the same way. After the schema, every cross-key rule that needs only the
config (``check_rules``) is checked here too, by the CLI and by ``workflow/rules/common.smk``
before Snakemake plans a job.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import jsonschema
import yaml

from .errors import ConfigError
from .geometry.scanner import Scanner


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


def _types(typ: Any) -> list:
    return typ if isinstance(typ, list) else [typ]


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error)
    sch = error.schema
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(sch.get("properties", {})))
        return f"config key '{key}' is not a known key; allowed here: {allowed}"
    if error.validator == "enum":
        return f"config key '{key}' = {error.instance!r} is not allowed; choose one of {sch['enum']}"
    if error.validator == "type":
        hint = ""
        if isinstance(error.instance, str) and {"number", "integer"} & set(_types(sch["type"])):
            try:
                hint = f" (YAML read it as text: write {int(float(error.instance))})"
            except ValueError:
                hint = " (YAML read it as text: write a plain number)"
        return f"config key '{key}' = {error.instance!r} has the wrong type; expected {sch['type']}{hint}"
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


def validate(cfg: Mapping[str, Any], given: Iterable[str] | None = None) -> dict:
    """Validate a config and fill in every default: the schema, then every cross-key rule.

    Params:
        cfg: the user's (possibly partial) config.
        given: dotted keys the caller really provided, when the rest is not its to read (a stage
            run with ``--config-json``): only rules over these keys are checked. None: all rules.
    Returns:
        A new dict: the complete, validated config.
    Raises:
        ConfigError: naming the first offending key and what is allowed.
    """
    sch = schema()
    out = _numbers_from_text(copy.deepcopy(dict(cfg)), sch)
    cls = _with_defaults(jsonschema.validators.validator_for(sch))
    errors = sorted(cls(sch).iter_errors(out), key=lambda e: list(e.absolute_path))
    if errors:
        # The deepest error is the most specific (e.g. the bad leaf, not its parent object).
        err = max(errors, key=lambda e: len(e.absolute_path))
        more = f" ({len(errors) - 1} more problem(s) after this one)" if len(errors) > 1 else ""
        raise ConfigError(_describe(err) + more)
    problems = check_rules(out, given)
    if problems:
        more = f" ({len(problems) - 1} more problem(s) after this one)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return _schema_order(out, sch)


# Numbers that arrive as text: PyYAML (YAML 1.1) reads `4e6` as text (YAML 1.2 and the user read a
# number), and Snakemake's `--config section={key: 150}` passes nested values as text.
_INT_TEXT = re.compile(r"^[-+]?\d+$")
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _numbers_from_text(node: Any, sch: dict) -> Any:
    # Accept them wherever the schema asks for a number, the same way in the CLI and in Snakemake.
    if isinstance(node, str):
        types, text = _types(sch.get("type")), node.strip()
        if {"integer", "number"} & set(types) and _INT_TEXT.match(text):
            return int(text)
        if "number" in types and _FLOAT_TEXT.match(text):
            return float(text)
        return node
    if isinstance(node, dict):
        props = sch.get("properties", {})
        return {k: _numbers_from_text(v, props[k]) if k in props else v for k, v in node.items()}
    if isinstance(node, list) and isinstance(sch.get("items"), dict):
        return [_numbers_from_text(v, sch["items"]) for v in node]
    return node


def _schema_order(node: Any, sch: dict) -> Any:
    # Dicts come back in the schema's key order, so saved configs read like the docs.
    props = sch.get("properties")
    if not isinstance(node, dict) or not props:
        return node
    return {k: _schema_order(node[k], props[k]) for k in props if k in node}


# ---- cross-key rules ------------------------------------------------------------------------
#
# Every rule that needs only the config lives here, so that it fails `snakemake -n` and
# `positrongan config` before any job runs: a job that fails after Snakemake removed its old
# outputs costs those artifacts (at the paper's scale, hours of simulation). Stages keep only the
# checks that need data. Each rule names the dotted keys it reads; a stage given only some keys
# (``--config-json``) checks the rules whose keys it holds, the others were checked by Snakemake.

Rule = Callable[[Mapping], Iterator[str]]
_RULES: list[tuple[tuple[str, ...], Rule]] = []

# Smallest lumen radius the phantom accepts (mm): thinner leaves no fluid to image.
MIN_LUMEN_MM = 1.0
# Radius of the normalisation source beyond the sinogram's farthest chord (mm; recon/normalisation.py):
# several times the detector blur (~3 mm FWHM), so every LOR sees the cylinder's flat interior.
NORM_SOURCE_MARGIN_MM = 8.0


def _rule(*keys: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        _RULES.append((keys, fn))
        return fn

    return register


def _get(cfg: Mapping, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _inner_radius_mm(cfg: Mapping) -> float:
    return Scanner.from_config(cfg["scanner"]).inner_radius_mm


def _tube_reach_mm(cfg: Mapping) -> float:
    # Farthest the tube's outer surface gets from the scanner axis over every draw: the section is
    # rotated at random (its longer semi-axis may point anywhere) and the bend shifts it by up to
    # the largest sagitta.
    return max(cfg["phantom"]["outer_semi_axes_mm"]) + cfg["phantom"]["bend_mm"][1]


_RING = ("scanner.crystals_per_ring", "scanner.crystal_pitch_mm")
_TUBE = ("phantom.outer_semi_axes_mm", "phantom.bend_mm")


# -- phantom


def _range_rule(dotted: str) -> Rule:
    def check(cfg: Mapping) -> Iterator[str]:
        rng = _get(cfg, dotted)
        if rng[0] > rng[1]:
            yield f"config key '{dotted}' = {rng}: the range must be [min, max] with min <= max"

    return check


def _register_range_rules() -> None:
    phantom = schema()["properties"]["phantom"]["properties"]
    for kind, sub in phantom["defects"]["properties"].items():
        for key in sub["properties"]:
            dotted = f"phantom.defects.{kind}.{key}"
            _rule(dotted)(_range_rule(dotted))
    _rule("phantom.bend_mm")(_range_rule("phantom.bend_mm"))


_register_range_rules()


@_rule("phantom.outer_semi_axes_mm", "phantom.wall_thickness_mm", "phantom.wall_variation")
def _lumen(cfg: Mapping) -> Iterator[str]:
    ph = cfg["phantom"]
    # The wall is thickest, t0 (1 + v), where the random phase may put it: on the shorter semi-axis.
    lumen = min(ph["outer_semi_axes_mm"]) - ph["wall_thickness_mm"] * (1 + ph["wall_variation"])
    if lumen <= MIN_LUMEN_MM:
        yield (
            f"config keys 'phantom.wall_thickness_mm' = {ph['wall_thickness_mm']} and 'phantom.wall_variation' = "
            f"{ph['wall_variation']} leave no lumen inside 'phantom.outer_semi_axes_mm' = {ph['outer_semi_axes_mm']}: "
            f"the thickest wall, {ph['wall_thickness_mm'] * (1 + ph['wall_variation']):g} mm, must be thinner than the "
            f"shorter semi-axis minus {MIN_LUMEN_MM:g} mm; make the wall thinner or the tube wider"
        )


# -- scanner and geometry


# The truth's per-defect index map is uint8 (0: no defect), so a scan holds at most 255 defects.
MAX_DEFECTS = 255


@_rule(*(f"phantom.defects.{kind}" for kind in ("cracks", "pits", "blockages", "bubbles")))
def _defect_count(cfg: Mapping) -> Iterator[str]:
    most = sum(spec["count"][1] for spec in cfg["phantom"]["defects"].values())
    if most > MAX_DEFECTS:
        yield (
            f"config keys 'phantom.defects.*.count' allow up to {most} defects per scan: at most {MAX_DEFECTS} "
            "(the truth's defect index map is uint8)"
        )


@_rule("scanner.crystals_per_ring")
def _even_ring(cfg: Mapping) -> Iterator[str]:
    n = cfg["scanner"]["crystals_per_ring"]
    if n % 2:
        yield f"config key 'scanner.crystals_per_ring' = {n}: must be even (the ring sinogram pairs opposite crystals)"


@_rule(*_TUBE, *_RING)
def _tube_in_bore(cfg: Mapping) -> Iterator[str]:
    reach, bore = _tube_reach_mm(cfg), _inner_radius_mm(cfg)
    if reach >= bore:
        yield (
            f"config keys 'phantom.outer_semi_axes_mm' = {cfg['phantom']['outer_semi_axes_mm']} and "
            f"'phantom.bend_mm' = {cfg['phantom']['bend_mm']}: the tube reaches {reach:g} mm from the axis "
            f"(largest semi-axis + largest bend), outside the bore of radius {bore:.1f} mm "
            f"('scanner.crystals_per_ring' x 'scanner.crystal_pitch_mm' / 2 pi); use a smaller tube or a larger ring"
        )


@_rule(*_TUBE, "reconstruction.fov_mm")
def _tube_in_fov(cfg: Mapping) -> Iterator[str]:
    reach, half = _tube_reach_mm(cfg), cfg["reconstruction"]["fov_mm"] / 2
    if reach > half:
        yield (
            f"config keys 'phantom.outer_semi_axes_mm' = {cfg['phantom']['outer_semi_axes_mm']} and "
            f"'phantom.bend_mm' = {cfg['phantom']['bend_mm']}: the tube reaches {reach:g} mm from the axis "
            f"(largest semi-axis + largest bend), outside the reconstructed field of view "
            f"('reconstruction.fov_mm' = {cfg['reconstruction']['fov_mm']:g}, half side {half:g} mm); "
            f"set reconstruction.fov_mm to at least {2 * reach:g}"
        )


@_rule("reconstruction.fov_mm", *_RING)
def _fov_in_ring(cfg: Mapping) -> Iterator[str]:
    fov, bore = cfg["reconstruction"]["fov_mm"], _inner_radius_mm(cfg)
    if fov / 2 >= bore:
        yield (
            f"config key 'reconstruction.fov_mm' = {fov:g}: the image must fit inside the ring, whose inner "
            f"diameter is {2 * bore:.1f} mm ('scanner.crystals_per_ring' x 'scanner.crystal_pitch_mm' / pi)"
        )


# -- digitizer


@_rule("digitizer.energy_window_kev")
def _energy_window(cfg: Mapping) -> Iterator[str]:
    lo, hi = cfg["digitizer"]["energy_window_kev"]
    if lo >= hi:
        yield f"config key 'digitizer.energy_window_kev' = {[lo, hi]}: low must be below high"


@_rule("digitizer.delayed_window", "digitizer.delayed_offset_ns", "digitizer.coincidence_window_ns")
def _delayed_window(cfg: Mapping) -> Iterator[str]:
    dig = cfg["digitizer"]
    if dig["delayed_window"] and dig["delayed_offset_ns"] <= dig["coincidence_window_ns"]:
        yield (
            f"config key 'digitizer.delayed_offset_ns' = {dig['delayed_offset_ns']} must exceed "
            f"'digitizer.coincidence_window_ns' = {dig['coincidence_window_ns']}, or true pairs enter the delayed "
            "window (or set digitizer.delayed_window: false)"
        )


@_rule("reconstruction.scatter_correction", "reconstruction.attenuation_correction")
def _scatter_needs_mu(cfg: Mapping) -> Iterator[str]:
    rec = cfg["reconstruction"]
    if rec["scatter_correction"] and not rec["attenuation_correction"]:
        yield (
            "config key 'reconstruction.scatter_correction' is true but 'reconstruction.attenuation_correction' "
            "is false: the scatter model needs the mu-map (its tails and the attenuated trues)"
        )


@_rule("reconstruction.psf_fwhm_mm", "reconstruction.mode")
def _psf_is_3d(cfg: Mapping) -> Iterator[str]:
    rec = cfg["reconstruction"]
    if rec["psf_fwhm_mm"] > 0 and rec["mode"] != "3d":
        yield (
            f"config key 'reconstruction.psf_fwhm_mm' = {rec['psf_fwhm_mm']} models the resolution in the 3D "
            f"reconstruction only, but 'reconstruction.mode' is {rec['mode']!r}; set mode: 3d or psf_fwhm_mm: 0"
        )


@_rule("reconstruction.normalisation", "reconstruction.mode", "reconstruction.fov_mm", *_RING)
def _normalisation_source_fits(cfg: Mapping) -> Iterator[str]:
    rec, bore = cfg["reconstruction"], _inner_radius_mm(cfg)
    if not rec["normalisation"]:
        return
    # The source reaches NORM_SOURCE_MARGIN_MM beyond the sinogram's farthest chord: the
    # cylindrical field of view (3d) or the image square's corners (2d).
    reach = rec["fov_mm"] / 2 if rec["mode"] == "3d" else rec["fov_mm"] / 2**0.5
    margin = NORM_SOURCE_MARGIN_MM
    if reach + margin + 1.0 >= bore:
        yield (
            f"config key 'reconstruction.normalisation' is true but its uniform source ({reach + margin:.1f} mm "
            f"radius: the field of view's chords plus {margin:g} mm) does not fit inside the ring (inner radius "
            f"{bore:.1f} mm); lower reconstruction.fov_mm or set reconstruction.normalisation: false"
        )


@_rule("simulation.lyso_background", "scanner.crystal_material", "digitizer.readout", "simulation.engine")
def _lyso_background(cfg: Mapping) -> Iterator[str]:
    if not cfg["simulation"]["lyso_background"]:
        return
    material = cfg["scanner"]["crystal_material"]
    if material not in ("LYSO", "LSO"):
        yield (
            f"config key 'simulation.lyso_background' is true but 'scanner.crystal_material' = {material!r} holds "
            "no lutetium: use LYSO or LSO, or set it false"
        )
    if cfg["digitizer"]["readout"] != "crystal" and cfg["simulation"]["engine"] != "gate":
        yield (
            f"config key 'simulation.lyso_background' is true but 'digitizer.readout' = "
            f"{cfg['digitizer']['readout']!r}: the background decays inside the box crystals, which only the "
            "'crystal' readout models"
        )


@_rule("export.formats", "simulation.write_truth")
def _gate9_truth(cfg: Mapping) -> Iterator[str]:
    if "gate9" in cfg["export"]["formats"] and not cfg["simulation"]["write_truth"]:
        yield (
            "config key 'export.formats' names gate9, whose sourcePos/comptonPhantom branches come from the "
            "simulation's truth, but 'simulation.write_truth' is false: set it true (or drop gate9)"
        )


# -- reconstruction


@_rule("reconstruction.algorithm", "reconstruction.subsets", "scanner.crystals_per_ring")
def _subsets(cfg: Mapping) -> Iterator[str]:
    rec = cfg["reconstruction"]
    # OSEM subsets are interleaved views, in 2D and 3D alike: a view is one of crystals_per_ring / 2
    # directions of the ring.
    if rec["algorithm"] != "osem":
        return
    views = cfg["scanner"]["crystals_per_ring"] // 2
    if rec["subsets"] > views:
        yield (
            f"config key 'reconstruction.subsets' = {rec['subsets']}: at most {views}, the number of views "
            f"('scanner.crystals_per_ring' / 2 = {cfg['scanner']['crystals_per_ring']} / 2)"
        )


# -- dataset and CT corpus


@_rule("dataset.split")
def _split(cfg: Mapping) -> Iterator[str]:
    split = cfg["dataset"]["split"]
    if abs(sum(split) - 1.0) > 1e-6:
        yield f"config key 'dataset.split' = {split}: the three fractions must sum to 1"


@_rule("ct.hu_window")
def _hu_window(cfg: Mapping) -> Iterator[str]:
    lo, hi = cfg["ct"]["hu_window"]
    if lo >= hi:
        yield f"config key 'ct.hu_window' = {[lo, hi]}: low must be below high"


@_rule("ct.source", "ct.path")
def _ct_path(cfg: Mapping) -> Iterator[str]:
    if cfg["ct"]["source"] != "synthetic" and not cfg["ct"]["path"]:
        yield f"config key 'ct.path' must be set when ct.source is '{cfg['ct']['source']}'"


@_rule("ct.source", "ct.synthetic_size", "ct.min_size")
def _synthetic_size(cfg: Mapping) -> Iterator[str]:
    ct = cfg["ct"]
    if ct["source"] == "synthetic" and ct["synthetic_size"] < ct["min_size"]:
        yield (
            f"config key 'ct.synthetic_size' = {ct['synthetic_size']} is below 'ct.min_size' = {ct['min_size']}: "
            "every synthetic slice would be skipped; lower ct.min_size or raise ct.synthetic_size"
        )


# -- features


@_rule(
    "features.method",
    "features.pcanet_filters",
    "features.pcanet_patch",
    "features.pcanet_block",
    "dataset.image_size",
)
def _pcanet(cfg: Mapping) -> Iterator[str]:
    feat, size = cfg["features"], cfg["dataset"]["image_size"]
    if feat["method"] != "pcanet":
        return
    if feat["pcanet_block"] > size:
        yield (
            f"config key 'features.pcanet_block' = {feat['pcanet_block']} exceeds the image size "
            f"('dataset.image_size' = {size})"
        )
    if max(feat["pcanet_filters"]) > feat["pcanet_patch"] ** 2:
        yield (
            f"config key 'features.pcanet_filters' = {feat['pcanet_filters']}: at most 'features.pcanet_patch'^2 = "
            f"{feat['pcanet_patch'] ** 2} filters per stage"
        )
    if feat["pcanet_filters"][1] > 16:
        yield (
            f"config key 'features.pcanet_filters' = {feat['pcanet_filters']}: at most 16 stage-2 filters "
            "(2^16 histogram bins)"
        )


# -- evaluation


@_rule("evaluation.msssim_window")
def _msssim_odd(cfg: Mapping) -> Iterator[str]:
    window = cfg["evaluation"]["msssim_window"]
    if window % 2 != 1:
        yield f"config key 'evaluation.msssim_window' = {window}: must be odd"


@_rule("evaluation.msssim_scales", "evaluation.msssim_window", "dataset.image_size")
def _msssim_fits(cfg: Mapping) -> Iterator[str]:
    ev, size = cfg["evaluation"], cfg["dataset"]["image_size"]
    smallest = size
    for _ in range(ev["msssim_scales"] - 1):
        smallest = (smallest + 1) // 2
    if smallest < ev["msssim_window"]:
        yield (
            f"config keys 'evaluation.msssim_scales' = {ev['msssim_scales']} and 'evaluation.msssim_window' = "
            f"{ev['msssim_window']}: a {size} px image ('dataset.image_size') is {smallest} px at the coarsest "
            "scale, smaller than the window; use fewer scales or a smaller window"
        )


@_rule("evaluation.swd_min_size", "evaluation.swd_patch_size", "dataset.image_size")
def _swd(cfg: Mapping) -> Iterator[str]:
    ev, size = cfg["evaluation"], cfg["dataset"]["image_size"]
    if ev["swd_min_size"] > size:
        yield (
            f"config key 'evaluation.swd_min_size' = {ev['swd_min_size']} is larger than the images "
            f"('dataset.image_size' = {size})"
        )
    if ev["swd_patch_size"] > ev["swd_min_size"]:
        yield (
            f"config key 'evaluation.swd_patch_size' = {ev['swd_patch_size']} must not exceed "
            f"'evaluation.swd_min_size' = {ev['swd_min_size']}"
        )


# -- enhancement


@_rule("enhancement.unet_depth", "enhancement.dense_depth", "dataset.image_size")
def _enhance_depth(cfg: Mapping) -> Iterator[str]:
    size = cfg["dataset"]["image_size"]
    for key in ("unet_depth", "dense_depth"):
        depth = cfg["enhancement"][key]
        if size % 2**depth or size // 2**depth < 2:
            yield (
                f"config key 'enhancement.{key}' = {depth}: 'dataset.image_size' = {size} must be divisible by "
                f"2^{depth} and leave at least 2 px at the bottleneck; use a smaller depth"
            )


@_rule("reconstruction.mode", "reconstruction.rdp_beta")
def _rdp_needs_3d(cfg: Mapping) -> Iterator[str]:
    # The relative-difference prior lives in the 3D OSEM only.
    if cfg["reconstruction"]["mode"] != "3d" and cfg["reconstruction"]["rdp_beta"] > 0:
        yield "config key 'reconstruction.rdp_beta' > 0 needs 'reconstruction.mode' = 3d (the prior is in the 3D OSEM)"


# -- detection: the conditional generator of the augmentation study


@_rule("detection.conditional.kernel", "dataset.image_size")
def _conditional_kernel(cfg: Mapping) -> Iterator[str]:
    k, size = cfg["detection"]["conditional"]["kernel"], cfg["dataset"]["image_size"]
    if k % 2 == 0:
        yield f"config key 'detection.conditional.kernel' = {k}: must be odd (a kernel centred on its pixel)"
    if k // 2 >= size:
        # The noise is padded by reflection, which needs fewer padding pixels than the image has.
        yield f"config key 'detection.conditional.kernel' = {k}: must be below 2 x 'dataset.image_size' = {2 * size}"


@_rule("detection.conditional.depth", "dataset.image_size")
def _conditional_depth(cfg: Mapping) -> Iterator[str]:
    size, depth = cfg["dataset"]["image_size"], cfg["detection"]["conditional"]["depth"]
    if size % 2**depth or size // 2**depth < 2:
        yield (
            f"config key 'detection.conditional.depth' = {depth}: 'dataset.image_size' = {size} must be "
            f"divisible by 2^{depth} and leave at least 2 px at the bottleneck; use a smaller depth"
        )


def check_rules(cfg: Mapping, given: Iterable[str] | None = None) -> list[str]:
    """Every cross-key rule the config breaks (rules JSON-Schema cannot express).

    Params:
        cfg: a config whose every key is filled in (schema-valid).
        given: dotted keys the caller really provided (``given_keys``); a rule is checked only
            when it reads nothing else. None checks every rule.
    Returns:
        One message per broken rule, each naming its keys and what is allowed.
    """
    have = None if given is None else set(given)
    problems = []
    for keys, rule in _RULES:
        if have is None or all(k in have for k in keys):
            problems.extend(rule(cfg))
    return problems


def given_keys(data: Mapping) -> set[str]:
    """The dotted leaf keys present in ``data`` (a section given whole gives all of its keys)."""
    out = set()
    for k, v in data.items():
        if isinstance(v, Mapping):
            out |= {f"{k}.{sub}" for sub in given_keys(v)}
        else:
            out.add(k)
    return out


def check_warnings(cfg: Mapping) -> list[str]:
    """Config choices that run but are probably not what the user wants (logged, not refused).

    Params:
        cfg: a validated config.
    Returns:
        One message per choice, naming its keys.
    """
    out = []
    n, split = cfg["scans"]["count"], cfg["dataset"]["split"]
    # Whole scans go to the splits (data/positron.py split_scans): with one scan all of it trains;
    # with two, the second goes to test when test has a fraction, else to val.
    if n == 1 or split[2] == 0:
        out.append(
            f"config keys 'scans.count' = {n} and 'dataset.split' = {split} leave no test scan: "
            "the evaluation needs held-out test images and will fail (use 3 or more scans)"
        )
    if split[1] > 0 and (n == 1 or (n == 2 and split[2] > 0)):
        out.append(
            f"config key 'scans.count' = {n}: the dataset split by scan leaves no validation scan "
            "(train, val and test each need one scan: use 3 or more)"
        )
    skipped = [m for m in ("osem_early", "map_rdp") if m in cfg["enhancement"]["methods"]]
    if skipped and cfg["reconstruction"]["mode"] != "3d" and cfg["dataset"]["low_count_fractions"]:
        out.append(
            f"config key 'enhancement.methods' holds {skipped}, which need 'reconstruction.mode' = 3d (per-iteration "
            "snapshots and the prior are in the 3D OSEM): they are left out of this run"
        )
    lo, hi = cfg["digitizer"]["energy_window_kev"]
    if not lo <= 511.0 <= hi:
        out.append(
            f"config key 'digitizer.energy_window_kev' = {[lo, hi]} excludes the 511 keV photopeak: "
            "almost every true coincidence is rejected"
        )
    return out


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
    paths = list(paths)
    for path in paths:
        _merge(cfg, read_file(path))
    given: set[str] | None = None
    if json_text:
        try:
            data = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config-json is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("--config-json must be a JSON object of config sections")
        _merge(cfg, data)
        if not paths:
            # A stage run by Snakemake gets only the keys it reads; the rest were checked at planning.
            given = given_keys(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        key, _, raw = item.partition("=")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_first_line(exc)})") from None
        key = key.strip()
        _set_dotted(cfg, key, value)
        if given is not None:
            given |= {f"{key}.{sub}" for sub in given_keys(value)} if isinstance(value, dict) else {key}
    return validate(cfg, given)


def read_file(path: str | Path) -> dict:
    """One YAML config file as a dict.

    Raises:
        ConfigError: naming the file (and the line of a syntax error) when it cannot be read,
            is not YAML, is empty or does not hold a mapping of keys.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (YAML)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {_first_line(exc)}") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty; give at least one key (see config/README.md)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def _first_line(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return problem or str(exc).splitlines()[0]


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
