"""Synthesize and curate configs: the YAML files load, teacher names are checked, plans print."""

import pytest

from lantern_batch.config import ConfigError, load_config
from lantern_batch.teacher.config import CurateExportConfig, CurateImportConfig, SynthesizeConfig


def test_demo_and_prod_configs_load():
    demo = load_config(SynthesizeConfig, "configs/demo_synthesize.yaml")
    assert demo.teachers[0].model == "bundled:smollm2" and demo.vllm.engine_kwargs["kv_cache_memory_bytes"] <= 2**30
    assert demo.prompt.max_explanation_chars <= 300 and demo.vllm.sampling_params["max_tokens"] <= 256
    prod = load_config(SynthesizeConfig, "configs/prod_synthesize.yaml")
    assert prod.out.startswith("s3://") and prod.vllm.num_gpus >= 1 and len(prod.teachers) >= 2
    assert any("fuse" in step for step in prod.plan())
    load_config(CurateExportConfig, "configs/demo_curate_export.yaml")
    load_config(CurateImportConfig, "configs/demo_curate_import.yaml")


def test_teacher_names_are_unique_and_safe():
    with pytest.raises(ConfigError, match="unique"):
        load_config(SynthesizeConfig, None, ["teachers=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="teachers.0.name"):
        load_config(SynthesizeConfig, None, ["teachers=[{name: '../x'}]"])
    with pytest.raises(ConfigError, match="kind"):
        load_config(SynthesizeConfig, None, ["teachers=[{name: a, kind: magic}]"])


def test_overrides_pass_engine_settings_through():
    cfg = load_config(SynthesizeConfig, "configs/demo_synthesize.yaml",
                      ["vllm.engine_kwargs.swap_space=0", "vllm.batch_size=8", "sample_fraction=0.5"])
    assert cfg.vllm.engine_kwargs["swap_space"] == 0 and cfg.vllm.batch_size == 8 and cfg.sample_fraction == 0.5


def test_retries_change_the_teacher_version_only_when_set():
    """``vllm.retries`` changes which outputs become labels, so it is part of the teacher's
    version; the default (1, the behaviour before the field) keeps earlier runs' version."""
    from lantern_batch.teacher.job import output_settings

    cfg = SynthesizeConfig()
    teacher = cfg.teachers[0]
    assert "retries" not in output_settings(cfg, teacher)
    three = cfg.model_copy(update={"vllm": cfg.vllm.model_copy(update={"retries": 3})})
    assert output_settings(three, teacher)["retries"] == 3
    with pytest.raises(ConfigError, match="retries"):
        load_config(SynthesizeConfig, None, ["vllm.retries=-1"])
