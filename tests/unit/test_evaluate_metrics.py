"""The evaluation-only metrics against values computed by hand (see the comments for the arithmetic);
the classification report, calibration and ROUGE they share with distill are tests/unit/test_metrics.py."""

from __future__ import annotations

import numpy as np
import pytest

from lantern_batch.evaluate import metrics as m
from lantern_batch.quality import SkillMatcher

H, M, L = "High", "Medium", "Low"


def test_mean_total_variation():
    p = np.array([[1.0, 0, 0], [0.5, 0.5, 0]])
    q = np.array([[0, 1.0, 0], [0.5, 0.5, 0]])
    assert m.mean_total_variation(p, q) == pytest.approx(0.5)  # (1 + 0) / 2


def test_label_distribution_counts_other_values():
    d = m.label_distribution([H, H, M, None, "high"])
    assert d["n"] == 5 and d["counts"] == {H: 2, M: 1, L: 0} and d["other"] == 2
    assert d["shares"][H] == pytest.approx(0.4)


MEMBER = {"member_id": "m1", "current_title": "Software Engineer", "seniority": "mid", "years_experience": 6.0,
          "skills": ["Python", "Go", "SQL"], "location": "Seattle, WA"}
JOB = {"job_id": "j1", "title": "Senior Software Engineer", "company": "Northwind Labs", "description": "A role.",
       "seniority": "senior", "required_skills": ["Python", "Kubernetes", "SQL"], "location": "Bellevue, WA"}
GOOD = ("Medium fit: they bring Python and SQL but do not list Kubernetes. At mid level they are one "
        "level below the senior level asked for.")


@pytest.mark.parametrize("text, label, verdict", [
    ("This is a High fit: they list every required skill.", H, "consistent"),
    ("Fit label: medium.", M, "consistent"),
    ("Not a High fit; a partial match, so Medium.", M, "consistent"),  # the negated label does not count
    ("Medium", M, "consistent"),  # states the row's label (and is invalid: see the quality tests)
    ("Medium", H, "wrong_label"),
    ("This is a Low fit.", H, "wrong_label"),
    ("High, Medium, Low", H, "multiple_labels"),
    ("This is a High fit. Overall a Low fit.", H, "multiple_labels"),
    ("They lack Kubernetes and are two levels below the role.", L, "no_label"),  # no cue-word guessing
    ("The candidate went to high school.", H, "no_label"),
    ("   ", H, "empty"),
    (None, H, "empty"),
])
def test_consistency_is_exactly_one_stated_label_the_rows(text, label, verdict):
    out = m.consistency([label], [text])
    assert out[verdict] == 1 and out["n"] == 1
    assert out["rate"] == (1.0 if verdict == "consistent" else 0.0)


def test_consistency_counts():
    out = m.consistency([H, M, L, H, M], ["This is a High fit.", "High, Medium, Low", None, "Medium", "Medium"])
    assert (out["n"], out["consistent"], out["multiple_labels"], out["empty"], out["wrong_label"]) == (5, 2, 1, 1, 1)
    assert out["rate"] == pytest.approx(2 / 5)
    assert out["stated"] == {H: 1, M: 2, L: 0}
    assert m.consistency([], [])["rate"] is None
    with pytest.raises(ValueError):
        m.consistency([H], [])


def _quality(texts, labels, members=None, jobs=None):
    members = members or [MEMBER] * len(texts)
    jobs = jobs or [JOB] * len(texts)
    checks = m.judge_explanations(texts, labels, members, jobs)
    grounded = [a is not None and b is not None for a, b in zip(members, jobs, strict=True)]
    return checks, m.explanation_quality(texts, labels, checks, grounded)


def test_degenerate_explanations_have_valid_rate_and_consistency_zero():
    _, q = _quality(["High, Medium, Low", "Medium", "High, Low", "Medium"], [H, H, L, L])
    assert q["n"] == 4 and q["valid_rate"] == 0.0 and q["consistency"]["rate"] == 0.0
    assert q["by_reason"]["too_short"] == 4 and q["by_reason"]["multiple_labels"] == 2


def test_good_explanations_score_well():
    low = "Low fit: they bring Python but list neither Kubernetes nor SQL, and the senior level is above their mid level."
    _, q = _quality([GOOD, low.replace("but list neither Kubernetes nor SQL", "and SQL but not Kubernetes")], [M, L])
    assert q["valid_rate"] == 1.0 and q["consistency"]["rate"] == 1.0
    assert q["grounding"] == {"n": 2, "errors": 0, "rate": 0.0,
                              "by_reason": dict.fromkeys(m.GROUNDING_REASONS, 0)}
    assert q["repetition"]["rate"] == 0.0


