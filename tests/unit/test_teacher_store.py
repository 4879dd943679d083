"""Commit markers, resume sets, stale rows and clean-up of files left by a killed run."""

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lantern_batch.errors import InputError
from lantern_batch.policy import pair_id
from lantern_batch.schema import ERRORS_SCHEMA, TEACHER_LABELS_SCHEMA
from lantern_batch.teacher import store


def _batch(keys, stages, reasons):
    return store.marker_rows(keys, stages, reasons)


def test_batch_id_is_deterministic_and_order_free():
    a = store.batch_id(["k1", "k2"], "t", "v1")
    assert a == store.batch_id(["k2", "k1"], "t", "v1")
    assert a != store.batch_id(["k1", "k2"], "t", "v2") and len(a) == 24


def test_commit_then_resume_sets_and_totals(tmp_path):
    out = str(tmp_path)
    markers = store.marker_rows(["p1#0", "p2#0", "p3#1"], [None, "teacher", "dedup"],
                                [None, "over_context", "duplicate_pair"], [100, 3000, 0], [40, 0, 0],
                                input_fingerprints=["f1", "f2", None], teacher_version="tv1")
    bid = store.commit_batch(out, "t", "v1", TEACHER_LABELS_SCHEMA.empty_table(), ERRORS_SCHEMA.empty_table(), markers)
    assert (tmp_path / "_commits" / "teacher=t" / "prompt_version=v1" / f"{bid}.parquet").is_file()
    done, inputs = store.load_done(out, "t", "v1", "tv1")
    assert done == {"p1#0": "f1", "p2#0": "f2"} and inputs == {"p3#1"}
    other_done, other_inputs = store.load_done(out, "u", "v1", "tv1")
    assert other_done == {} and other_inputs == {"p3#1"}  # input errors are written once
    assert store.load_done(out, "t", "v2", "tv1")[0] == {}
    # Another model or other sampling settings: nothing of this teacher counts as done.
    assert store.load_done(out, "t", "v1", "tv2") == ({}, frozenset({"p3#1"}))
    totals = store.output_totals(out, [("t", "v1")])
    assert totals["teachers"]["t"] == {"prompt_version": "v1", "labelled": 1, "errors": 1,
                                       "errors_by_reason": {"over_context": 1},
                                       "prompt_tokens": 3100, "output_tokens": 40}
    assert totals["input_errors_by_reason"] == {"duplicate_pair": 1}


def test_clean_orphans_deletes_only_uncommitted_part_files(tmp_path):
    out = str(tmp_path)
    labels = pa.Table.from_pylist([], schema=TEACHER_LABELS_SCHEMA)
    bid = store.commit_batch(out, "t", "v1", labels, ERRORS_SCHEMA.empty_table(), _batch(["a#0"], [None], [None]))
    kept = tmp_path / "labels" / "teacher=t" / f"part-{bid}.parquet"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(b"committed")
    orphan = tmp_path / "labels" / "teacher=t" / ("part-" + "f" * 24 + ".parquet")
    orphan.write_bytes(b"partial")
    orphan_err = tmp_path / "errors" / ("part-" + "e" * 24 + ".parquet")
    orphan_err.parent.mkdir(parents=True, exist_ok=True)
    orphan_err.write_bytes(b"partial")
    side = tmp_path / "errors" / "part-input-members.parquet"
    side.write_bytes(b"side table errors")
    deleted = store.clean_orphans(out)
    assert sorted(deleted) == sorted([str(orphan), str(orphan_err)])
    assert kept.exists() and side.exists() and not orphan.exists()


def test_a_row_is_skipped_only_while_its_content_is_unchanged():
    done = {"a#0": "fa", "b#0": "fb"}
    inputs = frozenset({"c#1"})
    assert store.skipped("a#0", "fa", done, inputs)
    assert not store.skipped("a#0", "fa-changed", done, inputs)  # the member or job changed: relabel
    assert not store.skipped("a#0", None, done, inputs)  # no longer joinable: processed again
    assert not store.skipped("d#0", "fd", done, inputs)
    assert store.skipped("c#1", None, done, inputs)  # input errors are keyed by row


