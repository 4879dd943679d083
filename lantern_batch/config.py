"""Typed configuration: pydantic models, YAML files and ``--set dotted.key=value`` overrides.

Every job has one config class (a :class:`ConfigModel`). YAML holds values only; the classes
hold types, defaults (the local demo's values) and one docstring per field. Unknown keys fail
with the key's dotted name and the closest valid key; validation errors never echo input values
(profile text may be private).

    cfg = load_config(SynthesizeConfig, "configs/demo_synthesize.yaml", ["vllm.batch_size=8"])
    print(dump_config(cfg))
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lantern_batch.errors import InputError

PATH_COMPONENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A config value that becomes one directory or file name (teacher names, prompt versions, run
and stage names): letters, digits and ``_ . -``, starting with a letter or digit, at most 64
characters. It can never be empty, ``.`` or ``..``, nor hold a ``/``, so it cannot point a job's
writes or reads outside the directory it is joined onto."""


class _ConfigLoader(yaml.SafeLoader):
    """YAML without implicit timestamps: ``ds: 2026-11-24`` stays the string a config expects."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


class ConfigError(InputError):
    """A config file, override or value is invalid (exit code 2)."""


class ConfigModel(BaseModel):
    """Base of every config: unknown keys are errors, values never appear in error messages."""

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        validate_assignment=True,
        use_attribute_docstrings=True,
        protected_namespaces=(),
    )

    #: CLI flag -> dotted config key, e.g. {"--out": "out"}; read by ``lantern_batch.cli``.
    SHORTCUTS: ClassVar[dict[str, str]] = {}


class RayConfig(ConfigModel):
    """How the job connects to Ray. Building never starts Ray; only the job's ``run`` does."""

    address: str | None = None
    """Cluster address (``auto`` under ``ray job submit``); None starts a local Ray."""
    num_cpus: int | None = 8
    """Logical CPUs of a *local* Ray. More than the 2 physical cores here so Ray Data's light
    stages (tokenise, join) do not starve the engine actor of CPU slots. Ignored with an address."""
    object_store_memory: int | None = 1_500_000_000
    """Bytes for a local Ray's object store (small machines: keep it modest). Ignored with an address."""
    include_dashboard: bool = False
    """Start the dashboard with a local Ray."""
    log_to_driver: bool = True
    """Forward worker logs to the driver."""


class InputTables(ConfigModel):
    """Locations of the three input tables (Parquet files or directories, local or ``s3://``)."""

    members: str = "runs/demo/data/members"
    """Members table."""
    jobs: str = "runs/demo/data/jobs"
    """Jobs table."""
    pairs: str = "runs/demo/data/pairs"
    """Candidate member-job pairs."""


class ValidationConfig(ConfigModel):
    """Per-row limits applied when input tables are validated."""

    max_text_chars: int = Field(20_000, gt=0)
    """Longest allowed free-text field (characters); longer rows become error rows."""
    max_list_items: int = Field(500, gt=0)
    """Most elements allowed in ``skills`` / ``required_skills`` / ``experience`` / ``education``."""


T = TypeVar("T", bound=ConfigModel)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside an annotation such as ``Foo | None``, or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _check_keys(model: type[BaseModel], data: Any, prefix: str = "") -> None:
    """Fail on the first unknown key, naming it and the closest valid key at that level."""
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            if model.model_config.get("extra") != "forbid":
                continue
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            valid = ", ".join(sorted(fields))
            raise ConfigError(
                f"unknown config key '{dotted}' in {model.__name__}{hint} (valid keys: {valid})"
            )
        sub = _model_of(fields[key].annotation)
        if sub is not None:
            _check_keys(sub, value, prefix=f"{dotted}.")
        elif get_origin(fields[key].annotation) in (list, tuple) and isinstance(value, list):
            item_model = _model_of(fields[key].annotation)
            for i, item in enumerate(value):
                if item_model is not None:
                    _check_keys(item_model, item, prefix=f"{dotted}.{i}.")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], value); the value is parsed as YAML, so
    ``3`` is an int, ``true`` a bool, ``[a, b]`` a list and ``null`` None."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override key '{key}' is empty or malformed")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override for '{key}' is not valid YAML") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict (in place) and return it."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if isinstance(node, list):
                node = node[int(part)]
                continue
            child = node.get(part)
            if not isinstance(child, (dict, list)):
                child = {}
                node[part] = child
            node = child
        if isinstance(node, list):
            node[int(path[-1])] = value
        else:
            node[path[-1]] = value
    return data


def _format_validation_error(model: type[BaseModel], exc: ValidationError) -> str:
    lines = [f"invalid {model.__name__}:"]
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Build a config from defaults, then an optional YAML file, then dotted overrides.

    Args:
        cls: the config class.
        path: YAML file; None uses the class defaults (the local demo's values).
        overrides: ``dotted.key=value`` strings, applied last, values parsed as YAML.
        base: a dict applied before ``path`` (used by composite configs).

    Raises:
        ConfigError: unreadable file, unknown key (named, with the closest valid key) or an
            invalid value (named by its dotted location, the value itself never echoed).
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    apply_overrides(data, list(overrides or []))
    _check_keys(cls, data)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(cls, exc)) from None


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` merged over ``a`` (nested dicts merged key by key, anything else replaced)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping (dates kept as strings)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = _yaml_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return loaded


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """JSON-compatible dict of a config."""
    return cfg.model_dump(mode="json")


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (what ``--dry-run`` prints and jobs save next to outputs)."""
    return f"# {type(cfg).__name__}\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_hash(cfg: BaseModel) -> str:
    """Stable short hash of a resolved config (recorded in manifests)."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_resolved_config(cfg: BaseModel, out_dir: str, name: str = "resolved_config.yaml") -> str:
    """Write the resolved config next to an output (local or ``s3://``); returns its path."""
    from lantern_batch import io

    target = io.join(out_dir, name)
    io.write_text(target, dump_config(cfg))
    return target


class LockConfig(ConfigModel):
    """One run per output at a time (precompute: per ds; synthesize: per output directory)."""

    ttl_s: float = Field(900, gt=0)
    """Lease of the lock: the running job refreshes it every ttl_s / 3, so a lock not refreshed
    for this long belongs to a dead run and the next run takes it over."""
    wait_s: float = Field(0.0, ge=0)
    """Seconds to wait for a held lock before failing."""
