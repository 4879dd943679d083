"""The tombstone filters and their call sites: precompute (pairs become id-less ``forgotten``
error rows; previous-ds rows of forgotten members are never reused), synthesize (pairs skipped
and counted), fail-closed loading, and the black-box cache's per-member layout. No Ray."""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lantern_batch import io
from lantern_batch.errors import InputError
from lantern_batch.forget import tombstones as tb
from lantern_batch.precompute import features, pipeline
from lantern_batch.precompute import manifest as mf
from lantern_batch.precompute.route import RouteOptions, route_group
from lantern_batch.schema import SCORES_SCHEMA, RowLimits
from tests.fixtures.forget import KEY

LIMITS = RowLimits()
K = KEY.encode()


def _filter(ids) -> tb.ForgetFilter:
    return tb.ForgetFilter(K, frozenset(tb.member_hash(K, i) for i in ids))


def _forgotten_member(world) -> tuple[str, int]:
    counts = collections.Counter(io.read_table(str(world / "pairs")).column("member_id").to_pylist())
    member, n = counts.most_common(1)[0]
    assert n >= 2
    return member, n


def test_mask_matches_by_keyed_hash_only():
    f = _filter(["a", "c"])
    assert f and len(f) == 2 and not tb.EMPTY
    assert f.mask(pa.array(["a", None, "b", "c", "a"])).tolist() == [True, False, False, True, True]
    assert f.mask(pa.chunked_array([["c"], ["d"]])).tolist() == [True, False]
    assert tb.EMPTY.mask(["a"]).tolist() == [False]
    other = tb.ForgetFilter(b"another-key-0123456789", f.hashes)
    assert not other.mask(["a", "c"]).any()  # the hashes mean nothing without their key
    assert tb.member_hash(K, "a") != tb.member_hash(b"another-key-0123456789", "a")