def test_teacher_version_covers_model_prompt_and_settings():
    base = store.teacher_version("m1", "v3", {"sampling_params": {"temperature": 0.0}})
    assert base == store.teacher_version("m1", "v3", {"sampling_params": {"temperature": 0.0}})
    assert len({base, store.teacher_version("m2", "v3", {"sampling_params": {"temperature": 0.0}}),
                store.teacher_version("m1", "v2", {"sampling_params": {"temperature": 0.0}}),
                store.teacher_version("m1", "v3", {"sampling_params": {"temperature": 0.7}})}) == 4


def _labels(pids):
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return pa.Table.from_pylist([{"pair_id": p, "member_id": f"m-{p}", "job_id": f"j-{p}", "teacher": "t",
                                  "fit_label": "High", "p_high": 1.0, "p_medium": 0.0, "p_low": 0.0,
                                  "prompt_version": "v3", "model_ref": "m", "input_fingerprint": f"f-{p}",
                                  "created_at": now} for p in pids], schema=TEACHER_LABELS_SCHEMA)


def _errors(rows):
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return pa.Table.from_pylist([{"member_id": m, "job_id": j, "table": "pairs", "stage": stage, "reason": reason,
                                  "detail": None, "created_at": now} for m, j, stage, reason in rows],
                                schema=ERRORS_SCHEMA)


def _committed_batch(out, version="tv1"):
    """One batch: labels for a, b, c; a teacher error for d; a duplicate copy of a (input error)."""
    a, b, c, d = (pair_id(f"m-{x}", f"j-{x}") for x in "abcd")
    labels = _labels([a, b, c])
    errors = _errors([("m-d", "j-d", "teacher", "over_context"), ("m-a", "j-a", "dedup", "duplicate_pair")])
    keys = [f"{a}#0", f"{b}#0", f"{c}#0", f"{d}#0", f"{a}#1"]
    markers = store.marker_rows(keys, [None, None, None, "teacher", "dedup"],
                                [None, None, None, "over_context", "duplicate_pair"],
                                input_fingerprints=["fa", "fb", "fc", "fd", None], teacher_version=version)
    bid = store.commit_batch(out, "t", "v3", labels, errors, markers)
    return bid, (a, b, c, d), keys


def _read(path):
    return pq.read_table(str(path)).to_pylist() if path.exists() else []


def test_retire_stale_removes_changed_pairs_from_labels_errors_and_markers(tmp_path):
    out = str(tmp_path)
    bid, (a, b, c, d), keys = _committed_batch(out)
    counts = store.retire_stale(out, "t", "v3", "tv1", changed={keys[1], keys[3]})  # b and d changed
    assert counts == {"rows": 2, "batches": 1}
    labels = tmp_path / "labels" / "teacher=t" / f"part-{bid}.parquet"
    assert sorted(r["pair_id"] for r in _read(labels)) == sorted([a, c])
    errors = _read(tmp_path / "errors" / f"part-{bid}.parquet")
    assert [(e["member_id"], e["stage"]) for e in errors] == [("m-a", "dedup")]  # the input error stays
    done, inputs = store.load_done(out, "t", "v3", "tv1")
    assert done == {keys[0]: "fa", keys[2]: "fc"} and inputs == {keys[4]}
    assert store.retire_stale(out, "t", "v3", "tv1", changed=set()) == {"rows": 0, "batches": 0}


def test_retire_stale_drops_every_row_of_another_teacher_version(tmp_path):
    out = str(tmp_path)
    bid, _, keys = _committed_batch(out, version="old-model")
    counts = store.retire_stale(out, "t", "v3", "new-model", changed=set())
    assert counts == {"rows": 4, "batches": 1}  # a..d: labels of the old model, pairs in the input or not
    assert not (tmp_path / "labels" / "teacher=t" / f"part-{bid}.parquet").exists()
    assert [e["stage"] for e in _read(tmp_path / "errors" / f"part-{bid}.parquet")] == ["dedup"]
    assert store.load_done(out, "t", "v3", "new-model") == ({}, frozenset({keys[4]}))


