"""``lantern-batch evaluate`` end to end on small hand-built inputs (no Ray).

:func:`make_eval_inputs` writes a miniature demo layout (teacher labels, a published precompute
partition, D_seed, members, jobs and the models' metrics.json files) whose metrics are known by
construction; ``tests/integration/test_report_render.py`` reuses it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from html import escape as html_escape
from pathlib import Path

import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.cli import main
from lantern_batch.config import load_config, write_resolved_config
from lantern_batch.distill.config import ClassifierConfig, ExplainerConfig
from lantern_batch.distill.data import heldout_mask
from lantern_batch.evaluate.config import EvaluateConfig
from lantern_batch.evaluate.job import run
from lantern_batch.policy import score_pair
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


HOLDOUT = 0.5
"""Held-out share the fixture's classifier and explainer exports record (half the pairs)."""
STUDENT_KINDS = ("good", "ungrounded", "degenerate_all", "degenerate_one")


def fit_text(label: str, matched: list[str], missing: list[str]) -> str:
    """A valid explanation of a pair labelled ``label`` (states the label, names only the job's skills)."""
    text = f"This is a {label} fit."
    if matched and missing:
        return text + f" They bring {' and '.join(matched)} but do not list {' and '.join(missing)}."
    if matched:
        return text + f" They bring {' and '.join(matched)}, which the role requires."
    return text + f" None of the required skills ({', '.join(missing)}) appear on the profile."


