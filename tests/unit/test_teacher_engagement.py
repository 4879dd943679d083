"""The engagement teacher: logistic regression, ordinal calibration, the stage."""

import numpy as np
import pyarrow as pa

from lantern_batch.schema import FIT_LABELS, RowLimits
from lantern_batch.teacher.engagement import (
    FEATURES,
    EngagementTeacher,
    fit_engagement_model,
    fit_logistic,
    fit_ordinal,
    ordinal_probs,
    pair_features,
)
from lantern_batch.teacher.inputs import (
    PairJoiner,
    pair_read_tasks,
    prepare_side_table,
    read_row_group,
    scan_pairs,
)


def test_logistic_regression_recovers_the_signs():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(4000), rng.normal(size=(4000, 2))])
    y = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 + 2 * x[:, 1] - 1 * x[:, 2])))).astype(float)
    w = fit_logistic(x, y, l2=0.1)
    assert w[1] > 1.5 and w[2] < -0.7


def test_ordinal_calibration_is_monotone_and_fits_ordered_labels():
    s = np.linspace(-3, 3, 300)
    labels = ["Low" if v < -1 else "Medium" if v < 1 else "High" for v in s]
    a, t1, t2 = fit_ordinal(s, labels)
    assert a > 0 and t1 < t2
    p = ordinal_probs(s, a, t1, t2)  # [n, 3]
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    assert np.all(np.diff(p[:, 0]) >= -1e-9)  # p_high grows with the engagement score
    pred = [FIT_LABELS[i] for i in p.argmax(axis=1)]
    assert np.mean([a_ == b for a_, b in zip(pred, labels, strict=True)]) > 0.9


def test_features_of_a_pair():
    m = {"skills": ["Python", "SQL"], "seniority": "senior", "location": "Berlin, DE", "years_experience": 8.0}
    j = {"required_skills": ["Python", "Go"], "seniority": "mid", "location": "Berlin, DE", "workplace_type": "onsite"}
    f = dict(zip(FEATURES, pair_features(m, j), strict=True))
    assert f["skill_overlap"] == 0.5 and f["seniority_gap"] == 1 and f["same_city"] == 1 and f["remote"] == 0


def test_fit_on_the_world_and_label_joined_rows(tiny_world, tmp_path):
    w = tiny_world
    model = fit_engagement_model({"apply_log": str(w / "apply_log"), "seed": str(w / "seed"),
                                  "max_train_rows": 300, "l2": 1.0}, str(w / "members"), str(w / "jobs"))
    assert model["train_rows"] == 300 and model["seed_rows"] > 100
    assert model["weights"][FEATURES.index("skill_overlap")] > 0  # overlap drives applying
    assert model["seed_accuracy"] > 0.4 and model["model_ref"].startswith("engagement:logreg-")
    members, bad_m, _ = prepare_side_table(str(w / "members"), "members", RowLimits(), str(tmp_path))
    jobs, bad_j, _ = prepare_side_table(str(w / "jobs"), "jobs", RowLimits(), str(tmp_path))
    tasks = pair_read_tasks(str(w / "pairs"))
    scan = scan_pairs(tasks, 1.0, frozenset())
    joined = PairJoiner(members, jobs, bad_m, bad_j, scan["copy_index"], frozenset(), 1.0, RowLimits())(
        read_row_group(tasks[0].__dict__)).slice(0, 40)
    out = EngagementTeacher({"name": "eng", "prompt_version": "engagement-v1"}, model)(joined)
    assert out.num_rows == 40
    assert set(out.column("fit_label").to_pylist()) <= set(FIT_LABELS)
    total = sum(out.column(c).to_numpy() for c in ("p_high", "p_medium", "p_low"))
    np.testing.assert_allclose(total, 1, rtol=1e-5)
    assert out.column("model_ref")[0].as_py() == model["model_ref"]
    assert pa.compute.all(pa.compute.is_null(out.column("explanation"))).as_py()