def test_retire_stale_finishes_a_retirement_a_killed_run_left_half_done(tmp_path, monkeypatch):
    out = str(tmp_path)
    bid, (a, b, c, d), keys = _committed_batch(out)
    real = store._filter_batch_files

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # killed after the marker said "retired", before the data files changed

    monkeypatch.setattr(store, "_filter_batch_files", killed)
    with pytest.raises(KeyboardInterrupt):
        store.retire_stale(out, "t", "v3", "tv1", changed={keys[0]})
    monkeypatch.setattr(store, "_filter_batch_files", real)
    # The retired row no longer counts as done, even if its content is unchanged by the next run.
    assert keys[0] not in store.load_done(out, "t", "v3", "tv1")[0]
    assert store.retire_stale(out, "t", "v3", "tv1", changed=set()) == {"rows": 1, "batches": 1}
    labels = tmp_path / "labels" / "teacher=t" / f"part-{bid}.parquet"
    assert sorted(r["pair_id"] for r in _read(labels)) == sorted([b, c])
    assert "retired" not in pq.read_table(str(tmp_path / "_commits" / "teacher=t" / "prompt_version=v3"
                                              / f"{bid}.parquet")).column("kind").to_pylist()


def test_markers_without_fingerprints_are_stale(tmp_path):
    """Markers written before resume keyed on content say nothing about it: relabel those rows."""
    out = str(tmp_path)
    old = pa.table({"row_key": ["a#0", "b#1"], "kind": ["teacher", "input"], "outcome": ["labelled", "duplicate_pair"],
                    "prompt_tokens": [1, 0], "output_tokens": [1, 0]})
    store.commit_batch(out, "t", "v3", TEACHER_LABELS_SCHEMA.empty_table(), ERRORS_SCHEMA.empty_table(), old)
    assert store.load_done(out, "t", "v3", "tv1") == ({}, frozenset({"b#1"}))
    assert store.retire_stale(out, "t", "v3", "tv1", changed=set())["rows"] == 1


@pytest.mark.parametrize("configured, found, expected", [
    (None, ["v3"], "v3"), ("v3", ["v2", "v3"], "v3"), (None, [], None), ("v3", [], "v3"),
])
def test_choose_prompt_version(configured, found, expected):
    assert store.choose_prompt_version(found, configured, "labels at x") == expected


def test_choose_prompt_version_refuses_to_mix_or_guess():
    with pytest.raises(InputError, match=r"several prompt versions \(v2, v3\).*prompt_version"):
        store.choose_prompt_version(["v2", "v3"], None, "labels at x")
    with pytest.raises(InputError, match=r"no rows of prompt version 'v4' \(found: v2, v3\)"):
        store.choose_prompt_version(["v2", "v3"], "v4", "labels at x")


def test_a_teachers_output_settings_change_its_version_and_speed_settings_do_not():
    from lantern_batch.teacher.config import SynthesizeConfig
    from lantern_batch.teacher.job import output_settings

    def version(**sets):
        cfg = SynthesizeConfig.model_validate(sets)
        return store.teacher_version("m1", cfg.teachers[0].prompt_version, output_settings(cfg, cfg.teachers[0]))

    base = version()
    assert base == version()
    changed = {
        "temperature": version(vllm={"sampling_params": {"temperature": 0.7, "max_tokens": 192}}),
        "max_tokens": version(vllm={"sampling_params": {"temperature": 0.0, "max_tokens": 64}}),
        "retry": version(vllm={"retry_sampling_params": {"temperature": 0.9}}),
        "dtype": version(vllm={"engine_kwargs": {"dtype": "float32", "max_model_len": 3072}}),
        "max_model_len": version(vllm={"engine_kwargs": {"dtype": "auto", "max_model_len": 1024}}),
        "teacher sampling": version(teachers=[{"name": "smollm2", "sampling_params": {"temperature": 0.3}}]),
        "prompt budget": version(prompt={"member_tokens": 100}),
        "schema cap": version(prompt={"max_explanation_chars": 500}),
        "topk": version(topk=5),
    }
    assert all(v != base for v in changed.values()), [k for k, v in changed.items() if v == base]
    assert len(set(changed.values())) == len(changed)
    same = [version(vllm={"batch_size": 4, "concurrency": 2, "num_cpus": 2}), version(join_batch_size=64),
            version(vllm={"engine_kwargs": {"dtype": "auto", "max_model_len": 3072, "enable_prefix_caching": False,
                                            "kv_cache_memory_bytes": 1 << 28}}),
            version(sample_fraction=0.5), version(teachers=[{"name": "smollm2", "weight": 0.5}])]
    assert set(same) == {base}
