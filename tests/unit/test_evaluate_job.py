"""``lantern-batch evaluate`` end to end on small hand-built inputs (no Ray).

:func:`make_eval_inputs` writes a miniature demo layout (teacher labels, a published precompute
partition, D_seed, members, jobs and the models' metrics.json files) whose metrics are known by
construction; ``tests/integration/test_report_render.py`` reuses it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.cli import main
from lantern_batch.config import load_config
from lantern_batch.evaluate.config import EvaluateConfig
from lantern_batch.evaluate.job import run
from lantern_batch.schema import FIT_LABELS

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)
DS = "2026-11-24"
SKILLS = ["Python", "SQL", "Kubernetes", "Go", "Java", "Excel", "Tableau", "Spark", "R", "C++"]
PROBS = {"High": (0.8, 0.15, 0.05), "Medium": (0.2, 0.6, 0.2), "Low": (0.05, 0.15, 0.8)}


def _pairs(n_members: int = 30, n_jobs: int = 10):
    for m in range(n_members):
        for j in range(n_jobs):
            if (m + j) % 3 == 0:  # 100 pairs for 30 x 10
                yield f"m{m:03d}", f"j{j:03d}"


def _member_skills(m: int) -> list[str]:
    return [SKILLS[(m + k) % len(SKILLS)] for k in range(3)]


def _job_skills(j: int) -> list[str]:
    return [SKILLS[(2 * j + k) % len(SKILLS)] for k in range(2)]


def make_eval_inputs(root: Path, *, with_explainer: bool = True) -> dict:
    """Write a small demo layout under ``root``; return the facts the tests check.

    Teacher: label by skill overlap (2 -> High, 1 -> Medium, 0 -> Low). Student: the teacher's
    label, except every 5th shared pair is shifted one label down (High -> Medium -> Low -> High).
    Student explanations (every 2nd pair) state the student's label; every 4th claims
    "Kubernetes", which the member may not list.
    """
    members = pa.table({
        "member_id": [f"m{m:03d}" for m in range(30)],
        "current_title": ["Engineer"] * 30,
        "skills": [_member_skills(m) for m in range(30)],
    })
    jobs = pa.table({
        "job_id": [f"j{j:03d}" for j in range(10)],
        "title": ["Data Engineer"] * 10,
        "description": ["A role."] * 10,
        "required_skills": [_job_skills(j) for j in range(10)],
    })
    io.write_table(members, str(root / "data" / "members"))
    io.write_table(jobs, str(root / "data" / "jobs"))
    io.write_table(pa.table({"fit_label": ["High"] * 10 + ["Medium"] * 25 + ["Low"] * 15}),
                   str(root / "data" / "seed"))

    shift = {"High": "Medium", "Medium": "Low", "Low": "High"}
    t_rows, s_rows = [], []
    teacher_labels, student_labels, kubernetes_claims_unsupported = [], [], 0
    for i, (mid, jid) in enumerate(_pairs()):
        m, j = int(mid[1:]), int(jid[1:])
        matched = [s for s in _job_skills(j) if s in _member_skills(m)]
        missing = [s for s in _job_skills(j) if s not in matched]
        label = {2: "High", 1: "Medium", 0: "Low"}[len(matched)]
        t_expl = f"This is a {label} fit."
        if matched:
            t_expl += f" They bring {' and '.join(matched)}"
            t_expl += f" but do not list {' and '.join(missing)}." if missing else "."
        elif missing:
            t_expl += f" None of the required skills ({', '.join(missing)}) appear on the profile."
        t_rows.append({"pair_id": f"{mid}|{jid}", "member_id": mid, "job_id": jid, "teacher": "tiny",
                       "fit_label": label, "p_high": PROBS[label][0], "p_medium": PROBS[label][1],
                       "p_low": PROBS[label][2], "explanation": t_expl})
        s_label = shift[label] if i % 5 == 0 else label
        s_expl = None
        if with_explainer and i % 2 == 0:
            s_expl = f"You are a {s_label} fit for this role."
            if i % 4 == 0:
                s_expl += " You have Kubernetes experience."
                kubernetes_claims_unsupported += "Kubernetes" not in _member_skills(m)
        teacher_labels.append(label)
        student_labels.append(s_label)
        s_rows.append({"member_id": mid, "job_id": jid, "fit_label": s_label,
                       "p_high": PROBS[s_label][0], "p_medium": PROBS[s_label][1], "p_low": PROBS[s_label][2],
                       "explanation": s_expl})
    # 20 scored pairs the teacher never labelled (they count in the student distribution only).
    for k in range(20):
        s_rows.append({"member_id": f"x{k:03d}", "job_id": "j000", "fit_label": "Low",
                       "p_high": 0.05, "p_medium": 0.15, "p_low": 0.8, "explanation": None})

    labels_dir = root / "labels" / "teacher=tiny"
    io.write_table(pa.Table.from_pylist(t_rows), str(labels_dir))
    io.write_text(str(root / "summary.json"), json.dumps({"rows": len(t_rows), "rows_per_s": 12.5,
                                                          "output_tokens_per_s": 210.0}))

    part = root / "scores" / f"ds={DS}"
    scores = pa.Table.from_pylist(s_rows)
    files = [io.write_table(scores.slice(0, 60), str(part), basename="part-r1-00000.parquet"),
             io.write_table(scores.slice(60), str(part), basename="part-r1-00001.parquet")]
    io.publish_partition(str(part), files, {
        "run_id": "r1", "ds": DS,
        "counts": {"rows_in": len(s_rows), "rows_scored": len(s_rows), "rows_reused": 0, "rows_error": 0},
        "timings": {"classifier": 4.0, "explainer": 20.0},
        "rows_per_s": {"classifier": 30.0, "explainer": 2.5},
    })
    io.write_latest(str(root / "scores"), DS)
    # A stray file that the manifest does not list: a reader that follows the contract ignores it.
    io.write_table(scores.slice(0, 5), str(part), basename="part-stray.parquet")

    models = root / "models"
    io.write_text(str(models / "classifier" / "metrics.json"),
                  json.dumps({"accuracy": 0.9, "macro_f1": 0.88, "ece": 0.04, "samples_per_s": 55.0}))
    if with_explainer:
        io.write_text(str(models / "explainer" / "metrics.json"),
                      json.dumps({"rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45,
                                  "base": {"rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15},
                                  "version": "e-3f9a", "note": "free text is not shown",
                                  "examples": [{"student": "You are a High fit because of SQL."}]}))
    io.write_text(str(models / "teacher" / "metrics.json"),
                  json.dumps({"before": {"accuracy": 0.35}, "after": {"accuracy": 0.8}}))
    return {"teacher_labels": teacher_labels, "student_labels": student_labels,
            "kubernetes_unsupported": kubernetes_claims_unsupported, "student_rows": len(s_rows)}


def eval_config(root: Path, **overrides) -> EvaluateConfig:
    base = {
        "inputs": {"members": str(root / "data/members"), "jobs": str(root / "data/jobs"),
                   "pairs": str(root / "data/pairs")},
        "seed": str(root / "data/seed"), "labels": str(root), "scores": str(root),
        "classifier": str(root / "models/classifier"), "explainer": str(root / "models/explainer"),
        "teacher_model": str(root / "models/teacher"), "out": str(root / "report"),
    }
    base.update(overrides)
    return load_config(EvaluateConfig, base=base)


@pytest.fixture
def evaluated(tmp_path):
    facts = make_eval_inputs(tmp_path)
    assert run(eval_config(tmp_path)) == 0
    return tmp_path, facts, json.loads((tmp_path / "report" / "metrics.json").read_text())


def test_agreement_matches_the_constructed_flips(evaluated):
    _, facts, metrics = evaluated
    t, s = facts["teacher_labels"], facts["student_labels"]
    agreement = metrics["agreement"]
    assert agreement["pairs"] == len(t) == 100
    expected_acc = sum(a == b for a, b in zip(t, s, strict=True)) / len(t)
    assert agreement["accuracy"] == pytest.approx(expected_acc) and expected_acc == pytest.approx(0.8)
    confusion = agreement["confusion"]
    for i, a in enumerate(FIT_LABELS):
        for j, b in enumerate(FIT_LABELS):
            assert confusion[i][j] == sum(x == a and y == b for x, y in zip(t, s, strict=True))
    # Student confidence is 0.8 / 0.6 / 0.8 by label; calibration bins hold all 100 pairs.
    assert sum(b["count"] for b in metrics["calibration"]["bins"]) == 100
    assert 0.0 <= metrics["calibration"]["ece"] <= 1.0


def test_distributions_per_stage(evaluated):
    _, facts, metrics = evaluated
    d = metrics["distributions"]
    assert d["seed"]["counts"] == {"High": 10, "Medium": 25, "Low": 15}
    assert d["teacher"]["n"] == 100
    # Only the files the manifest lists are read: the stray file's 5 rows are not counted.
    assert d["student"]["n"] == facts["student_rows"] == 120
    assert d["student"]["counts"]["Low"] == sum(x == "Low" for x in facts["student_labels"]) + 20


def test_explanation_checks(evaluated):
    _, facts, metrics = evaluated
    # Student explanations state the student's label: fully consistent, 50 of 100 explained.
    student = metrics["consistency"]["student"]
    assert student["rate"] == 1.0 and student["judged"] == 50 and student["missing"] == 50
    assert metrics["consistency"]["teacher"]["rate"] == 1.0
    claims = metrics["skill_claims"]["student"]
    assert claims["with_unsupported"] == facts["kubernetes_unsupported"] > 0
    assert claims["rate"] == pytest.approx(facts["kubernetes_unsupported"] / 50)
    # The teacher's explanations only claim the matched skills: never unsupported.
    assert metrics["skill_claims"]["teacher"]["with_unsupported"] == 0
    assert metrics["skill_claims"]["teacher"]["claims"] > 0
    assert metrics["rouge"]["available"] and metrics["rouge"]["n"] == 50
    assert 0.0 < metrics["rouge"]["rougeL"] < 1.0


def test_throughput_and_training_sections(evaluated):
    root, _, metrics = evaluated
    rows = {(r["stage"], r["metric"]): r["value"] for r in metrics["throughput"]["rows"]}
    assert rows[("precompute", "rows_per_s.classifier")] == 30.0
    assert rows[("precompute", "timings.explainer")] == 20.0
    assert rows[("synthesize", "output_tokens_per_s")] == 210.0
    assert rows[("distill classifier", "samples_per_s")] == 55.0
    assert metrics["training"]["teacher_sft"]["after"]["accuracy"] == 0.8
    # Numbers and ids of the models' metrics.json are kept, their free text is not.
    assert metrics["training"]["explainer"] == {"rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45,
                                                "base": {"rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15},
                                                "version": "e-3f9a"}
    assert metrics["manifest"]["counts"]["rows_in"] == 120
    html = (root / "report" / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == 6
    assert "Not available" not in html
    assert (root / "report" / "resolved_config.yaml").is_file()


def test_missing_explainer_says_not_available(tmp_path):
    make_eval_inputs(tmp_path, with_explainer=False)
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["agreement"]["available"]
    for key in ("rouge", "consistency", "skill_claims"):
        assert metrics[key]["available"] is False
        assert metrics[key]["reason"].startswith("the scores carry no explanations")
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Not available: the scores carry no explanations" in html
    assert "Not available: no metrics.json for this model" in html


def test_nothing_at_all_still_renders(tmp_path):
    cfg = eval_config(tmp_path / "empty")
    assert run(cfg) == 0
    metrics = json.loads((tmp_path / "empty" / "report" / "metrics.json").read_text())
    assert not metrics["agreement"]["available"] and metrics["agreement"]["reason"] == "no teacher labels"
    notes = " ".join(metrics["inputs"]["notes"])
    assert "no teacher labels found" in notes and "_LATEST" in notes
    html = (tmp_path / "empty" / "report" / "index.html").read_text()
    assert "data:image/png" not in html and html.count("Not available") >= 5


def test_unpublished_partition_is_not_read(tmp_path):
    make_eval_inputs(tmp_path)
    (tmp_path / "scores" / f"ds={DS}" / io.SUCCESS).unlink()
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["distributions"]["student"] is None
    assert any("not published" in n for n in metrics["inputs"]["notes"])


def test_explanation_text_is_escaped_and_kept_out_of_metrics_json(tmp_path):
    make_eval_inputs(tmp_path)
    path = tmp_path / "labels" / "teacher=tiny"
    table = io.read_table(str(path))
    expl = table.column("explanation").to_pylist()
    expl[0] = "<script>alert(1)</script> This is a High fit."
    table = table.set_column(table.schema.get_field_index("explanation"), "explanation", pa.array(expl))
    for f in path.iterdir():
        f.unlink()
    io.write_table(table, str(path))
    assert run(eval_config(tmp_path, num_examples=200)) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "This is a" not in (tmp_path / "report" / "metrics.json").read_text()


def test_cli_dry_run_and_shortcuts(tmp_path, capsys):
    assert main(["evaluate", "--labels", str(tmp_path), "--scores", str(tmp_path), "--ds", DS,
                 "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"ds: '{DS}'" in out and "# plan" in out and str(tmp_path / "r") in out
