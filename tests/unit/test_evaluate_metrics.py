"""The evaluation metrics against values computed by hand (see the comments for the arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest

from lantern_batch.evaluate import metrics as m

H, M, L = "High", "Medium", "Low"


def test_confusion_accuracy_and_per_class_by_hand():
    ref = [H, H, M, L, L, L]
    pred = [H, M, M, L, H, None]  # the last pair has no student label: not counted
    cm = m.confusion_matrix(ref, pred)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert m.accuracy(cm) == pytest.approx(3 / 5)
    per = m.per_class_scores(cm)
    # High: tp 1, predicted 2, support 2 -> P .5, R .5, F1 .5
    assert (per[H]["precision"], per[H]["recall"], per[H]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    # Medium: tp 1, predicted 2, support 1 -> P .5, R 1, F1 2/3
    assert per[M]["f1"] == pytest.approx(2 / 3) and per[M]["support"] == 1
    # Low: tp 1, predicted 1, support 2 -> P 1, R .5, F1 2/3
    assert (per[L]["precision"], per[L]["recall"]) == pytest.approx((1.0, 0.5))
    assert m.macro_f1(cm) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


def test_macro_f1_matches_sklearn_when_every_label_occurs():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = [H, M, L]
    ref = list(rng.choice(labels, 300))
    pred = [r if rng.random() < 0.7 else rng.choice(labels) for r in ref]
    cm = m.confusion_matrix(ref, pred)
    assert m.macro_f1(cm) == pytest.approx(sklearn_metrics.f1_score(ref, pred, labels=labels, average="macro"))
    assert cm.tolist() == sklearn_metrics.confusion_matrix(ref, pred, labels=labels).tolist()


def test_macro_f1_conventions_for_absent_labels():
    # Low occurs nowhere: left out. High and Medium: F1 2/3 each.
    assert m.macro_f1(m.confusion_matrix([H, H, M], [H, M, M])) == pytest.approx(2 / 3)
    # Low is in the reference but never predicted: F1 0 counts. High: P .5, R 1 -> 2/3.
    cm = m.confusion_matrix([H, L], [H, H])
    assert m.per_class_scores(cm)[L] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m.macro_f1(cm) == pytest.approx((2 / 3 + 0.0) / 2)
    empty = m.confusion_matrix([], [])
    assert m.accuracy(empty) is None and m.macro_f1(empty) is None


def test_confusion_rejects_misaligned_inputs():
    with pytest.raises(ValueError):
        m.confusion_matrix([H], [H, M])


def test_reliability_curve_and_ece_by_hand():
    conf = [0.95, 0.85, 0.85, 0.55, 0.15, 1.0]
    correct = [True, True, False, True, False, True]
    bins = m.reliability_curve(conf, correct, n_bins=10)
    by_index = {i: b for i, b in enumerate(bins) if b.count}
    assert sorted(by_index) == [1, 5, 8, 9]  # 1.0 falls in the last bin
    assert by_index[9].count == 2 and by_index[9].confidence == pytest.approx(0.975)
    assert by_index[8].accuracy == pytest.approx(0.5)
    assert bins[0].count == 0 and bins[0].confidence is None
    # (2*|1-.975| + 2*|.5-.85| + 1*|1-.55| + 1*|0-.15|) / 6 = 1.35 / 6
    assert m.expected_calibration_error(bins) == pytest.approx(1.35 / 6)
    assert m.expected_calibration_error(m.reliability_curve([], [], 5)) is None


def test_perfect_calibration_has_zero_ece():
    conf = [0.75] * 4
    bins = m.reliability_curve(conf, [True, True, True, False], n_bins=4)
    assert m.expected_calibration_error(bins) == pytest.approx(0.0)


def test_top_label_confidence_and_tvd():
    pred, conf = m.top_label_confidence(np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]))
    assert pred.tolist() == [1, 0] and conf.tolist() == pytest.approx([0.7, 0.6])
    p = np.array([[1.0, 0, 0], [0.5, 0.5, 0]])
    q = np.array([[0, 1.0, 0], [0.5, 0.5, 0]])
    assert m.mean_total_variation(p, q) == pytest.approx(0.5)  # (1 + 0) / 2


def test_label_distribution_counts_other_values():
    d = m.label_distribution([H, H, M, None, "high"])
    assert d["n"] == 5 and d["counts"] == {H: 2, M: 1, L: 0} and d["other"] == 2
    assert d["shares"][H] == pytest.approx(0.4)


def test_rouge_by_hand():
    # "the cat sat" vs "the cat sat on the mat": ROUGE-1 P 3/3 R 3/6 -> F 2/3; ROUGE-2 P 2/2
    # R 2/5 -> F 4/7; ROUGE-L LCS 3 -> 2/3. The identical pair scores 1; the None pair is skipped.
    out = m.rouge_scores(["the cat sat", "a b c d", None], ["the cat sat on the mat", "a b c d", "x"])
    assert out["n"] == 2 and out["skipped"] == 1
    assert out["rouge1"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["rouge2"] == pytest.approx((4 / 7 + 1) / 2)
    assert out["rougeL"] == pytest.approx((2 / 3 + 1) / 2)
    assert m.rouge_scores([], [])["rouge1"] is None


@pytest.mark.parametrize("text, stance", [
    ("High fit: the profile lines up well with this Nurse role.", H),
    ("This is a Medium fit for the Nurse opening at Acme.", M),
    ("A partial match for the position, so I rate it Medium fit.", M),
    ("Strong candidate for the position, so a High fit.", H),
    ("Weak match for the role at Acme, so Low fit.", L),
    ("I would rate this a Low fit for the position.", L),
    ("You are a High fit because you know SQL.", H),
    ("This is not a High fit; it is a Low fit.", L),  # a negated statement does not count
    ("Fit label: medium.", M),
    ("They lack Kubernetes and are two levels below the role.", L),  # cue words only
    ("They list every required skill and their level matches.", H),
    ("They bring SQL but do not list Spark.", M),  # 1 positive cue, 1 negative -> s = 0
    ("The candidate went to high school.", None),  # 'high' without fit/match is not a label
    ("Some words.", None),
    ("", None),
    (None, None),
])
def test_explanation_stance(text, stance):
    assert m.explanation_stance(text) == stance


def test_consistency_counts():
    out = m.consistency(
        [H, M, L, H],
        ["This is a High fit.", "They lack SQL and are below the level.", None, "Some words."],
    )
    # 1 consistent (High), 1 inconsistent (reads Low, label Medium), 1 missing, 1 undetermined.
    assert out["rate"] == pytest.approx(0.5)
    assert (out["judged"], out["consistent"], out["undetermined"], out["missing"]) == (2, 1, 1, 1)
    assert out["stances"] == {H: 1, M: 0, L: 1}
    assert m.consistency([], [])["rate"] is None


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
    assert m.SkillMatcher(VOCAB).find(text) == found


@pytest.mark.parametrize("text, claims", [
    ("They bring Python and SQL but do not list Kubernetes.", ["python", "sql"]),
    ("On skills, Python matches the requirements, while Go is missing.", ["python"]),
    ("The role requires Kubernetes and Spark.", []),  # the job's requirement, not a claim
    ("None of the required skills (Python, SQL) appear on the profile.", []),
    ("The profile covers SQL; Spark is not mentioned.", ["sql"]),
    ("Your machine learning background and Google Ads work fit well.", ["machine learning", "google ads"]),
    ("You have no Kubernetes experience.", []),
    (None, []),
])
def test_claimed_skills(text, claims):
    assert m.claimed_skills(text, m.SkillMatcher(VOCAB)) == claims


def test_unsupported_claims_by_hand():
    out = m.unsupported_claims(
        [
            "They bring Python and SQL but do not list Kubernetes.",  # both claims listed
            "You have Kubernetes and Go experience.",  # Kubernetes is not listed
            None,  # not evaluated
            "The role requires Spark.",  # evaluated, no claim
        ],
        [["python", "SQL"], ["Go"], ["x"], []],
        m.SkillMatcher(VOCAB),
    )
    assert out["evaluated"] == 3 and out["with_claims"] == 2 and out["with_unsupported"] == 1
    assert out["rate"] == pytest.approx(1 / 3)
    assert (out["claims"], out["unsupported"]) == (4, 1) and out["claim_rate"] == pytest.approx(0.25)
    assert out["examples"] == [{"row": 1, "skills": ["kubernetes"]}]


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