def _student_text(pair: dict) -> str | None:
    """The default student explanations: every 2nd pair explained, by kind in turn (valid; an
    unlisted skill; "High, Medium, Low"; "Medium"); every 7th other pair selected but failed ("")."""
    i = pair["index"]
    if i % 2:
        return "" if i % 7 == 0 else None
    kind = STUDENT_KINDS[(i // 2) % len(STUDENT_KINDS)]
    pair["student_kind"] = kind
    good = fit_text(pair["student_label"], pair["matched"], pair["missing"])
    return {"good": good, "ungrounded": good + " You also have Terraform experience.",
            "degenerate_all": "High, Medium, Low", "degenerate_one": "Medium"}[kind]


SFT_AGREEMENT = {"before": {"n": 40, "accuracy": 0.35, "macro_f1": 0.3, "ece": 0.21,
                             "confusion": [[4, 5, 1], [6, 8, 4], [4, 6, 2]]},
                  "after": {"n": 40, "accuracy": 0.8, "macro_f1": 0.78, "ece": 0.05,
                            "confusion": [[9, 1, 0], [2, 14, 2], [1, 2, 9]]}}
"""What the fixture's teacher export records (the keys distill teacher-sft's ``finalize`` writes)."""
CLASSIFIER_ECE = {"before": 0.12, "after": 0.04}
CLASSIFIER_SEED = {"n": 126, "accuracy": 0.76, "macro_f1": 0.74, "ece": 0.07, "confusion": [[32, 9, 0], [16, 18, 3], [0, 2, 46]]}
"""The classifier export's ``seed`` block: its held-out D_seed pairs (policy labels)."""
CLASSIFIER_SEED_ECE_BEFORE = 0.09
SHIFT = {"High": "Medium", "Medium": "Low", "Low": "High"}


def make_eval_inputs(root: Path, *, with_explainer: bool = True, holdout_fraction: float | None = HOLDOUT,
                     student_text: Callable[[dict], str | None] | None = None,
                     teacher_label: Callable[[dict], str] | None = None,
                     student_label: Callable[[dict], str] | None = None,
                     with_teacher_metrics: bool = True) -> dict:
    """Write a small demo layout under ``root``; return the facts the tests check.

    Teacher: label by skill overlap (2 -> High, 1 -> Medium, 0 -> Low), with a valid
    explanation; in this world that is also the fit policy's label (``pair["policy_label"]``,
    :func:`lantern_batch.policy.score_pair`). Student: the teacher's label, except every 5th
    shared pair is shifted one label down (High -> Medium -> Low -> High). ``teacher_label(pair)``
    and ``student_label(pair)`` override those labels (the pair holds ``index``,
    ``policy_label`` and, for the student, ``teacher_label``). ``student_text(pair)`` gives the
    student explanation of each pair (None: not selected for one; "": selected, the explainer
    failed); the default is :func:`_student_text`. The classifier and explainer exports record
    ``holdout_fraction`` in their resolved_config.yaml (None: they record no split); the teacher
    export's metrics.json is left out with ``with_teacher_metrics=False``.
    """
    student_text = student_text or _student_text
    members = pa.table({
        "member_id": [f"m{m:03d}" for m in range(30)],
        "current_title": ["Engineer"] * 30,
        "seniority": ["mid"] * 30,
        "years_experience": [4.0] * 30,
        "location": ["Seattle, WA"] * 30,
        "skills": [_member_skills(m) for m in range(30)],
    })
    jobs = pa.table({
        "job_id": [f"j{j:03d}" for j in range(10)],
        "title": ["Data Engineer"] * 10,
        "description": ["A role."] * 10,
        "seniority": ["mid"] * 10,
        "location": ["Seattle, WA"] * 10,
        "required_skills": [_job_skills(j) for j in range(10)],
    })
    io.write_table(members, str(root / "data" / "members"))
    io.write_table(jobs, str(root / "data" / "jobs"))
    io.write_table(pa.table({"fit_label": ["High"] * 10 + ["Medium"] * 25 + ["Low"] * 15}),
                   str(root / "data" / "seed"))

    member_rows = {r["member_id"]: r for r in members.to_pylist()}
    job_rows = {r["job_id"]: r for r in jobs.to_pylist()}
    keys = list(_pairs())
    held = heldout_mask([k[0] for k in keys], [k[1] for k in keys], holdout_fraction or HOLDOUT, "lantern")
    t_rows, s_rows, pairs = [], [], []
    for i, (mid, jid) in enumerate(keys):
        m, j = int(mid[1:]), int(jid[1:])
        matched = [s for s in _job_skills(j) if s in _member_skills(m)]
        missing = [s for s in _job_skills(j) if s not in matched]
        policy = score_pair(member_rows[mid], job_rows[jid]).fit_label
        label = {2: "High", 1: "Medium", 0: "Low"}[len(matched)]
        if teacher_label is not None:
            label = teacher_label({"index": i, "policy_label": policy})
        t_expl = fit_text(label, matched, missing)
        t_rows.append({"pair_id": f"{mid}|{jid}", "member_id": mid, "job_id": jid, "teacher": "tiny",
                       "fit_label": label, "p_high": PROBS[label][0], "p_medium": PROBS[label][1],
                       "p_low": PROBS[label][2], "explanation": t_expl})
        s_label = SHIFT[label] if i % 5 == 0 else label
        if student_label is not None:
            s_label = student_label({"index": i, "policy_label": policy, "teacher_label": label})
        pair = {"index": i, "member_id": mid, "job_id": jid, "policy_label": policy,
                "teacher_label": label, "student_label": s_label,
                "teacher_explanation": t_expl, "matched": matched, "missing": missing,
                "heldout": bool(held[i]), "student_kind": None}
        s_expl = student_text(pair) if with_explainer else None
        pair["student_explanation"] = s_expl
        pair["selected"] = s_expl is not None
        pairs.append(pair)
        s_rows.append({"member_id": mid, "job_id": jid, "fit_label": s_label,
                       "p_high": PROBS[s_label][0], "p_medium": PROBS[s_label][1], "p_low": PROBS[s_label][2],
                       "explanation": s_expl or None, "explainer_version": "e-3f9a" if s_expl is not None else None})
    # 20 scored pairs the teacher never labelled (they count in the student distribution only).
    for k in range(20):
        s_rows.append({"member_id": f"x{k:03d}", "job_id": "j000", "fit_label": "Low",
                       "p_high": 0.05, "p_medium": 0.15, "p_low": 0.8, "explanation": None,
                       "explainer_version": None})

    labels_dir = root / "labels" / "teacher=tiny"
    io.write_table(pa.Table.from_pylist(t_rows), str(labels_dir))
    io.write_text(str(root / "summary.json"), json.dumps({
        "rows": len(t_rows), "rows_per_s": 12.5, "output_tokens_per_s": 210.0,
        "passes": {"tiny": {"labelled": len(t_rows), "teacher_errors": 4, "labelled_first_try": len(t_rows) - 6,
                            "valid_rate": 0.9, "valid_first_try_rate": 0.8, "output_tokens": 4000,
                            "invalid_by_reason": {"circular": 3, "wrong_label": 1}}}}))

    part = root / "scores" / f"ds={DS}"
    scores = pa.Table.from_pylist(s_rows, schema=pa.schema([
        ("member_id", pa.string()), ("job_id", pa.string()), ("fit_label", pa.string()),
        ("p_high", pa.float32()), ("p_medium", pa.float32()), ("p_low", pa.float32()),
        ("explanation", pa.string()), ("explainer_version", pa.string())]))
    files = [io.write_table(scores.slice(0, 60), str(part), basename="part-r1-00000.parquet"),
             io.write_table(scores.slice(60), str(part), basename="part-r1-00001.parquet")]
    io.publish_partition(str(part), files, {
        "run_id": "r1", "ds": DS,
        "counts": {"rows_in": len(s_rows), "rows_scored": len(s_rows), "rows_reused": 0, "rows_error": 0,
                   "explanations_selected": 40, "explanations_generated": 30, "explanations_rejected": 8,
                   "explanations_failed": 2, "explanations_regenerated": 6,
                   "explanations_invalid": {"circular": 3, "wrong_label": 6}},
        "quality_gate": {"status": "passed", "explanations": {"pairs": 32, "valid": 30, "valid_first_try": 25,
                                                              "valid_rate": 0.9375, "consistency": 1.0,
                                                              "regenerations": 2, "status": "passed"}},
        "timings": {"classifier": 4.0, "explainer": 20.0},
        "rows_per_s": {"classifier": 30.0, "explainer": 2.5},
    })
    io.write_latest(str(root / "scores"), DS)
    # A stray file that the manifest does not list: a reader that follows the contract ignores it.
    io.write_table(scores.slice(0, 5), str(part), basename="part-stray.parquet")

    models = root / "models"
    io.write_text(str(models / "classifier" / "metrics.json"),
                  json.dumps({"n": 50, "accuracy": 0.9, "macro_f1": 0.88, "ece": CLASSIFIER_ECE["after"],
                              "uncalibrated": {"n": 50, "accuracy": 0.9, "ece": CLASSIFIER_ECE["before"],
                                               "seed": {**CLASSIFIER_SEED, "ece": CLASSIFIER_SEED_ECE_BEFORE}},
                              "calibration_temperature": 1.5, "against": "teacher", "samples_per_s": 55.0,
                              "seed": CLASSIFIER_SEED}))
    split = {"data": {"holdout_fraction": holdout_fraction}}
    if holdout_fraction is not None:
        write_resolved_config(load_config(ClassifierConfig, base=split), str(models / "classifier"))
    if with_explainer:
        io.write_text(str(models / "explainer" / "metrics.json"),
                      json.dumps({"rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45,
                                  "base": {"rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15},
                                  "version": "e-3f9a", "note": "free text is not shown",
                                  "examples": [{"student": "You are a High fit because of SQL."}]}))
        if holdout_fraction is not None:
            write_resolved_config(load_config(ExplainerConfig, base=split), str(models / "explainer"))
    if with_teacher_metrics:
        io.write_text(str(models / "teacher" / "metrics.json"),
                      json.dumps({"label_agreement_before": SFT_AGREEMENT["before"],
                                  "label_agreement_after": SFT_AGREEMENT["after"], "heldout_pairs": 40}))
    return {"teacher_labels": [p["teacher_label"] for p in pairs],
            "student_labels": [p["student_label"] for p in pairs],
            "pairs": pairs, "student_rows": len(s_rows)}


def judged_pairs(facts: dict) -> list[dict]:
    """The pairs evaluate must judge: held out from training and selected for an explanation."""
    return [p for p in facts["pairs"] if p["heldout"] and p["selected"]]


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


def test_explanations_are_judged_on_heldout_pairs_only(evaluated):
    _, facts, metrics = evaluated
    ex = metrics["explanations"]
    n_held = sum(p["heldout"] for p in facts["pairs"])
    assert 0 < n_held < 100
    assert ex["heldout"]["heldout_pairs"] == n_held
    assert ex["heldout"]["training_pairs_excluded"] == 100 - n_held
    assert [r["holdout_fraction"] for r in ex["heldout"]["rules"]] == [HOLDOUT, HOLDOUT]
    judged = judged_pairs(facts)
    assert ex["heldout"]["judged_pairs"] == ex["student"]["n"] == ex["teacher"]["n"] == len(judged)
    held_keys = {(p["member_id"], p["job_id"]) for p in judged}
    assert all((w["member_id"], w["job_id"]) in held_keys for w in metrics["worst_explanations"])


def test_explanation_quality_by_kind(evaluated):
    _, facts, metrics = evaluated
    judged = judged_pairs(facts)
    kinds = Counter(p["student_kind"] for p in judged)
    failed = sum(p["student_kind"] is None for p in judged)
    assert failed and all(kinds[k] for k in STUDENT_KINDS)
    q = metrics["explanations"]["student"]
    assert q["valid"] == kinds["good"] and q["valid_rate"] == pytest.approx(kinds["good"] / len(judged))
    assert q["by_reason"]["empty"] == failed  # selected, but the explainer produced nothing
    assert q["by_reason"]["multiple_labels"] == kinds["degenerate_all"]
    # One stated label, the row's: the valid and the ungrounded texts, and "Medium" on a Medium row.
    medium_on_medium = sum(p["student_kind"] == "degenerate_one" and p["student_label"] == "Medium" for p in judged)
    c = q["consistency"]
    assert c["consistent"] == kinds["good"] + kinds["ungrounded"] + medium_on_medium
    assert (c["n"], c["empty"], c["multiple_labels"]) == (len(judged), failed, kinds["degenerate_all"])
    assert q["grounding"]["errors"] == q["grounding"]["by_reason"]["ungrounded_skill"] == kinds["ungrounded"]
    assert q["grounding"]["n"] == len(judged) - failed
    assert q["repetition"] == {"n": len(judged) - failed, "count": 0, "rate": 0.0}
    # The teacher's explanations are all valid and consistent.
    t = metrics["explanations"]["teacher"]
    assert t["valid_rate"] == 1.0 and t["consistency"]["rate"] == 1.0 and t["grounding"]["errors"] == 0
    # ROUGE over the same pairs: the failed ones count 0.
    assert metrics["rouge"]["available"] and metrics["rouge"]["n"] == len(judged)
    assert metrics["rouge"]["blank"] == failed and metrics["rouge"]["skipped"] == 0
    assert 0.0 < metrics["rouge"]["rougeL"] < 1.0


def test_five_worst_have_the_most_reasons_and_the_teachers_text(evaluated):
    root, facts, metrics = evaluated
    worst = metrics["worst_explanations"]
    assert len(worst) == 5
    counts = [len(w["student_reasons"]) for w in worst]
    assert counts == sorted(counts, reverse=True)
    # "High, Medium, Low": too_short, not_prose, truncated, multiple_labels -- the most of any kind.
    assert set(worst[0]["student_reasons"]) == {"too_short", "not_prose", "truncated", "multiple_labels"}
    assert all(w["teacher_reasons"] == [] for w in worst)
    assert "student_explanation" not in worst[0] and "teacher_explanation" not in worst[0]
    by_key = {(p["member_id"], p["job_id"]): p for p in facts["pairs"]}
    html = (root / "report" / "index.html").read_text()
    section = html[html.index('id="worst"'):html.index("ROUGE against the teacher")]
    for w in worst:
        assert html_escape(by_key[(w["member_id"], w["job_id"])]["teacher_explanation"]) in section


def test_degenerate_explanations_score_zero(tmp_path):
    def degenerate(pair):
        if not pair["heldout"]:
            return fit_text(pair["student_label"], pair["matched"], pair["missing"])
        return "Medium" if pair["student_label"] != "Medium" else "High, Medium, Low"

    make_eval_inputs(tmp_path, student_text=degenerate)
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    q = metrics["explanations"]["student"]
    assert q["n"] > 0 and q["valid_rate"] == 0.0 and q["consistency"]["rate"] == 0.0
    assert q["by_reason"]["too_short"] == q["by_reason"]["not_prose"] == q["n"]


def test_training_pairs_are_excluded(tmp_path):
    # Garbage on every pair the students trained on, valid text on every held-out pair: a report
    # that read training pairs would show failures.
    def by_split(pair):
        if pair["heldout"]:
            return fit_text(pair["student_label"], pair["matched"], pair["missing"])
        return "High, Medium, Low"

    facts = make_eval_inputs(tmp_path, student_text=by_split)
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    q = metrics["explanations"]["student"]
    assert q["n"] == sum(p["heldout"] for p in facts["pairs"])
    assert q["valid_rate"] == 1.0 and q["consistency"]["rate"] == 1.0
    assert metrics["worst_explanations"] == [] and metrics["rouge"]["blank"] == 0


def test_unknown_split_makes_explanations_unavailable(tmp_path):
    make_eval_inputs(tmp_path, holdout_fraction=None)
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for key in ("rouge", "explanations"):
        assert metrics[key]["available"] is False
        assert "held-out split is unknown" in metrics[key]["reason"]
    # The distill run's values given in the evaluate config: judged as if recorded.
    assert run(eval_config(tmp_path, holdout_fraction=HOLDOUT, split_salt="lantern")) == 0
    configured = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert configured["explanations"]["available"]
    assert configured["explanations"]["heldout"]["rules"][0]["from"] == "evaluate config"
    recorded = tmp_path / "recorded"
    make_eval_inputs(recorded)
    assert run(eval_config(recorded)) == 0
    expected = json.loads((recorded / "report" / "metrics.json").read_text())
    assert configured["explanations"]["student"] == expected["explanations"]["student"]


def test_throughput_and_training_sections(evaluated):
    root, _, metrics = evaluated
    rows = {(r["stage"], r["metric"]): r["value"] for r in metrics["throughput"]["rows"]}
    assert rows[("precompute", "rows_per_s.classifier")] == 30.0
    assert rows[("precompute", "timings.explainer")] == 20.0
    assert rows[("synthesize", "output_tokens_per_s")] == 210.0
    assert rows[("distill classifier", "samples_per_s")] == 55.0
    assert metrics["training"]["teacher_sft"]["label_agreement_after"]["accuracy"] == 0.8
    # Numbers and ids of the models' metrics.json are kept, their free text is not.
    assert metrics["training"]["explainer"] == {"rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45,
                                                "base": {"rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15},
                                                "version": "e-3f9a"}
    assert metrics["manifest"]["counts"]["rows_in"] == 120
    html = (root / "report" / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == 6
    assert "Not available" not in html
    assert 'id="teacher-output-cards"' in html and "tiny: valid after retries" in html
    assert (root / "report" / "resolved_config.yaml").is_file()


def test_missing_explainer_says_not_available(tmp_path):
    make_eval_inputs(tmp_path, with_explainer=False)
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["agreement"]["available"]
    for key in ("rouge", "explanations"):
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
    facts = make_eval_inputs(tmp_path)
    path = tmp_path / "labels" / "teacher=tiny"
    table = io.read_table(str(path))
    expl = table.column("explanation").to_pylist()
    expl[judged_pairs(facts)[0]["index"]] = "<script>alert(1)</script> This is a High fit."
    table = table.set_column(table.schema.get_field_index("explanation"), "explanation", pa.array(expl))
    for f in path.iterdir():
        f.unlink()
    io.write_table(table, str(path))
    assert run(eval_config(tmp_path, num_examples=200)) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "This is a" not in (tmp_path / "report" / "metrics.json").read_text()


def test_teacher_without_explanations_still_judges_the_student(tmp_path):
    facts = make_eval_inputs(tmp_path)
    path = tmp_path / "labels" / "teacher=tiny"
    table = io.read_table(str(path)).drop_columns(["explanation"])
    for f in path.iterdir():
        f.unlink()
    io.write_table(table, str(path))
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["explanations"]["student"]["n"] == len(judged_pairs(facts))
    assert metrics["explanations"]["teacher"]["available"] is False
    assert metrics["rouge"]["available"] is False
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Not available: the teacher labels carry no explanations" in html
    assert all(w["teacher_reasons"] is None for w in metrics["worst_explanations"])


def test_fused_labels_take_the_text_of_a_teacher_that_writes_some(tmp_path):
    """The demo's fused labels carry no explanation; of its two teachers the engagement model
    (first by name) writes none (its column is all null): the report takes T2's text."""
    facts = make_eval_inputs(tmp_path)
    labels = io.read_table(str(tmp_path / "labels" / "teacher=tiny"))
    io.write_table(labels.drop_columns(["explanation"]), str(tmp_path / "fused"))
    io.write_text(str(tmp_path / "fused" / "_SUCCESS"), "{}")
    silent = labels.set_column(labels.schema.get_field_index("explanation"), "explanation",
                               pa.nulls(labels.num_rows, pa.string()))
    io.write_table(silent, str(tmp_path / "labels" / "teacher=engagement"))
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["explanations"]["teacher"]["available"] is True
    assert metrics["explanations"]["teacher"]["n"] == len(judged_pairs(facts))
    assert metrics["inputs"]["notes"] == ["teacher explanations taken from teacher=tiny (fused labels carry none)"]


def test_every_generated_explanation_is_summarised_from_the_manifest(evaluated):
    """Held-out pairs with an explanation are few at demo scale (one in the 2026-12-03 demo): the
    first screen also says what precompute published, withheld and regenerated, and what the
    gate's canary explanations scored."""
    root, _, metrics = evaluated
    p = metrics["published"]
    assert p["available"] and (p["selected"], p["published"], p["withheld"], p["failed"]) == (40, 30, 8, 2)
    assert p["published_rate"] == 0.75 and p["regenerated_rate"] == 0.2
    assert list(p["withheld_by_reason"]) == ["wrong_label", "circular"]
    assert p["canary"]["valid_first_try"] == 25
    html = (root / "report" / "index.html").read_text()
    cards = " ".join(html[html.index('id="published-cards"'):].split())
    assert "published: 30 of the 40" in cards and "wrong_label 6, circular 3" in cards
    assert "30 of 32 (25 on the first try" in cards


def test_no_manifest_counts_says_not_available():
    from lantern_batch.evaluate.metrics import published_explanations

    assert published_explanations(None)["available"] is False
    assert published_explanations({"counts": {"rows_in": 3}})["available"] is False


def test_cli_dry_run_and_shortcuts(tmp_path, capsys):
    assert main(["evaluate", "--labels", str(tmp_path), "--scores", str(tmp_path), "--ds", DS,
                 "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"ds: '{DS}'" in out and "# plan" in out and str(tmp_path / "r") in out


def _macro_f1(reference: list[str], predicted: list[str]) -> float:
    """Mean F1 over the labels that occur (every label occurs in the cases below)."""
    scores = []
    for name in FIT_LABELS:
        tp = sum(r == p == name for r, p in zip(reference, predicted, strict=True))
        n_pred, n_ref = predicted.count(name), reference.count(name)
        scores.append(2 * tp / (n_pred + n_ref) if n_pred + n_ref else 0.0)
    return sum(scores) / len(scores)


def _ece_by_confidence(confidence: list[float], correct: list[bool]) -> float:
    """ECE when every confidence value falls in a bin of its own (0.6 and 0.8, float32, with 10 or 15 bins)."""
    total = len(confidence)
    return sum(
        sum(c == value for c in confidence) / total
        * abs(sum(ok for c, ok in zip(confidence, correct, strict=True) if c == value)
              / sum(c == value for c in confidence) - value)
        for value in set(confidence))


def _stated(pair: dict) -> str | None:
    """The one label the default student texts state: the row's (valid and ungrounded texts),
    "Medium" (the bare "Medium"), none for "High, Medium, Low" and for a failed explanation."""
    return {"good": pair["student_label"], "ungrounded": pair["student_label"], "degenerate_one": "Medium",
            "degenerate_all": None, None: None}[pair["student_kind"]]


def _models(metrics: dict) -> dict[str, dict]:
    return {row["key"]: row for row in metrics["models"]["rows"]}


def _summary(html: str) -> str:
    return html[html.index('<section id="summary">'):html.index('<section id="explanations">')]


def test_models_table_on_a_constructed_case(tmp_path):
    # Teacher: the policy's label, wrong on every 3rd pair. Classifier: the policy's label, wrong
    # on every 4th pair. Agreements on the held-out pairs are then known exactly.
    facts = make_eval_inputs(
        tmp_path,
        teacher_label=lambda p: SHIFT[p["policy_label"]] if p["index"] % 3 == 0 else p["policy_label"],
        student_label=lambda p: SHIFT[p["policy_label"]] if p["index"] % 4 == 0 else p["policy_label"])
    # In this world the skill-overlap labels are the policy's: a fixed, hand-checkable truth.
    for p in facts["pairs"]:
        overlap = {2: "High", 1: "Medium", 0: "Low"}[len(p["matched"])]
        assert p["policy_label"] == overlap
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    rows = _models(metrics)
    assert list(rows) == ["t2_before", "t2_after", "teacher", "classifier", "classifier_seed", "explainer"]
    assert rows["teacher"]["model"] == "teacher (tiny)"

    # 1-2: the teacher export's metrics.json, against the policy (D_seed); no teacher column.
    for when in ("before", "after"):
        row, want = rows[f"t2_{when}"], SFT_AGREEMENT[when]
        assert row["available"] and row["n"] == want["n"] and row["teacher"] is None
        assert (row["policy"]["agreement"], row["policy"]["macro_f1"], row["ece"]["ece"]) == (
            want["accuracy"], want["macro_f1"], want["ece"])

    held = [p for p in facts["pairs"] if p["heldout"]]
    policy = [p["policy_label"] for p in held]
    teacher = [p["teacher_label"] for p in held]
    student = [p["student_label"] for p in held]
    assert 0 < len(held) < 100 and metrics["models"]["heldout"]["pairs"] == len(held)
    assert teacher != policy and student != policy and teacher != student

    # 3: the teacher labels against the policy.
    t = rows["teacher"]
    assert t["n"] == t["policy"]["n"] == len(held) and t["teacher"] is None
    expected = sum(a == b for a, b in zip(teacher, policy, strict=True)) / len(held)
    assert t["policy"]["agreement"] == pytest.approx(expected)
    assert expected == pytest.approx(sum(p["index"] % 3 != 0 for p in held) / len(held))
    assert t["policy"]["macro_f1"] == pytest.approx(_macro_f1(policy, teacher))
    assert t["ece"]["ece"] == pytest.approx(_ece_by_confidence(
        [max(PROBS[x]) for x in teacher], [a == b for a, b in zip(teacher, policy, strict=True)]), abs=1e-6)

    # 4: the classifier against the policy and the teacher.
    c = rows["classifier"]
    assert c["n"] == c["policy"]["n"] == c["teacher"]["n"] == len(held)
    assert c["policy"]["agreement"] == pytest.approx(sum(p["index"] % 4 != 0 for p in held) / len(held))
    assert c["teacher"]["agreement"] == pytest.approx(
        sum(a == b for a, b in zip(student, teacher, strict=True)) / len(held))
    assert c["policy"]["macro_f1"] == pytest.approx(_macro_f1(policy, student))
    assert c["ece"]["ece"] == pytest.approx(_ece_by_confidence(
        [max(PROBS[x]) for x in student], [a == b for a, b in zip(student, policy, strict=True)]), abs=1e-6)

    # 5: the classifier on its own held-out D_seed pairs, as its export's metrics.json records it.
    cs = rows["classifier_seed"]
    assert cs["available"] and cs["n"] == CLASSIFIER_SEED["n"] and cs["teacher"] is None
    assert (cs["policy"]["agreement"], cs["policy"]["macro_f1"], cs["ece"]["ece"], cs["policy"]["confusion"]) == (
        CLASSIFIER_SEED["accuracy"], CLASSIFIER_SEED["macro_f1"], CLASSIFIER_SEED["ece"], CLASSIFIER_SEED["confusion"])

    # 6: the label the explanation states, on the judged explanations that state one.
    judged = judged_pairs(facts)
    stated = [(p, _stated(p)) for p in judged]
    with_label = [(p, s) for p, s in stated if s is not None]
    e = rows["explainer"]
    assert e["judged"] == len(judged) and e["n"] == len(with_label) > 0
    assert e["no_label"] + e["several_labels"] == len(judged) - len(with_label)
    assert e["several_labels"] == sum(p["student_kind"] == "degenerate_all" for p in judged)
    assert e["policy"]["agreement"] == pytest.approx(
        sum(s == p["policy_label"] for p, s in with_label) / len(with_label))
    assert e["teacher"]["agreement"] == pytest.approx(
        sum(s == p["teacher_label"] for p, s in with_label) / len(with_label))
    assert e["ece"] is None

    # The calibration card: the classifier export's ECE before and after temperature scaling.
    # Fitted on the held-out D_seed rows, so shown on them when the export records both sides.
    cal = metrics["models"]["calibration"]
    assert cal["available"] and (cal["before"], cal["after"], cal["n"], cal["against"]) == (
        CLASSIFIER_SEED_ECE_BEFORE, CLASSIFIER_SEED["ece"], CLASSIFIER_SEED["n"], "D_seed (policy)")

    # The report shows the numbers metrics.json holds.
    summary = _summary((tmp_path / "report" / "index.html").read_text())
    row_html = summary[summary.index('data-model="classifier"'):]
    row_html = row_html[:row_html.index("</tr>")]
    assert f"{100 * c['policy']['agreement']:.1f}%" in row_html
    assert f"{100 * c['teacher']['agreement']:.1f}%" in row_html


def test_missing_teacher_metrics_gives_not_available_rows(tmp_path):
    make_eval_inputs(tmp_path, with_teacher_metrics=False)
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    rows = _models(metrics)
    for key in ("t2_before", "t2_after"):
        assert rows[key]["available"] is False
        assert rows[key]["reason"].startswith("no readable metrics.json in the teacher export")
    assert all(rows[k]["available"] for k in ("teacher", "classifier", "explainer"))
    summary = _summary((tmp_path / "report" / "index.html").read_text())
    assert summary.count("not available: no readable metrics.json in the teacher export") == 2

    # A metrics.json without the label agreements; a classifier export without the uncalibrated
    # ECE (the report's own ECE is shown); no members table (no policy labels).
    io.write_text(str(tmp_path / "models" / "teacher" / "metrics.json"), json.dumps({"before": {"accuracy": 0.3}}))
    io.write_text(str(tmp_path / "models" / "classifier" / "metrics.json"), json.dumps({"ece": 0.04}))
    for f in (tmp_path / "data" / "members").iterdir():
        f.unlink()
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    rows = _models(metrics)
    assert "records no label_agreement_before" in rows["t2_before"]["reason"]
    assert "records no held-out D_seed pairs" in rows["classifier_seed"]["reason"]
    for key in ("teacher", "classifier", "explainer"):
        assert rows[key]["available"] and rows[key]["policy"]["available"] is False
        assert "policy labels cannot be computed" in rows[key]["policy"]["reason"]
    assert rows["classifier"]["teacher"]["available"] and rows["classifier"]["ece"]["available"] is False
    cal = metrics["models"]["calibration"]
    assert cal["available"] is False and cal["report_ece"] == metrics["calibration"]["ece"]
    summary = " ".join(_summary((tmp_path / "report" / "index.html").read_text()).split())
    assert "not available: no members or jobs table was found" in summary
    assert "metrics.json records no ECE before and after temperature calibration" in summary

    # Without a known split the held-out rows are not available either.
    make_eval_inputs(tmp_path / "nosplit", holdout_fraction=None, with_teacher_metrics=False)
    assert run(eval_config(tmp_path / "nosplit")) == 0
    rows = _models(json.loads((tmp_path / "nosplit" / "report" / "metrics.json").read_text()))
    # The classifier's own D_seed numbers come from its metrics.json, split or no split.
    assert all(not row["available"] for key, row in rows.items() if key != "classifier_seed")
    assert "held-out split is unknown" in rows["classifier"]["reason"]


def test_summary_shows_the_models_table_and_good_and_bad_examples(evaluated):
    root, facts, metrics = evaluated
    summary = _summary((root / "report" / "index.html").read_text())
    assert summary.index('id="models"') < summary.index('class="cards"')  # the table comes first
    assert "Fit labels on held-out pairs" in summary
    for row in metrics["models"]["rows"]:
        assert f'data-model="{row["key"]}"' in summary and row["available"]
    by_key = {(p["member_id"], p["job_id"]): p for p in facts["pairs"]}
    good, worst = metrics["good_explanations"], metrics["worst_explanations"][:3]
    assert len(good) == len(worst) == 3
    examples = summary[summary.index('id="summary-examples"'):]
    for w in good + worst:
        pair = by_key[(w["member_id"], w["job_id"])]
        assert pair["heldout"] and pair["selected"]
        assert html_escape(pair["student_explanation"]) in examples
        assert html_escape(pair["teacher_explanation"]) in examples
    assert all(p["student_reasons"] == [] and by_key[(p["member_id"], p["job_id"])]["student_kind"] == "good"
               for p in good)
    assert all(w["student_reasons"] for w in worst)
    assert examples.count(">good<br>") == 3 and examples.count(">bad<br>") == 3
    # metrics.json keeps their ids and labels, not their text.
    assert "student_explanation" not in good[0] and good[0]["policy_label"] in FIT_LABELS


def test_teacher_labels_of_another_prompt_version_never_mix_into_the_report(tmp_path):
    """The teacher relabelled with v3 over its stored v2 labels: the report compares with v3 only."""
    facts = make_eval_inputs(tmp_path)
    path = tmp_path / "labels" / "teacher=tiny"
    current = io.read_table(str(path))
    current = current.append_column("prompt_version", pa.array(["v3"] * current.num_rows))
    n = current.num_rows
    stale = current.set_column(current.schema.get_field_index("fit_label"), "fit_label", pa.array(["Low"] * n))
    stale = stale.set_column(stale.schema.get_field_index("prompt_version"), "prompt_version", pa.array(["v2"] * n))
    for f in path.iterdir():
        f.unlink()
    io.write_table(stale, str(path), basename="part-a.parquet")  # read first: first occurrence would be v2's
    io.write_table(current, str(path), basename="part-b.parquet")
    assert run(eval_config(tmp_path, teacher_prompt_version="v3")) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["inputs"]["teacher_rows"] == n and metrics["inputs"]["teacher_prompt_version"] == "v3"
    assert metrics["agreement"]["pairs"] == len(facts["teacher_labels"])
    assert metrics["agreement"]["accuracy"] == pytest.approx(0.8)
    # Not configured and two versions stored: the comparison is not available (never a mix).
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["agreement"]["available"] is False
    assert any("several prompt versions (v2, v3)" in note for note in metrics["inputs"]["notes"])


def test_calibration_card_falls_back_to_the_main_split_without_seed_numbers(tmp_path):
    make_eval_inputs(tmp_path)
    io.write_text(str(tmp_path / "models" / "classifier" / "metrics.json"), json.dumps(
        {"n": 50, "accuracy": 0.9, "ece": 0.04, "against": "teacher", "calibration_temperature": 1.5,
         "uncalibrated": {"n": 50, "accuracy": 0.9, "ece": 0.12}}))
    assert run(eval_config(tmp_path)) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    cal = metrics["models"]["calibration"]
    assert (cal["before"], cal["after"], cal["n"], cal["against"]) == (0.12, 0.04, 50, "teacher")
    assert _models(metrics)["classifier_seed"]["available"] is False
