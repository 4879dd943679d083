"""Routing of pairs (dedup, reuse, reselect) and the explain policy, without Ray."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from lantern_batch.precompute.route import (
    WORK_SCHEMA,
    Policy,
    RouteOptions,
    as_work,
    route_group,
    select_explanations,
    work_table,
)

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)


def _pairs(rows: list[tuple]) -> dict:
    """rows: (member_id, job_id, order, fingerprint, reason)."""
    return {
        "__src": ["pair"] * len(rows),
        "__bucket": [0] * len(rows),
        "member_id": [r[0] for r in rows],
        "job_id": [r[1] for r in rows],
        "__order": [r[2] for r in rows],
        "__m_order": [1] * len(rows),
        "__j_order": [2] * len(rows),
        "input_fingerprint": [r[3] for r in rows],
        "__err_table": ["pairs" if r[4] else None for r in rows],
        "__err_stage": ["validate" if r[4] else None for r in rows],
        "__err_reason": [r[4] for r in rows],
    }


def _prev(rows: list[tuple]) -> dict:
    """rows: (member_id, job_id, fingerprint, label, p_high, explanation, explainer_version)."""
    return {
        "__src": ["prev"] * len(rows),
        "__bucket": [0] * len(rows),
        "member_id": [r[0] for r in rows],
        "job_id": [r[1] for r in rows],
        "input_fingerprint": [r[2] for r in rows],
        "fit_label": [r[3] for r in rows],
        "p_high": [r[4] for r in rows],
        "p_medium": [(1 - r[4]) / 2 for r in rows],
        "p_low": [(1 - r[4]) / 2 for r in rows],
        "explanation": [r[5] for r in rows],
        "classifier_version": ["c1"] * len(rows),
        "explainer_version": [r[6] for r in rows],
        "scored_at": [NOW] * len(rows),
    }


def _group(pairs: dict, prev: dict | None = None):
    import pyarrow as pa

    tables = [work_table(pairs)]
    if prev:
        tables.append(work_table(prev))
    return pa.concat_tables(tables)


def _routes(out) -> dict:
    return {(m, j): r for m, j, r in zip(out.column("member_id").to_pylist(), out.column("job_id").to_pylist(),
                                         out.column("__route").to_pylist(), strict=True)}


def test_duplicates_keep_the_first_occurrence_by_input_order():
    # The later copy comes first in the batch: order decides, not position.
    g = _group(_pairs([("m1", "j1", 5, "fp", None), ("m1", "j1", 1, "fp", None), ("m1", "j2", 3, "fp2", None)]))
    out = route_group(g, RouteOptions())
    assert out.num_rows == 3
    rows = out.to_pylist()
    by_order = {r["__order"]: r for r in rows}
    assert by_order[1]["__route"] == "score"
    assert by_order[5]["__route"] == "error" and by_order[5]["__err_reason"] == "duplicate_pair"
    assert by_order[3]["__route"] == "score"


def test_bad_rows_keep_their_own_reason_and_previous_rows_are_consumed():
    g = _group(_pairs([("m1", "j1", 1, None, "null_id:job_id"), ("m1", "j1", 2, None, "null_id:job_id")]),
               _prev([("m1", "j9", "fp", "High", 0.9, "because", "e1")]))
    out = route_group(g, RouteOptions())
    assert out.column("__route").to_pylist() == ["error", "error"]
    assert out.column("__err_reason").to_pylist() == ["null_id:job_id", "null_id:job_id"]
    assert set(out.column("__src").to_pylist()) == {"pair"}


def test_unchanged_pairs_are_reused_with_their_scores_and_changed_pairs_rescored():
    g = _group(
        _pairs([("m1", "j1", 1, "same", None), ("m1", "j2", 2, "new", None), ("m2", "j1", 3, "x", None)]),
        _prev([("m1", "j1", "same", "High", 0.8, "fits", "e1"), ("m1", "j2", "old", "Low", 0.1, None, None)]),
    )
    out = route_group(g, RouteOptions(per_member_policy=False))
    routes = _routes(out)
    assert routes == {("m1", "j1"): "reuse", ("m1", "j2"): "score", ("m2", "j1"): "score"}
    reused = [r for r in out.to_pylist() if r["__route"] == "reuse"][0]
    assert reused["fit_label"] == "High" and reused["explanation"] == "fits" and reused["scored_at"] == NOW
    rescored = [r for r in out.to_pylist() if r["job_id"] == "j2"][0]
    assert rescored["fit_label"] is None and rescored["explanation"] is None


def test_not_incremental_rescores_everything():
    g = _group(_pairs([("m1", "j1", 1, "same", None)]), _prev([("m1", "j1", "same", "High", 0.8, "fits", "e1")]))
    out = route_group(g, RouteOptions(incremental=False))
    assert out.column("__route").to_pylist() == ["score"]


def test_top_n_members_with_a_change_or_a_lost_pair_are_reselected():
    g = _group(
        _pairs([
            ("m1", "j1", 1, "a", None), ("m1", "j2", 2, "changed", None),  # m1: one pair changed
            ("m2", "j1", 3, "c", None),  # m2: lost its pair j2
            ("m3", "j1", 4, "d", None),  # m3: unchanged
            ("m4", "j1", 5, "e", None),  # m4: explanation failed last time
        ]),
        _prev([
            ("m1", "j1", "a", "High", 0.9, "x", "e1"), ("m1", "j2", "b", "High", 0.8, None, None),
            ("m2", "j1", "c", "Medium", 0.3, None, None), ("m2", "j2", "gone", "High", 0.9, "y", "e1"),
            ("m3", "j1", "d", "High", 0.9, "z", "e1"),
            ("m4", "j1", "e", "High", 0.9, None, "e1"),
        ]),
    )
    out = route_group(g, RouteOptions(per_member_policy=True))
    assert _routes(out) == {("m1", "j1"): "reselect", ("m1", "j2"): "score", ("m2", "j1"): "reselect",
                            ("m3", "j1"): "reuse", ("m4", "j1"): "reselect"}
    # Without a per-member policy only the failed explanation is retried.
    out = route_group(g, RouteOptions(per_member_policy=False))
    assert _routes(out)[("m1", "j1")] == "reuse" and _routes(out)[("m4", "j1")] == "reselect"
    # Without an explainer nothing needs reselecting.
    out = route_group(g, RouteOptions(per_member_policy=False, explainer_enabled=False))
    assert _routes(out)[("m4", "j1")] == "reuse"


def _scored(rows: list[tuple]):
    """rows: (member_id, job_id, label, p_high, route, explanation)."""
    return work_table({
        "member_id": [r[0] for r in rows],
        "job_id": [r[1] for r in rows],
        "fit_label": [r[2] for r in rows],
        "p_high": [r[3] for r in rows],
        "__route": [r[4] for r in rows],
        "explanation": [r[5] for r in rows],
        "explainer_version": ["e0" if r[5] else None for r in rows],
    })


def test_top_n_per_member_by_p_high_then_job_id():
    rows = _scored([
        ("m1", "j3", "High", 0.7, "score", None),
        ("m1", "j1", "High", 0.9, "score", None),
        ("m1", "j2", "High", 0.9, "score", None),
        ("m1", "j4", "Low", 0.95, "score", None),  # not an eligible label
        ("m2", "j1", "Medium", 0.2, "score", None),
    ])
    policy = Policy(labels=("High", "Medium"), top_n_per_member=2, sample_rate=1.0, seed=0)
    out = select_explanations(rows, policy, "e1").to_pylist()
    chosen = {(r["member_id"], r["job_id"]) for r in out if r["__explain"]}
    assert chosen == {("m1", "j1"), ("m1", "j2"), ("m2", "j1")}
    for r in out:
        assert (r["explainer_version"] == "e1") == r["__explain"]


def test_selected_reused_rows_keep_explanations_and_unselected_lose_them():
    rows = _scored([
        ("m1", "j1", "High", 0.9, "reselect", "kept"),  # still top-1: keeps its explanation
        ("m1", "j2", "High", 0.5, "reselect", "old"),  # no longer selected: cleared
        ("m2", "j1", "High", 0.9, "score", None),  # new: explained
    ])
    policy = Policy(labels=("High",), top_n_per_member=1, sample_rate=1.0, seed=0)
    out = {r["job_id"] + r["member_id"]: r for r in select_explanations(rows, policy, "e1").to_pylist()}
    assert out["j1m1"]["explanation"] == "kept" and not out["j1m1"]["__explain"]
    assert out["j1m1"]["explainer_version"] == "e1"
    assert out["j2m1"]["explanation"] is None and out["j2m1"]["explainer_version"] is None
    assert out["j1m2"]["__explain"]


def test_sample_rate_is_deterministic_and_no_explainer_selects_nothing():
    rows = _scored([(f"m{i}", "j1", "High", 0.9, "score", None) for i in range(400)])
    policy = Policy(labels=("High",), top_n_per_member=None, sample_rate=0.25, seed=3)
    a = select_explanations(rows, policy, "e1").column("__explain").to_pylist()
    b = select_explanations(rows, policy, "e1").column("__explain").to_pylist()
    assert a == b and 60 < sum(a) < 140
    none = select_explanations(rows, None, None)
    assert not any(none.column("__explain").to_pylist())
    assert none.column("explainer_version").null_count == 400


def test_as_work_restores_types_and_order():
    import pyarrow as pa

    t = work_table({"member_id": ["m"], "job_id": ["j"]})
    shuffled = t.select(list(reversed(t.column_names)))
    shuffled = shuffled.set_column(shuffled.schema.get_field_index("fit_label"), "fit_label", pa.nulls(1))
    shuffled = shuffled.append_column("member", pa.array([{"a": 1}]))
    out = as_work(shuffled, extra=("member",))
    assert out.schema.names == WORK_SCHEMA.names + ["member"]
    assert out.schema.field("fit_label").type == pa.string()
    assert np.array_equal(out.column("member_id").to_pylist(), ["m"])
