"""The demo's wiring: one root, T2 + the engagement teacher fused, the explainer on T2's valid
explanations plus D_seed's (D_seed alone when T2 kept none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lantern_batch.config import load_config
from lantern_batch.demo import DemoConfig, _explainer_inputs, wire
from lantern_batch.errors import QualityGateError
from lantern_batch.io import write_table
from lantern_batch.schema import TEACHER_LABELS_SCHEMA

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo_pipeline.yaml"


def test_demo_wires_two_teachers_and_the_explainer_data(tmp_path):
    cfg = wire(load_config(DemoConfig, str(CONFIG), [f"out={tmp_path}"]))
    assert [t.kind for t in cfg.synthesize.teachers] == ["vllm", "engagement"]
    assert cfg.synthesize.teachers[0].model == str(tmp_path / "models" / "teacher")
    assert cfg.explainer.data.teacher == "smollm2"
    # The explainer trains on T2's labels of the prompt version synthesis ran (never another's);
    # the classifier reads the fused table, which has none.
    assert cfg.explainer.data.prompt_version == cfg.synthesize.teachers[0].prompt_version == "v4"
    assert cfg.classifier.data.prompt_version is None
    assert cfg.explainer.data.seed == str(tmp_path / "data" / "seed")
    assert cfg.classifier.data.seed == str(tmp_path / "data" / "seed")


def test_a_rerun_of_later_stages_keeps_the_demos_own_teacher(tmp_path):
    later = [f"out={tmp_path}", "stages=[synthesize, explainer]"]
    cfg = wire(load_config(DemoConfig, str(CONFIG), later))
    # No teacher exported yet: synthesis and the explainer start from the configured base model.
    assert cfg.synthesize.teachers[0].model == cfg.explainer.student.source == cfg.teacher_sft.model
    (tmp_path / "models" / "teacher").mkdir(parents=True)
    metrics = tmp_path / "models" / "teacher" / "metrics.json"
    metrics.write_text(json.dumps({"label_agreement_after": {"macro_f1": 0.71}}))
    cfg = wire(load_config(DemoConfig, str(CONFIG), later))
    assert cfg.synthesize.teachers[0].model == cfg.explainer.student.source == str(tmp_path / "models" / "teacher")
    # A teacher that missed the demo's gate (exported for inspection, the run exited 3) is never
    # picked up by a rerun.
    metrics.write_text(json.dumps({"label_agreement_after": {"macro_f1": 0.21, "confusion": [[0, 39, 0]] * 3}}))
    with pytest.raises(QualityGateError, match=r"teacher T2 at .*models/teacher held-out macro_f1 0\.210 is below"):
        wire(load_config(DemoConfig, str(CONFIG), later))


def test_explainer_falls_back_to_seed_when_the_teacher_kept_nothing(tmp_path, capsys):
    cfg = wire(load_config(DemoConfig, str(CONFIG), [f"out={tmp_path}"]))
    assert _explainer_inputs(cfg.explainer).data.teacher_labels is None
    assert "kept no valid explanation" in capsys.readouterr().out
    write_table(TEACHER_LABELS_SCHEMA.empty_table(), str(tmp_path / "synth" / "labels" / "teacher=smollm2"),
                basename="part-0.parquet")
    assert _explainer_inputs(cfg.explainer).data.teacher_labels == str(tmp_path / "synth")


def test_one_teacher_pins_both_students_to_its_prompt_version(tmp_path):
    cfg = load_config(DemoConfig, str(CONFIG), [f"out={tmp_path}"])
    cfg.synthesize.teachers = cfg.synthesize.teachers[:1]
    cfg = wire(cfg)
    assert cfg.classifier.data.prompt_version == cfg.explainer.data.prompt_version == "v4"
    assert cfg.evaluate.teacher_prompt_version == "v4"