def test_explanation_quality_by_hand():
    texts = [
        GOOD,                                                     # valid
        GOOD.replace("do not list Kubernetes", "do not list Kubernetes or Terraform"),  # ungrounded_skill
        GOOD + " They have 12 years of experience.",             # wrong_years
        GOOD + " They live in Denver.",                           # wrong_location
        "This is a Medium fit " + "fit " * 30 + "indeed.",        # repetition
        None,                                                     # empty
        GOOD,                                                     # valid, member unknown: not grounded
    ]
    members = [MEMBER] * 6 + [None]
    checks, q = _quality(texts, [M] * 7, members, [JOB] * 7)
    assert q["n"] == 7 and q["valid"] == 2 and q["valid_rate"] == pytest.approx(2 / 7)
    assert q["by_reason"]["empty"] == 1 and set(q["by_reason"]) == set(m.REASONS)
    g = q["grounding"]
    assert g["n"] == 5  # non-blank with member and job known
    assert g["errors"] == 3 and g["rate"] == pytest.approx(3 / 5)
    assert g["by_reason"] == {"ungrounded_skill": 1, "wrong_years": 1, "wrong_seniority": 0, "wrong_location": 1}
    assert q["repetition"] == {"n": 6, "count": 1, "rate": pytest.approx(1 / 6)}
    assert q["consistency"]["consistent"] == 6 and q["consistency"]["empty"] == 1
    with pytest.raises(ValueError):
        m.explanation_quality(texts, [M], checks)


def test_worst_explanations_most_reasons_first():
    checks, _ = _quality([GOOD, "Medium", "High, Medium, Low", None, GOOD + " They have 12 years of experience."],
                         [M, H, H, M, M])
    # "Medium" (4 reasons, wrong_label among them) and "High, Medium, Low" (4) tie: the first row
    # first; then the blank one and the wrong years (1 each).
    assert [len(checks[i].reasons) for i in (1, 2)] == [4, 4]
    assert m.worst_explanations(checks, 5) == [1, 2, 3, 4]
    assert m.worst_explanations(checks, 1) == [1]
    assert m.worst_explanations(checks[:1]) == []  # valid texts are never among the worst


VOCAB = ["Python", "SQL", "Kubernetes", "Go", "R", "C", "C++", "C#", "Google Ads", "machine learning", "Spark"]


@pytest.mark.parametrize("text, found", [
    ("Python, SQL and Spark", ["python", "sql", "spark"]),
    ("C++ and C# but not plain C.", ["c++", "c#", "c"]),
    ("We go to Google Ads meetings", ["google ads"]),  # 'go' (verb) is not Go; Go not inside Google
    ("Go and R", ["go", "r"]),
    ("Machine   Learning at scale", ["machine learning"]),
    ("pythonic sqlalchemy", []),
])
def test_skill_matcher(text, found):
    # The one matcher (quality.py) that the grounding checks of the evaluation use.
    assert SkillMatcher(VOCAB).find(text) == found


def test_throughput_rows():
    rows = m.throughput_rows("precompute", {
        "rows_per_s": {"classifier": 30, "explainer": 2.5},
        "output_tokens_per_s": 210.0,
        "timings": {"classifier": 4.0, "total": {"wall": 30}},
        "counts": {"rows_in": 100},
        "ok": True,
        "run_id": "r1",
    })
    got = {(r["metric"], r["kind"]): r["value"] for r in rows}
    assert got == {
        ("rows_per_s.classifier", "rate"): 30.0,
        ("rows_per_s.explainer", "rate"): 2.5,
        ("output_tokens_per_s", "rate"): 210.0,
        ("timings.classifier", "seconds"): 4.0,
        ("timings.total.wall", "seconds"): 30.0,
    }
    assert m.throughput_rows("x", None) == []


def test_label_agreement_against_a_reference():
    ref = [H, H, M, L, None]  # the last pair has no reference label (the policy could not score it)
    pred = [H, M, M, L, H]
    a = m.label_agreement(ref, pred)
    assert a["n"] == 4 and a["agreement"] == pytest.approx(3 / 4)
    assert a["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    # High: P 1, R .5 -> 2/3; Medium: P .5, R 1 -> 2/3; Low: 1.
    assert a["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m.label_agreement([None], [H]) == {"n": 0, "agreement": None, "macro_f1": None,
                                              "confusion": [[0, 0, 0], [0, 0, 0], [0, 0, 0]]}


def test_explanation_labels_counts_none_and_several():
    texts = ["This is a High fit.", "High, Medium, Low", "", None, "Not a High fit; a partial match.", "No label here."]
    labels, counts = m.explanation_labels(texts)
    assert labels == [H, None, None, None, M, None]
    assert counts == {"stated": 2, "none": 3, "several": 1}


def test_teacher_outputs_report_first_try_and_final_valid_rates():
    summary = {"passes": {
        "smollm2": {"labelled": 120, "teacher_errors": 26, "labelled_first_try": 44, "valid_rate": 0.8219,
                    "valid_first_try_rate": 0.3014, "output_tokens": 30236,
                    "invalid_by_reason": {"circular": 10, "wrong_label": 8}},
        "engagement": {"labelled": 146, "teacher_errors": 0, "output_tokens": 0, "valid_rate": 1.0},
    }}
    out = m.teacher_outputs(summary)
    assert out["available"] and list(out["teachers"]) == ["smollm2"]  # the engagement model writes no text
    t = out["teachers"]["smollm2"]
    assert t["judged"] == 146 and t["labelled_first_try"] == 44 and t["valid_first_try_rate"] == 0.3014
    assert t["invalid_by_reason"] == {"circular": 10, "wrong_label": 8}
    assert m.teacher_outputs(None)["available"] is False
