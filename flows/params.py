"""params.yaml: load, validate, flatten, profiles.

The schema is **derived from `profiles/tiny.yaml`** (the default profile, also copied to params.yaml): every key it
holds is a known key, and a value must have the type of tiny's value (int is accepted where a float is expected; a
`null` default accepts any value; a non-empty list default fixes its elements' type; an empty dict default is a
free-form mapping). Adding a key = adding it to `profiles/tiny.yaml`, nothing else. Other profiles
(`profiles/smoke.yaml`, `profiles/paper.yaml`) are *overrides* deep-merged onto tiny, so they only list what differs;
`sana15 params use <profile>` writes the merged, validated result to params.yaml (comments of tiny.yaml kept).

`validate` raises ValueError naming the dotted key (unknown key, wrong type, missing key, inconsistent stage lists)
and never touches compute; every stage runs it on the whole file before doing anything (flows/stage_runner.py).
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from sana_core.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
PROFILES_DIR = ROOT / "profiles"
DEFAULT_PROFILE = "tiny"
PARAMS_FILE = "params.yaml"

# stages whose output folder `models/<name>` is a model; foreach stages give `models/<stage>_<item>`
MODEL_STAGES = ("pretrain_base", "grow", "pretrain_grown", "sft")
PER_TARGET_STAGES = ("prune", "finetune", "scratch")


# --------------------------------------------------------------------------------------------------- YAML I/O
def _yaml():
    """ruamel round-trip YAML (YAML 1.2 like DVC: `1e-4` is a float; comments survive a rewrite)."""
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _plain(obj: Any) -> Any:
    """ruamel CommentedMap/Seq/ScalarFloat → plain dict/list/float/int/str/bool/None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    return obj


def read_yaml(path: str | Path, roundtrip: bool = False) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such params file")
    try:
        data = _yaml().load(path.read_text())
    except Exception as e:  # ruamel's errors carry line/column
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data if roundtrip else _plain(data)


def write_yaml_atomic(data: Any, path: str | Path, header: str = "") -> Path:
    path = Path(path)
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return write_text_atomic(path, header + buf.getvalue())


# ----------------------------------------------------------------------------------------------------- schema
def default_params() -> dict:
    """The default profile (tiny) — also the schema."""
    return read_yaml(PROFILES_DIR / f"{DEFAULT_PROFILE}.yaml")


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _type_ok(value: Any, default: Any) -> bool:
    if default is None:  # null default: unconstrained here (the consuming library validates it)
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _check(value: Any, default: Any, key: str) -> None:
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ValueError(f"params: {key or '<top>'}: expected a mapping, got {_tname(value)} {value!r}")
        if not default:  # free-form mapping
            return
        unknown = [k for k in value if k not in default]
        if unknown:
            k = f"{key}.{unknown[0]}" if key else unknown[0]
            raise ValueError(f"params: unknown key {k!r} (known under {key or 'top level'}: {sorted(default)}); "
                             f"new keys go into profiles/{DEFAULT_PROFILE}.yaml first")
        missing = [k for k in default if k not in value]
        if missing:
            k = f"{key}.{missing[0]}" if key else missing[0]
            raise ValueError(f"params: missing key {k!r} (run `sana15 params use <profile>` to regenerate params.yaml)")
        for k, v in value.items():
            _check(v, default[k], f"{key}.{k}" if key else k)
        return
    if not _type_ok(value, default):
        hint = " (YAML needs a number; write e.g. 1.0e-4)" if isinstance(default, float) and isinstance(value, str) else ""
        raise ValueError(f"params: {key}: expected {_tname(default)}, got {_tname(value)} {value!r}{hint}")
    if isinstance(default, list) and default:
        proto = default[0]
        for i, item in enumerate(value):
            if isinstance(proto, (dict, list)):
                _check(item, proto, f"{key}[{i}]")
            elif not _type_ok(item, proto):
                raise ValueError(f"params: {key}[{i}]: expected {_tname(proto)}, got {_tname(item)} {item!r}")


def variant_name(stage: str, item=None) -> str:
    """The model-variant name (= folder under models/) of a stage run: `sft`, `prune_8`."""
    return stage if item is None else f"{stage}_{item}"


def model_variants(params: dict) -> list[str]:
    """Names of every model folder the recipe produces (= valid `geneval.variants`)."""
    targets = params.get("prune", {}).get("targets", [])
    return list(MODEL_STAGES) + [variant_name(s, t) for s in PER_TARGET_STAGES for t in targets]


