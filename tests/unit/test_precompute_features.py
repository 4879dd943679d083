"""Reading, digests, the member/job index, pair annotation and the content join, without Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.precompute import features
from lantern_batch.precompute.fingerprints import pair_fingerprints, run_fingerprint
from lantern_batch.schema import RowLimits, SchemaError

LIMITS = RowLimits()


def _read(path: str, table_name: str, rows_per_batch: int = 7) -> list[pa.Table]:
    files = io.list_parquet_files(path)
    return [c for i, f in enumerate(files) for c in features.read_file_batches(f, i, table_name, rows_per_batch)]


def _index(path: str, table_name: str):
    blocks = [features.digest_batch(c, table_name, LIMITS) for c in _read(path, table_name)]
    # Blocks arrive in any order in Ray: finalize must not depend on it.
    return features.finalize_index(list(reversed(blocks)), table_name)


def test_read_file_batches_numbers_rows_in_input_order(tiny_world):
    chunks = _read(str(tiny_world / "members"), "members", rows_per_batch=7)
    order = np.concatenate([c.column("__order").to_numpy() for c in chunks])
    n = sum(c.num_rows for c in chunks)
    assert n == io.read_table(str(tiny_world / "members")).num_rows
    assert len(set(order.tolist())) == n and np.all(np.diff(order) > 0)
    assert chunks[0].schema.names[-1] == "__order"


def test_read_file_batches_fails_on_a_missing_column(tmp_path):
    io.write_table(pa.table({"member_id": ["m1"]}), str(tmp_path / "pairs"))
    with pytest.raises(SchemaError, match="job_id"):
        _read(str(tmp_path / "pairs"), "pairs")


def test_index_keeps_first_occurrence_and_counts_rejections(tiny_world_dirty):
    index, rejected = _index(str(tiny_world_dirty / "members"), "members")
    members = io.read_table(str(tiny_world_dirty / "members"))
    ids = members.column("member_id").to_pylist()
    assert index.num_rows == len({i for i in ids if i is not None})
    assert index.column("member_id").to_pylist() == sorted(index.column("member_id").to_pylist())
    dup_ids = {i for i in ids if i is not None and ids.count(i) > 1}
    assert dup_ids and rejected.get("duplicate_id", 0) >= len(dup_ids)
    assert rejected.get("null_id:member_id", 0) == ids.count(None)
    # Good rows have a hash; rejected rows keep their reason, not a hash.
    for r in index.to_pylist():
        assert (r["__hash"] is None) == (r["__reason"] is not None)
    assert sum(rejected.values()) == members.num_rows - sum(r["__reason"] is None for r in index.to_pylist())


def test_annotate_gives_pairs_the_reason_of_their_rejected_member(tiny_world_dirty, tmp_path):
    members = io.read_table(str(tiny_world_dirty / "members"))
    blank = {**members.slice(0, 1).to_pylist()[0], "member_id": "m-blank-title", "current_title": " "}
    members = pa.concat_tables([members, pa.Table.from_pylist([blank], schema=members.schema)])
    io.write_table(members, str(tmp_path / "members"), basename="m.parquet")
    m_index, _ = _index(str(tmp_path / "members"), "members")
    j_index, _ = _index(str(tiny_world_dirty / "jobs"), "jobs")
    bad_member = next(r for r in m_index.to_pylist() if r["__reason"])
    good_member = next(r for r in m_index.to_pylist() if not r["__reason"])
    good_job = next(r for r in j_index.to_pylist() if not r["__reason"])
    pairs = pa.table({
        "member_id": [bad_member["member_id"], "nobody", good_member["member_id"], None, good_member["member_id"]],
        "job_id": [good_job["job_id"], good_job["job_id"], good_job["job_id"], good_job["job_id"], "nojob"],
        "query": [None, None, "data engineer", None, None],
    })
    io.write_table(pairs, str(tmp_path / "pairs"), basename="p.parquet")
    chunk = _read(str(tmp_path / "pairs"), "pairs")[0]
    out = features.annotate_pairs(chunk, m_index, j_index, "run", LIMITS, num_buckets=4).to_pylist()
    assert out[0]["__err_table"] == "members" and out[0]["__err_reason"] == bad_member["__reason"]
    assert out[1]["__err_reason"] == "unknown_member" and out[1]["__err_stage"] == "join"
    assert out[2]["__err_reason"] is None and out[2]["input_fingerprint"]
    assert out[2]["__m_order"] == good_member["__order"] and out[2]["__j_order"] == good_job["__order"]
    assert out[3]["__err_reason"] == "null_id:member_id"
    assert out[4]["__err_reason"] == "unknown_job"
    assert all(0 <= r["__bucket"] < 4 for r in out)
    assert all(r["input_fingerprint"] is None for r in out if r["__err_reason"])


def test_fingerprint_changes_only_for_pairs_of_a_changed_member(tiny_world, tmp_path):
    members = io.read_table(str(tiny_world / "members"))
    summaries = members.column("summary").to_pylist()
    summaries[0] = (summaries[0] or "") + " Now also certified."
    changed = members.set_column(members.schema.get_field_index("summary"), "summary", pa.array(summaries))
    io.write_table(changed, str(tmp_path / "members"), basename="m.parquet")
    j_index, _ = _index(str(tiny_world / "jobs"), "jobs")
    run_fp = run_fingerprint({"classifier": "c"}, {})
    pairs = _read(str(tiny_world / "pairs"), "pairs", rows_per_batch=10_000)[0]
    before = features.annotate_pairs(pairs, _index(str(tiny_world / "members"), "members")[0], j_index, run_fp, LIMITS, 1)
    after = features.annotate_pairs(pairs, _index(str(tmp_path / "members"), "members")[0], j_index, run_fp, LIMITS, 1)
    diff = {m for m, a, b in zip(pairs.column("member_id").to_pylist(), before.column("input_fingerprint").to_pylist(),
                                 after.column("input_fingerprint").to_pylist(), strict=True) if a != b}
    assert diff == {members.column("member_id")[0].as_py()}


def test_content_join_and_stage_inputs(tiny_world):
    m_index, _ = _index(str(tiny_world / "members"), "members")
    j_index, _ = _index(str(tiny_world / "jobs"), "jobs")
    m_chunks = _read(str(tiny_world / "members"), "members")
    j_chunks = _read(str(tiny_world / "jobs"), "jobs")
    m_orders = np.concatenate([c.column("__order").to_numpy() for c in m_chunks])
    needed = np.sort(m_orders[:3])
    members = features.sorted_content([features.content_batch(c, "members", needed) for c in m_chunks], "members")
    assert members.num_rows == 3
    jobs = features.sorted_content([features.content_batch(c, "jobs", None) for c in j_chunks], "jobs")
    from lantern_batch.precompute.route import work_table

    run_fp = "run"
    member = next(r for r in m_index.to_pylist() if r["__order"] == int(needed[1]))
    job = next(r for r in j_index.to_pylist() if r["__order"] == int(jobs.column("__order")[0].as_py()))
    fp = pair_fingerprints([member["__hash"]], [job["__hash"]], ["nurse"], run_fp)[0]
    rows = work_table({
        "member_id": [member["member_id"], "b"], "job_id": [job["job_id"], "y"], "query": ["nurse", None],
        "__m_order": [member["__order"], int(m_orders[-1])],  # the second member was not fetched
        "__j_order": [job["__order"]] * 2,
        "input_fingerprint": [fp, "f"],
        "fit_label": ["High", "Low"],
    })
    joined = features.attach_content(features.attach_content(rows, members, "members"), jobs, "jobs")
    assert joined.column("member").to_pylist()[0]["member_id"] == member["member_id"]
    assert joined.column("member").to_pylist()[1] is None
    assert joined.column("__member_hash").to_pylist() == [member["__hash"], None]
    run = {"run_fp": run_fp}
    cls_in = features.stage_inputs(joined, "classifier", {"max_chars": 400, **run})
    assert not set(features.JOINED_COLUMNS) & set(cls_in.column_names)
    text = cls_in.column("__text").to_pylist()
    assert text[0] and len(text[0]) <= 400 and "nurse" in text[0]
    assert text[1] is None and cls_in.column("__route").to_pylist()[1] == "error"
    assert cls_in.column("__err_reason").to_pylist()[1] == "content_missing"
    exp_in = features.stage_inputs(joined, "explainer", {"member_tokens": 80, "job_tokens": 80, **run})
    messages = json.loads(exp_in.column("__messages").to_pylist()[0])
    assert "High fit" in messages[-1]["content"]
    assert exp_in.column("__messages").to_pylist()[1] is None
    # What the explanation validator grounds the text in travels with the prompt.
    facts = exp_in.column("__facts").to_pylist()
    member = joined.column("member").to_pylist()[0]
    first_facts = json.loads(facts[0])
    assert first_facts["member"]["skills"] == member["skills"]
    assert first_facts["job"]["required_skills"] == joined.column("job").to_pylist()[0]["required_skills"]
    assert facts[1] is None


def test_content_replaced_after_the_digest_is_an_error_row_never_another_rows_content(tiny_world, tmp_path):
    """Issue 13 item 15: the members file is replaced between the digest and the content read."""
    original = io.read_table(str(tiny_world / "members"), table="members")
    members_dir = tmp_path / "members"
    io.write_table(original, str(members_dir), basename="m.parquet")
    m_index, _ = _index(str(members_dir), "members")
    j_index, _ = _index(str(tiny_world / "jobs"), "jobs")
    ids = original.column("member_id").to_pylist()
    job = j_index.column("job_id")[0].as_py()
    # pairs: member 0 (its row will change), 1 (another member will sit at its position),
    # 3 (untouched) and the last (its row will be gone)
    chosen = [ids[0], ids[1], ids[3], ids[-1]]
    io.write_table(pa.table({"member_id": chosen, "job_id": [job] * 4, "query": [None, "nurse", None, None]}),
                   str(tmp_path / "pairs"), basename="p.parquet")
    run_fp = run_fingerprint({"classifier": "c"}, {})
    rows = features.annotate_pairs(_read(str(tmp_path / "pairs"), "pairs")[0], m_index, j_index, run_fp, LIMITS, 1)
    assert rows.column("__err_reason").null_count == 4

    # The file is replaced: row 0 edited, rows 1 and 2 swapped, the last row dropped.
    summaries = original.column("summary").to_pylist()
    summaries[0] = (summaries[0] or "") + " Edited mid-run."
    edited = original.set_column(original.schema.get_field_index("summary"), "summary", pa.array(summaries))
    n = edited.num_rows
    replaced = edited.take(pa.array([0, 2, 1, *range(3, n - 1)]))
    io.write_table(replaced, str(members_dir), basename="m.parquet")

    needed = np.unique(rows.column("__m_order").to_numpy())
    members = features.sorted_content(
        [features.content_batch(c, "members", needed) for c in _read(str(members_dir), "members")], "members")
    jobs = features.sorted_content(
        [features.content_batch(c, "jobs", None) for c in _read(str(tiny_world / "jobs"), "jobs")], "jobs")
    joined = features.attach_content(features.attach_content(rows, members, "members"), jobs, "jobs")
    # the join by position alone hands pair 1 another member's row
    assert joined.column("member").to_pylist()[1]["member_id"] == ids[2]

    want = ["content_changed", "content_changed", None, "content_missing"]
    cls_in = features.stage_inputs(joined, "classifier", {"max_chars": 400, "run_fp": run_fp})
    assert cls_in.column("__err_reason").to_pylist() == want
    assert cls_in.column("__route").to_pylist()[:2] == ["error", "error"]
    assert cls_in.column("__err_stage").to_pylist()[:2] == ["join", "join"]
    assert all(d and "changed after the digest" in d for d in cls_in.column("__err_detail").to_pylist()[:2])
    texts = cls_in.column("__text").to_pylist()
    assert [t is not None for t in texts] == [False, False, True, False]
    exp_in = features.stage_inputs(joined.set_column(joined.schema.get_field_index("fit_label"), "fit_label",
                                                     pa.array(["High"] * 4)),
                                   "explainer", {"member_tokens": 80, "job_tokens": 80, "run_fp": run_fp})
    assert exp_in.column("__err_reason").to_pylist() == want
    assert [m is not None for m in exp_in.column("__messages").to_pylist()] == [False, False, True, False]
    assert [f is not None for f in exp_in.column("__facts").to_pylist()] == [False, False, True, False]
    # what was read a second time is checked, not trusted: a different run fingerprint fails all
    other = features.stage_inputs(joined, "classifier", {"max_chars": 400, "run_fp": "another run"})
    assert set(other.column("__err_reason").to_pylist()) == {"content_changed", "content_missing"}