def test_loading_fails_closed(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    monkeypatch.delenv(tb.KEY_ENV, raising=False)
    assert tb.load_filter(out) is tb.EMPTY  # no tombstones: nothing needed, nothing changes
    central = str(tmp_path / "central")
    tb.write_tombstone(central, [tb.member_hash(K, "m1")], tb.key_id(K), "f1")
    assert tb.load_filter(out) is tb.EMPTY
    with pytest.raises(InputError, match=tb.KEY_ENV):
        tb.load_filter(out, central)  # tombstones and no key: stop, do not bring them back
    monkeypatch.setenv(tb.KEY_ENV, "another-key-0123456789")
    with pytest.raises(InputError, match="another key"):
        tb.load_filter(out, central)
    monkeypatch.setenv(tb.KEY_ENV, "short")
    with pytest.raises(InputError, match="shorter"):
        tb.load_filter(out, central)
    monkeypatch.setenv(tb.KEY_ENV, KEY)
    tb.write_tombstone(io.join(out, tb.TOMBSTONE_DIR), [tb.member_hash(K, "m2")], tb.key_id(K), "f2")
    f = tb.load_filter(out, central)
    assert f.mask(["m1", "m2", "m3"]).tolist() == [True, True, False]
    t = io.read_table(io.join(out, tb.TOMBSTONE_DIR))
    assert "m2" not in str(t.to_pylist())  # hashes, never ids


# --------------------------------------------------------------------------- precompute


def _index(path: str, table_name: str):
    files = io.list_parquet_files(path)
    blocks = [features.digest_batch(c, table_name, LIMITS)
              for i, f in enumerate(files) for c in features.read_file_batches(f, i, table_name, 1000)]
    return features.finalize_index(blocks, table_name)[0]


def _previous_partition(annotated: pa.Table) -> pa.Table:
    """The previous ds as precompute would have published it: every good pair scored."""
    good = annotated.filter(pc.is_null(annotated.column("__err_reason")))
    n = good.num_rows
    return pa.Table.from_pydict({
        "member_id": good.column("member_id"), "job_id": good.column("job_id"),
        "fit_label": ["High"] * n, "p_high": [0.8] * n, "p_medium": [0.1] * n, "p_low": [0.1] * n,
        "explanation": [None] * n, "classifier_version": ["cls-1"] * n, "explainer_version": [None] * n,
        "input_fingerprint": good.column("input_fingerprint"), "scored_at": pa.array([0] * n, pa.timestamp("us", tz="UTC")),
    }, schema=SCORES_SCHEMA)


def test_precompute_forgets_pairs_and_never_reuses_their_previous_rows(tiny_world):
    member, n = _forgotten_member(tiny_world)
    forgotten = _filter([member])
    m_index, j_index = _index(str(tiny_world / "members"), "members"), _index(str(tiny_world / "jobs"), "jobs")
    (chunk,) = list(features.read_file_batches(io.list_parquet_files(str(tiny_world / "pairs"))[0], 0, "pairs", 10_000))

    # The call site: the pipeline's annotate step marks the pairs, its previous-ds step drops rows.
    work = pipeline._annotate(chunk, m_index, j_index, "run", LIMITS, 2, forgotten)
    plain = pipeline._annotate(chunk, m_index, j_index, "run", LIMITS, 2)
    assert work.schema.equals(plain.schema) and work.num_rows == chunk.num_rows
    marked = work.filter(pc.equal(work.column("__err_reason"), tb.FORGOTTEN))
    assert marked.num_rows == n
    for col in ("member_id", "job_id", "query", "input_fingerprint", "__m_order", "__j_order"):
        assert marked.column(col).null_count == n, col
    assert set(marked.column("__err_stage").to_pylist()) == {"forget"}
    assert member not in work.column("member_id").to_pylist()
    # Rows of other members are untouched.
    others = pc.invert(pc.equal(pc.fill_null(plain.column("member_id"), ""), member))
    assert work.filter(pc.invert(pc.equal(pc.fill_null(work.column("__err_reason"), ""), tb.FORGOTTEN))) \
        .equals(plain.filter(others))

    previous = _previous_partition(plain)
    assert member in previous.column("member_id").to_pylist()
    prev = pipeline._prev(previous, 2, forgotten)
    assert member not in prev.column("member_id").to_pylist()
    assert prev.num_rows == previous.num_rows - n

    # Routing with incremental reuse: everyone else is reused, the member is an error row, and
    # the partition's counts still conserve.
    routed = pa.concat_tables([route_group(g, RouteOptions(incremental=True, explainer_enabled=False))
                               for g in _buckets(pa.concat_tables([work, prev]))])
    routes = collections.Counter(routed.column("__route").to_pylist())
    assert routes == {"reuse": chunk.num_rows - n, "error": n}
    assert member not in routed.column("member_id").to_pylist()
    errors = mf.errors_table(routed.filter(pc.equal(routed.column("__route"), "error")))
    assert errors.column("reason").to_pylist() == [tb.FORGOTTEN] * n
    assert errors.column("member_id").null_count == errors.column("job_id").null_count == n
    counts = mf.batch_counts(routed)
    assert counts["errors_by_reason"] == {"pairs/forget/forgotten": n}
    assert counts["rows_reused"] + counts["rows_scored"] + counts["rows_error"] == chunk.num_rows


def _buckets(table: pa.Table):
    for b in sorted(set(table.column("__bucket").to_pylist())):
        yield table.filter(pc.equal(table.column("__bucket"), b))


def test_the_precompute_job_hands_the_tombstones_to_the_pipeline(tmp_path, monkeypatch):
    from lantern_batch.precompute import job
    from lantern_batch.precompute.config import PrecomputeConfig

    captured = []

    class FakePipeline:
        def __init__(self, spec):
            captured.append(spec)

        def run(self):
            return "ran"

    monkeypatch.setattr(pipeline, "Pipeline", FakePipeline)
    cfg = PrecomputeConfig(out=str(tmp_path / "pre"), tombstones=str(tmp_path / "central"))
    files = {"members": [], "jobs": [], "pairs": []}

    def call():
        return job._pipeline(cfg, "r1", "2026-11-24", files, 0, [], "s", "e", None, None, None, "fp", {}, "d")

    monkeypatch.delenv(tb.KEY_ENV, raising=False)
    assert call() == "ran" and not captured[-1].forgotten  # no tombstones: the empty filter
    tb.write_tombstone(str(tmp_path / "central"), [tb.member_hash(K, "m1")], tb.key_id(K), "f1")
    with pytest.raises(InputError, match=tb.KEY_ENV):
        call()
    monkeypatch.setenv(tb.KEY_ENV, KEY)
    assert call() == "ran" and captured[-1].forgotten.mask(["m1", "m2"]).tolist() == [True, False]


# --------------------------------------------------------------------------- synthesize


def test_synthesize_skips_and_counts_forgotten_pairs(tiny_world, tmp_path):
    from lantern_batch.teacher import job as teacher_job
    from lantern_batch.teacher.inputs import (
        PairJoiner,
        content_index,
        pair_read_tasks,
        prepare_side_table,
        read_pairs_batch,
    )

    member, n = _forgotten_member(tiny_world)
    forgotten = _filter([member])
    members, bad_m, _ = prepare_side_table(str(tiny_world / "members"), "members", LIMITS, str(tmp_path / "e"))
    jobs, bad_j, _ = prepare_side_table(str(tiny_world / "jobs"), "jobs", LIMITS, str(tmp_path / "e"))
    tasks = pair_read_tasks(str(tiny_world / "pairs"))
    for fraction, skip in ((1.0, frozenset()), (0.5, None)):
        if skip is None:  # some rows done already, of the member and of others
            everything = pa.concat_tables([read_pairs_batch(pa.Table.from_pylist([t.__dict__])) for t in tasks])
            from lantern_batch.teacher.inputs import pair_ids, row_keys

            keys = row_keys(pair_ids(everything.column("member_id").to_pylist(), everything.column("job_id").to_pylist()),
                            everything.column("_order").to_numpy(), {})
            skip = frozenset(keys[::3])
        copy_index, skip_keys, _, scan = teacher_job._scan(tasks, fraction, skip, {}, {}, {}, forgotten)
        assert scan["forgotten"] > 0
        joiner = PairJoiner(members, jobs, bad_m, bad_j, copy_index, skip_keys, fraction, LIMITS)
        joined = []
        for t in tasks:
            batch = tb.drop_forgotten_pairs(read_pairs_batch(pa.Table.from_pylist([t.__dict__])), forgotten)
            assert member not in batch.column("member_id").to_pylist()
            joined.append(joiner(batch))
        joined = pa.concat_tables(joined)
        assert member not in joined.column("member_id").to_pylist()
        # Conservation of the pass: every row processed, not sampled, done, or forgotten.
        assert joined.num_rows + scan["not_sampled"] + scan["skipped_done"] + scan["forgotten"] == scan["rows_in"]
    scan = teacher_job._scan(tasks, 1.0, frozenset(), {}, {}, {}, forgotten)[3]
    assert scan["forgotten"] == n
    assert teacher_job._scan(tasks, 1.0, frozenset(), {}, {}, {})[3]["forgotten"] == 0
    # With the content-keyed resume: a forgotten member's pair labelled from the same content is
    # skipped as done (counted there, not again as forgotten); one whose content changed is not
    # done any more, so it is forgotten (and its stale label retired as for any changed pair).
    hashes = (content_index(members, "members"), content_index(jobs, "jobs"))
    first = PairJoiner(members, jobs, bad_m, bad_j, teacher_job._scan(tasks, 1.0, frozenset(), {}, {}, {})[0],
                       frozenset(), 1.0, LIMITS)
    first = pa.concat_tables([first(read_pairs_batch(pa.Table.from_pylist([t.__dict__]))) for t in tasks])
    good = first.filter(pc.is_null(first.column("_err_reason")))
    done = dict(zip(good.column("_row_key").to_pylist(), good.column("input_fingerprint").to_pylist(), strict=True))
    mine = {k for k, m in zip(good.column("_row_key").to_pylist(), good.column("member_id").to_pylist(), strict=True)
            if m == member}
    assert mine
    _, _, changed, scan = teacher_job._scan(tasks, 1.0, frozenset(), done, *hashes, forgotten)
    assert scan["skipped_done"] == len(done) and not changed and scan["forgotten"] == n - len(mine)
    stale = {k: ("0" * 32 if k in mine else fp) for k, fp in done.items()}
    _, _, changed, scan = teacher_job._scan(tasks, 1.0, frozenset(), stale, *hashes, forgotten)
    assert changed == mine and scan["changed_done"] == len(mine) and scan["forgotten"] == n


def test_synthesize_refuses_to_run_on_tombstones_without_the_key(tiny_world, tmp_path, monkeypatch):
    from lantern_batch.teacher import job as teacher_job
    from lantern_batch.teacher.config import SynthesizeConfig

    out = str(tmp_path / "synth")
    tb.write_tombstone(io.join(out, tb.TOMBSTONE_DIR), [tb.member_hash(K, "m1")], tb.key_id(K), "f1")
    cfg = SynthesizeConfig(out=out, inputs={"members": str(tiny_world / "members"), "jobs": str(tiny_world / "jobs"),
                                            "pairs": str(tiny_world / "pairs")})
    monkeypatch.delenv(tb.KEY_ENV, raising=False)
    with pytest.raises(InputError, match=tb.KEY_ENV):
        teacher_job.run(cfg)
    assert not io.exists(io.join(out, "_locks"))  # before the lock and before Ray


# --------------------------------------------------------------------------- black-box cache


def test_the_response_cache_keeps_one_directory_per_member(tmp_path):
    from lantern_batch.teacher.blackbox import ResponseCache, member_cache_dir

    cache = ResponseCache(str(tmp_path / "c"), "http://e/v1")
    resp = {"choices": [{"message": {"content": "{}"}}]}
    key = cache.key({"model": "m", "x": 1})
    cache.put(key, resp, member_id="mem-1")
    d = tmp_path / "c" / member_cache_dir("mem-1")
    assert (d / f"{key}.json").is_file() and "mem-1" not in str(d)
    assert cache.get(key, "mem-1") == resp and cache.get(key, "mem-2") is None
    legacy = cache.key({"model": "m", "x": 2})
    cache.put(legacy, resp)  # the flat layout of earlier runs is still read
    assert (tmp_path / "c" / legacy[:2] / f"{legacy}.json").is_file()
    assert cache.get(legacy, "mem-1") == resp
    assert member_cache_dir("a") != member_cache_dir("b")