def _check_consistency(params: dict) -> None:
    """Cross-section rules that a type check cannot express (all cheap, no compute)."""
    targets = params["prune"]["targets"]
    if len(set(targets)) != len(targets):
        raise ValueError(f"params: prune.targets: duplicate depths in {targets}")
    grown = params["grow"]["target_depth"]
    bad = [t for t in targets if not 0 < t < grown]
    if bad:
        raise ValueError(f"params: prune.targets: depths {bad} must be in (0, grow.target_depth={grown})")
    # the growth layout (block_replication needs a multiple of the base depth, …): checked here, not after
    # pretrain_base has trained for minutes (the first growth ablation found it that way)
    from sana_core.growth import growth_args, growth_layout
    from sana_core.model import resolve_config
    model_cfg = {k: v for k, v in params["model"].items() if k not in ("init", "seed")}
    try:
        growth_layout(resolve_config(model_cfg)["num_layers"], **growth_args(params["grow"]))
    except ValueError as e:
        raise ValueError(f"params: {e}") from None
    if params["importance"]["source"] not in MODEL_STAGES:
        raise ValueError(f"params: importance.source: {params['importance']['source']!r} not one of {list(MODEL_STAGES)}")
    known = model_variants(params)
    for i, v in enumerate(params["geneval"]["variants"]):
        if v not in known:
            raise ValueError(f"params: geneval.variants[{i}]: {v!r} is not a model of this recipe; choose from {known}")
    if len(set(params["geneval"]["best_of"])) != len(params["geneval"]["best_of"]):
        raise ValueError("params: geneval.best_of: duplicate N")


def validate(params: dict, schema: dict | None = None) -> dict:
    """Check `params` against the schema (tiny profile) → `params` unchanged; ValueError naming the dotted key."""
    schema = default_params() if schema is None else schema
    _check(params, schema, "")
    _check_consistency(params)
    return params


# ----------------------------------------------------------------------------------------------------- helpers
def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-4}} → {'train.lr': 1e-4}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def params_hash(section: Any) -> str:
    """Short content hash of a params section (canonical JSON)."""
    blob = json.dumps(section, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load(root: str | Path = ".", validate_: bool = True) -> dict:
    """Read `<root>/params.yaml` (plain dict) and validate it."""
    p = read_yaml(Path(root) / PARAMS_FILE)
    return validate(p) if validate_ else p


def deep_merge(base: Any, over: Any, key: str = "") -> Any:
    """Overlay `over` onto `base` in place (dicts merge; lists and scalars replace). Unknown keys → ValueError."""
    if not isinstance(over, dict):
        return over
    if not isinstance(base, dict):
        raise ValueError(f"params: {key}: expected {_tname(base)}, got a mapping")
    for k, v in over.items():
        sub = f"{key}.{k}" if key else k
        if base and k not in base:
            raise ValueError(f"params: unknown key {sub!r} in profile (known: {sorted(base)})")
        if isinstance(v, dict) and isinstance(base.get(k), dict) and base.get(k):
            deep_merge(base[k], v, sub)
        else:
            base[k] = v
    return base


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str, roundtrip: bool = False) -> Any:
    """Tiny + `profiles/<name>.yaml` overrides, validated. `roundtrip=True` keeps tiny's comments (for writing)."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such profile (available: {available_profiles()})")
    base = read_yaml(PROFILES_DIR / f"{DEFAULT_PROFILE}.yaml", roundtrip=True)
    schema = _plain(base)
    if name != DEFAULT_PROFILE:
        over = read_yaml(path, roundtrip=True)
        try:
            deep_merge(base, over)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    try:
        validate(_plain(base), schema)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return base if roundtrip else _plain(base)


def use_profile(name: str, root: str | Path = ".") -> Path:
    """Write the merged profile to `<root>/params.yaml` (atomically, after validation)."""
    data = load_profile(name, roundtrip=True)  # validates
    out = Path(root) / PARAMS_FILE
    if name == DEFAULT_PROFILE:  # byte copy
        return write_text_atomic(out, (PROFILES_DIR / f"{DEFAULT_PROFILE}.yaml").read_text())
    header = f"# generated by `sana15 params use {name}` = profiles/{DEFAULT_PROFILE}.yaml + profiles/{name}.yaml overrides\n"
    return write_yaml_atomic(data, out, header=header)


def stage_section(params: dict, stage: str) -> dict:
    """The params section named after a DVC stage (`prune@8` → `prune`)."""
    base = stage.split("@", 1)[0]
    if base not in params:
        raise KeyError(f"params: no section {base!r} for stage {stage!r} (sections: {sorted(params)})")
    return params[base]
