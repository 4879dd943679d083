"""Distill configs: per-job defaults survive partial YAML, chains wire each export into the next
stage, the light module imports no heavy library, the trainer's step plan and DeepSpeed config."""

import subprocess
import sys

import pytest

from lantern_batch.config import ConfigError, load_config
from lantern_batch.distill.config import (
    ChainConfig,
    ClassifierConfig,
    DeepSpeedSettings,
    ExplainerConfig,
    TeacherSFTConfig,
    TrainSettings,
)


def test_config_module_is_light():
    code = ("import sys, lantern_batch.distill.config; "
            "print(sorted(m for m in ('torch', 'ray', 'transformers', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_job_defaults_survive_a_partial_section(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {max_steps: 3}\ndata: {max_examples: 10}\n")
    cls = load_config(ClassifierConfig, p)
    assert cls.train.lr == 1e-4 and cls.train.batch_size == 32 and cls.train.max_steps == 3
    exp = load_config(ExplainerConfig, p)
    assert exp.train.lr == 2e-4 and exp.data.seed is None  # the explainer's own defaults
    sft = load_config(TeacherSFTConfig, p)
    assert sft.data.teacher_labels is None and sft.data.holdout_fraction == 0.2
    assert sft.prompt.member_tokens == 380  # synthesis's budgets


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="kd.divergnce"):
        load_config(ExplainerConfig, None, ["kd.divergnce=js"])
    with pytest.raises(ConfigError, match="kd.divergence"):
        load_config(ExplainerConfig, None, ["kd.divergence=kl"])
    with pytest.raises(ConfigError, match="data.seed"):
        load_config(TeacherSFTConfig, None, ["data.seed=null"])


def test_chain_wires_each_export_into_the_next_stage():
    cfg = load_config(ChainConfig, None, base={
        "out": "/m/chain", "first_teacher": "/m/teacher",
        "base": {"student": {"source": "/m/teacher", "keep_every": 2}, "train": {"epochs": 2}},
        "stages": [{"name": "a"}, {"name": "b", "set": ["student.keep_every=3"]}, {"name": "c"}],
    })
    a, b, c = (cfg.stage_config(i) for i in range(3))
    assert (a.out, a.student.source, a.kd.teacher_model) == ("/m/chain/a", "/m/teacher", "/m/teacher")
    assert (b.out, b.student.source, b.kd.teacher_model, b.student.keep_every) == ("/m/chain/b", "/m/chain/a", "/m/chain/a", 3)
    assert (c.student.source, c.kd.teacher_model, c.train.epochs) == ("/m/chain/b", "/m/chain/b", 2)
    assert cfg.base["student"]["source"] == "/m/teacher"  # building stages never mutates the base
    assert len(cfg.plan()) == 3
    with pytest.raises(ConfigError, match="unique"):
        load_config(ChainConfig, None, base={"stages": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="stdent"):
        load_config(ChainConfig, None, base={"stages": [{"name": "a", "set": ["stdent.keep_every=2"]}]})


def test_steps_plan_and_deepspeed_config():
    from lantern_batch.distill.trainer import WorkerContext, deepspeed_config, steps_plan

    train = TrainSettings(batch_size=8, grad_accum=2, epochs=1.5)
    plan = steps_plan(1000, train, num_workers=2)
    assert plan == {"rows_per_worker": 500, "micro_per_epoch": 63, "steps_per_epoch": 31, "total_steps": 47}
    assert steps_plan(1000, TrainSettings(batch_size=8, max_steps=5), 1)["total_steps"] == 5
    ds = DeepSpeedSettings(enabled=True, zero_stage=3, offload_optimizer=True, config={"zero_optimization": {"reduce_bucket_size": 5}})
    conf = deepspeed_config(train, ds, WorkerContext(rank=0, world_size=2, device="cpu", use_gpu=False))
    assert conf["train_batch_size"] == 8 * 2 * 2 and conf["gradient_accumulation_steps"] == 2
    assert conf["zero_optimization"]["stage"] == 3 and conf["zero_optimization"]["reduce_bucket_size"] == 5
    assert conf["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert conf["bf16"]["enabled"] is False  # CPU: autocast in the loop instead


def test_dry_run_plans(capsys):
    from lantern_batch.cli import main

    for stage in ("classifier", "explainer", "teacher-sft", "chain"):
        assert main(["distill", stage, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "# plan" in out
