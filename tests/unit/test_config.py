"""Typed configs: YAML + dotted overrides, unknown keys named with the closest valid key."""

import pytest
from pydantic import Field

from lantern_batch.config import (
    ConfigError,
    ConfigModel,
    InputTables,
    RayConfig,
    apply_overrides,
    config_hash,
    dump_config,
    load_config,
    parse_override,
)


class _Engine(ConfigModel):
    batch_size: int = 8
    """rows per batch"""
    engine_kwargs: dict[str, object] = Field(default_factory=dict)
    """passed through to the engine"""


class _Job(ConfigModel):
    out: str = "runs/x"
    """output"""
    inputs: InputTables = InputTables()
    """inputs"""
    engine: _Engine = _Engine()
    """engine"""
    ray: RayConfig = RayConfig()
    """ray"""
    temperature: float = 1.0
    """T"""
    teachers: list[_Engine] = Field(default_factory=list)
    """several"""


def test_defaults_without_file():
    cfg = load_config(_Job)
    assert cfg.engine.batch_size == 8 and cfg.out == "runs/x"


def test_yaml_then_overrides_with_type_coercion(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("out: a\nengine:\n  batch_size: 4\n")
    cfg = load_config(_Job, f, ["engine.batch_size=16", "temperature=0.5", "engine.engine_kwargs.max_model_len=2048"])
    assert cfg.out == "a"
    assert cfg.engine.batch_size == 16 and isinstance(cfg.engine.batch_size, int)
    assert cfg.temperature == 0.5
    assert cfg.engine.engine_kwargs == {"max_model_len": 2048}


def test_unknown_key_names_key_and_closest(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_Job, None, ["engine.batch_sise=3"])
    assert "engine.batch_sise" in str(e.value) and "engine.batch_size" in str(e.value)
    f = tmp_path / "c.yaml"
    f.write_text("inputs:\n  member: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(_Job, f)
    assert "'inputs.member'" in str(e.value) and "inputs.members" in str(e.value)


def test_unknown_key_inside_list_items():
    with pytest.raises(ConfigError) as e:
        load_config(_Job, None, ["teachers=[{batch_size: 2}, {batchsize: 3}]"])
    assert "teachers.1.batchsize" in str(e.value)


def test_invalid_value_names_location_without_echoing_it():
    with pytest.raises(ConfigError) as e:
        load_config(_Job, None, ["engine.batch_size=SECRET-VALUE"])
    msg = str(e.value)
    assert "engine.batch_size" in msg and "SECRET-VALUE" not in msg


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError):
        parse_override("no_equals_sign")
    with pytest.raises(ConfigError):
        load_config(_Job, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError):
        load_config(_Job, tmp_path / "list.yaml")


def test_apply_overrides_creates_nested_and_parses_yaml():
    d = apply_overrides({}, ["a.b.c=[1, 2]", "x=null", "y=true"])
    assert d == {"a": {"b": {"c": [1, 2]}}, "x": None, "y": True}


def test_dump_roundtrip_and_hash_stability(tmp_path):
    cfg = load_config(_Job, None, ["engine.batch_size=3"])
    text = dump_config(cfg)
    f = tmp_path / "resolved.yaml"
    f.write_text(text)
    again = load_config(_Job, f)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(_Job, None, ["engine.batch_size=4"])) != config_hash(cfg)


def test_dates_stay_strings_in_overrides_and_files(tmp_path):
    assert parse_override("ds=2026-11-24") == (["ds"], "2026-11-24")
    f = tmp_path / "c.yaml"
    f.write_text("out: 2026-11-24\n")
    assert load_config(_Job, f).out == "2026-11-24"


_PATH_COMPONENT_FIELDS = [
    ("lantern_batch.teacher.config:SynthesizeConfig", "teachers: [{name: t, prompt_version: '{v}'}]",
     "teachers.0.prompt_version"),
    ("lantern_batch.distill.config:TeacherSFTConfig", "prompt_version: '{v}'", "prompt_version"),
    ("lantern_batch.distill.config:ClassifierConfig", "train: {run_name: '{v}'}", "train.run_name"),
    ("lantern_batch.distill.config:ExplainerConfig", "data: {teacher: '{v}'}", "data.teacher"),
    ("lantern_batch.distill.config:ChainConfig", "stages: [{name: '{v}'}]", "stages.0.name"),
    ("lantern_batch.evaluate.config:EvaluateConfig", "teacher: '{v}'", "teacher"),
    # Prompt versions that choose which labels (and which prompt) a job reads or records.
    ("lantern_batch.distill.config:ClassifierConfig", "data: {prompt_version: '{v}'}", "data.prompt_version"),
    ("lantern_batch.distill.config:ExplainerConfig", "prompt_version: '{v}'", "prompt_version"),
    ("lantern_batch.evaluate.config:EvaluateConfig", "teacher_prompt_version: '{v}'", "teacher_prompt_version"),
]


def _config_class(spec: str) -> type[ConfigModel]:
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


_FIELD_IDS = [key for _, _, key in _PATH_COMPONENT_FIELDS]


@pytest.mark.parametrize("value", ["../x", "..", "a/b", "/abs", "", ".hidden", "x" * 65],
                         ids=["parent", "dotdot", "slash", "absolute", "empty", "dotfile", "too_long"])
@pytest.mark.parametrize("spec, yaml_text, key", _PATH_COMPONENT_FIELDS, ids=_FIELD_IDS)
def test_path_component_values_are_validated(spec, yaml_text, key, value, tmp_path):
    """Values joined into paths (prompt versions, run, stage and teacher names) are one plain
    directory name; anything else is an error naming the key, never echoing the value."""
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text.replace("{v}", value) + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(_config_class(spec), f)
    assert f"{key}:" in str(e.value)


@pytest.mark.parametrize("spec, yaml_text, key", _PATH_COMPONENT_FIELDS, ids=_FIELD_IDS)
def test_plain_path_component_values_load(spec, yaml_text, key, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text.replace("{v}", "engagement-v1.2_b") + "\n")
    cfg = load_config(_config_class(spec), f)
    node = cfg
    for part in key.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    assert node == "engagement-v1.2_b"


def test_prompt_version_override_is_validated():
    from lantern_batch.teacher.config import SynthesizeConfig

    with pytest.raises(ConfigError, match=r"teachers\.0\.prompt_version"):
        load_config(SynthesizeConfig, None, ["teachers=[{name: t, prompt_version: '../x'}]"])
