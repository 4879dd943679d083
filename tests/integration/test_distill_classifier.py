"""Classifier distillation on a local Ray with the real MiniLM: it learns the policy's labels
(held-out strong matches rank above poor ones), bad teacher-label rows are excluded and counted,
and the export loads through lantern_batch.classifier for precompute."""

import json

import numpy as np
import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.config import load_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def synth_dir(tiny_world, tmp_path_factory):
    """Policy teacher labels for the tiny world's 400 pairs, plus 6 bad rows."""
    from lantern_batch.distill.policy_teacher import policy_teacher_labels

    members, jobs = io.read_table(str(tiny_world / "members")), io.read_table(str(tiny_world / "jobs"))
    table = policy_teacher_labels(members, jobs, io.read_table(str(tiny_world / "pairs")))
    rows = table.slice(0, 6).to_pylist()
    rows[0]["fit_label"] = rows[1]["fit_label"] = "Great"  # invalid label
    rows[2]["p_high"], rows[3]["p_low"] = 0.9, None  # don't sum to 1 / missing
    rows[4]["member_id"] = "m-nobody"  # no such member
    rows[5]["p_medium"] = float("nan")
    out = tmp_path_factory.mktemp("synth")
    io.write_table(table, str(out / "labels" / "teacher=policy"), basename="part-0.parquet")
    io.write_table(pa.Table.from_pylist(rows, schema=table.schema), str(out / "labels" / "teacher=policy"),
                   basename="part-1.parquet")
    return out


def test_classifier_learns_policy_labels_and_exports(ray_local, tiny_world, synth_dir, tmp_path):
    from lantern_batch.classifier import load_classifier, predict_proba
    from lantern_batch.distill.config import ClassifierConfig
    from lantern_batch.distill.data import read_examples
    from lantern_batch.distill.job import run_classifier

    out = tmp_path / "classifier"
    cfg = load_config(ClassifierConfig, None, [
        f"out={out}", f"work_dir={tmp_path / 'work'}", f"data.teacher_labels={synth_dir}",
        f"data.seed={tiny_world / 'seed'}", "data.holdout_fraction=0.2",
        "model.max_length=96", "model.text_max_chars=450",
        "train.epochs=1.5", "train.batch_size=16", "train.lr=2e-4", f"train.storage_path={tmp_path / 'train'}",
        "train.checkpoint_every_steps=1000",
    ], base={"inputs": {k: str(tiny_world / k) for k in ("members", "jobs", "pairs")}})
    assert run_classifier(cfg) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    counts = metrics["data"]["counts"]
    # Every bad row is reported and excluded, by reason; nothing vanishes.
    assert counts["excluded:teacher:invalid_label:fit_label"] == 2
    assert counts["excluded:teacher:probabilities_do_not_sum_to_1"] == 1
    assert counts["excluded:teacher:bad_probabilities"] == 2
    assert counts["excluded:teacher:unknown_member"] == 1
    assert counts["rows:teacher"] == 406 and counts["rows:seed"] == 200
    errors = io.read_table(str(tmp_path / "work" / "errors"))
    assert errors.num_rows == counts["excluded"] == 6
    assert set(errors.column("table").to_pylist()) == {"teacher_labels"}
    assert metrics["data"]["num_train"] + metrics["data"]["num_heldout"] == 600

    # It learned: held-out strong matches rank above poor ones, and accuracy beats the prior.
    assert metrics["ranking_auc_high_vs_low"] > 0.85
    # Majority class ~45%, chance 33%; the quality bench trains on thousands of rows for >= 0.85.
    assert metrics["accuracy"] > 0.55 and metrics["macro_f1"] > 0.45
    assert 0.0 <= metrics["ece"] <= 1.0 and len(metrics["confusion"]) == 3
    assert metrics["calibration_temperature"] > 0

    model, tokenizer, meta = load_classifier(out)
    assert meta["labels"] == ["High", "Medium", "Low"] and meta["max_length"] == 96
    assert meta["training_data_fingerprint"] == metrics["data"]["fingerprint"]
    assert meta["calibration_temperature"] == pytest.approx(metrics["calibration_temperature"])
    held = read_examples(str(tmp_path / "work" / "examples"), heldout=True)
    probs = predict_proba(model, tokenizer, held.column("text").to_pylist(), max_length=meta["max_length"],
                          temperature=meta["calibration_temperature"])
    labels = np.asarray(held.column("label").to_pylist())
    strong, poor = probs[labels == 0, 0].mean(), probs[labels == 2, 0].mean()
    assert strong > poor + 0.2, (strong, poor)
