"""Training-example preparation without Ray: column checks, row checks with reasons, the split,
seed rows, the broadcast-join stage, the explanation and score checks of the text tasks, the
rejected-row summary and the fingerprint hashes."""

import math

import numpy as np
import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.distill.data import (
    LABEL_ROW_SCHEMA,
    ExampleStage,
    TeacherLabelsError,
    check_columns,
    dimension_scores_json,
    error_table,
    heldout_mask,
    keep_prompt_version,
    label_row_reasons,
    label_source,
    prepare_examples,
    resolve_teacher_labels,
    row_hash_columns,
    seed_rows,
    teacher_label_rows,
)
from lantern_batch.schema import ERRORS_SCHEMA, MEMBERS_SCHEMA, TEACHER_LABELS_SCHEMA
from tests.unit.test_quality import GOOD, JOB, MEMBER


def _labels(rows: list[dict]) -> pa.Table:
    full = [{"pair_id": "p", "teacher": "t", **r} for r in rows]
    return pa.Table.from_pylist(full, schema=TEACHER_LABELS_SCHEMA)


def _row(label="High", p=(0.7, 0.2, 0.1), member="m1", job="j1", explanation="Because.", **extra):
    return {"member_id": member, "job_id": job, "fit_label": label, "p_high": p[0], "p_medium": p[1],
            "p_low": p[2], "explanation": explanation, **extra}


def test_missing_column_fails_at_once_naming_table_column_and_task(tmp_path):
    table = _labels([_row()]).drop_columns(["p_medium"])
    io.write_table(table, str(tmp_path / "labels" / "teacher=t"))
    path = resolve_teacher_labels(str(tmp_path))
    with pytest.raises(TeacherLabelsError, match=r"table 'teacher_labels'.*column 'p_medium' is missing.*classifier"):
        check_columns("teacher_labels", path, ("member_id", "job_id", "fit_label", "p_high", "p_medium", "p_low"), "classifier")
    # prepare_examples checks before any row is read (and before Ray is needed).
    from lantern_batch.config import InputTables
    from lantern_batch.distill.config import DataSettings

    with pytest.raises(TeacherLabelsError, match="p_medium"):
        prepare_examples(task="classifier", inputs=InputTables(), data=DataSettings(teacher_labels=str(tmp_path), seed=None),
                         work_dir=str(tmp_path / "w"), builder=object, builder_kwargs={}, schema=pa.schema([]),
                         hash_fields=(), settings_for_fingerprint={})
    assert TeacherLabelsError("teacher_labels", "x", "classifier", "p").exit_code == 2


def test_resolve_teacher_labels_prefers_fused_and_needs_a_choice_between_teachers(tmp_path):
    io.write_table(_labels([_row()]), str(tmp_path / "labels" / "teacher=a"))
    assert resolve_teacher_labels(str(tmp_path)).endswith("teacher=a")
    io.write_table(_labels([_row()]), str(tmp_path / "labels" / "teacher=b"))
    from lantern_batch.errors import InputError

    with pytest.raises(InputError, match="several teachers"):
        resolve_teacher_labels(str(tmp_path))
    assert resolve_teacher_labels(str(tmp_path), teacher="b").endswith("teacher=b")
    io.write_table(_labels([_row()]), str(tmp_path / "fused"))
    # A fused table without its marker is half-written (a run stopped while fusing): an error.
    with pytest.raises(InputError, match="_SUCCESS"):
        resolve_teacher_labels(str(tmp_path))
    (tmp_path / "fused" / "_SUCCESS").write_text('{"teachers": []}')
    assert resolve_teacher_labels(str(tmp_path)).endswith("fused")
    with pytest.raises(InputError, match="no Parquet"):
        resolve_teacher_labels(str(tmp_path / "nothing"))


def test_row_reasons_for_labels_and_probabilities():
    table = _labels([
        _row(),
        _row(label="Great"),
        _row(p=(0.7, 0.2, 0.3)),  # sums to 1.2
        _row(p=(0.7, None, 0.3)),
        _row(p=(1.2, -0.1, -0.1)),
        _row(p=(0.5, float("nan"), 0.5)),
        _row(member=None),
        _row(p=(0.3334, 0.3333, 0.3333)),  # within tolerance
    ])
    reasons = label_row_reasons(table, "classifier").tolist()
    assert reasons == [None, "invalid_label:fit_label", "probabilities_do_not_sum_to_1", "bad_probabilities",
                       "bad_probabilities", "bad_probabilities", "null_id:member_id", None]


def test_explainer_checks_text_and_topk_alignment():
    table = _labels([
        _row(explanation_token_ids=[1, 2], topk_ids=[[1, 3], [2, 4]], topk_logprobs=[[-0.1, -2.0], [-0.2, -1.9]]),
        _row(explanation="  "),
        _row(explanation_token_ids=[1, 2], topk_ids=[[1, 3]], topk_logprobs=[[-0.1, -2.0]]),
        _row(p=(None, None, None)),  # the explainer does not need probabilities
    ])
    assert label_row_reasons(table, "explainer").tolist() == [
        None, "empty_text:explanation", "topk_length_mismatch", None]


def test_heldout_split_is_stable_and_near_the_fraction():
    members = [f"m{i}" for i in range(4000)]
    jobs = [f"j{i % 97}" for i in range(4000)]
    a = heldout_mask(members, jobs, 0.1)
    assert np.array_equal(a, heldout_mask(members, jobs, 0.1))
    assert 0.08 < a.mean() < 0.12
    assert not heldout_mask(members, jobs, 0.0).any()
    assert not np.array_equal(a, heldout_mask(members, jobs, 0.1, salt="other"))


def test_teacher_and_seed_rows_share_one_layout():
    t = teacher_label_rows(_labels([_row(), _row(label="Nope")]), "classifier", 0.0, "s")
    assert t.schema == LABEL_ROW_SCHEMA
    assert t.column("reason").to_pylist() == [None, "invalid_label:fit_label"]
    assert t.column("source").to_pylist() == ["t", "t"]
    seed = pa.table({"member_id": ["m1", "m2"], "job_id": ["j1", "j2"], "fit_label": ["Medium", "Bad"],
                     "dimension_scores": pa.array([{"skills": 3.0}, None], pa.struct([("skills", pa.float32())])),
                     "explanation": ["ok", "ok"]})
    s = seed_rows(seed, "classifier", 2.0, 0.0, "s")
    assert s.schema == LABEL_ROW_SCHEMA
    assert [s.column(c)[0].as_py() for c in ("p_high", "p_medium", "p_low")] == [0.0, 1.0, 0.0]
    assert s.column("weight").to_pylist() == [2.0, 2.0] and s.column("source").to_pylist() == ["seed", "seed"]
    assert s.column("reason").to_pylist() == [None, "invalid_label:fit_label"]
    sft = seed_rows(seed, "teacher_sft", 1.0, 0.0, "s")
    assert sft.column("reason").to_pylist() == [None, "invalid_label:fit_label"]
    assert dimension_scores_json(s.column("dimension_scores")[0].as_py()) == {
        "skills": 3, "seniority": 0, "experience": 0, "domain": 0, "location": 0, "education": 0}


class _EchoBuilder:
    def __init__(self, suffix: str):
        self.suffix = suffix

    def __call__(self, table: pa.Table) -> pa.Table:
        titles = [m["current_title"] + self.suffix for m in table.column("member").to_pylist()]
        return pa.table({"member_id": table.column("member_id"), "job_id": table.column("job_id"),
                         "text": pa.array(titles), "source": table.column("source"),
                         "heldout": table.column("heldout")})


def test_example_stage_joins_builds_and_passes_bad_rows_through(ray_free_lookups):
    schema = pa.schema([("member_id", pa.string()), ("job_id", pa.string()), ("text", pa.string()),
                        ("source", pa.string()), ("heldout", pa.bool_())])
    stage = ExampleStage(_EchoBuilder, {"suffix": "!"}, schema, ("member_id", "text"), lookups=ray_free_lookups)
    rows = teacher_label_rows(_labels([_row(), _row(member="m-missing"), _row(label="Bad"), _row(job="j-gone")]),
                              "classifier", 0.0, "s")
    out = stage(rows)
    assert out.num_rows == 4  # every input row leaves as one output row
    assert out.column("reason").to_pylist() == [None, "unknown_member", "invalid_label:fit_label", "unknown_job"]
    assert out.column("text").to_pylist() == ["Engineer!", None, None, None]
    assert {"_hash_lo", "_hash_hi"} <= set(out.column_names)
    errs = error_table(out.filter(out.column("reason").is_valid()))
    assert errs.schema == ERRORS_SCHEMA and errs.num_rows == 3
    assert errs.column("stage").to_pylist() == ["distill"] * 3


@pytest.fixture
def ray_free_lookups(monkeypatch):
    """ExampleStage's lookups without Ray: ``ray.get`` returns the object itself."""
    import ray

    from lantern_batch.distill.data import pack_entities, pair_queries

    monkeypatch.setattr(ray, "get", lambda x: x)
    members = pa.table({"member_id": ["m1"], "current_title": ["Engineer"], "skills": [["Python"]]})
    jobs = pa.table({"job_id": ["j1"], "title": ["Dev"], "description": ["Build things."]})
    pairs = pa.table({"member_id": ["m1", "m1"], "job_id": ["j1", "j1"], "query": ["first", "dup"]})
    return {"members": pack_entities(members, "member_id", "member", "members"),
            "jobs": pack_entities(jobs, "job_id", "job", "jobs"), "pairs": pair_queries(pairs)}


def test_row_hashes_are_content_hashes():
    t = pa.table({"a": ["x", "y", "x"], "b": [1, 2, 1]})
    h = row_hash_columns(t, ("a", "b"))
    lo, hi = h["_hash_lo"].to_pylist(), h["_hash_hi"].to_pylist()
    assert lo[0] == lo[2] and hi[0] == hi[2] and (lo[0], hi[0]) != (lo[1], hi[1])
    assert all(0 <= v < 2**31 for v in lo + hi)
    assert not math.isnan(sum(lo))


#: Degenerate teacher outputs (labelled High) and the validator's reasons for them.
DEGENERATE = [
    ("High, Medium, Low", "too_short+not_prose+truncated+multiple_labels"),
    ("Medium", "too_short+not_prose+truncated+wrong_label"),
    ("This is a high fit fit fit fit fit fit fit fit", "truncated+repetition"),
]


class _TextBuilder:
    def __call__(self, table: pa.Table) -> pa.Table:
        return pa.table({"member_id": table.column("member_id"), "job_id": table.column("job_id"),
                         "text": table.column("explanation"), "source": table.column("source"),
                         "heldout": table.column("heldout")})


_TEXT_SCHEMA = pa.schema([("member_id", pa.string()), ("job_id", pa.string()), ("text", pa.string()),
                          ("source", pa.string()), ("heldout", pa.bool_())])


@pytest.fixture
def content_lookups(monkeypatch):
    """Lookups with a full member row and six copies of a full job row (j0..j5), without Ray."""
    import ray

    from lantern_batch.distill.data import pack_entities, pair_queries

    monkeypatch.setattr(ray, "get", lambda x: x)
    members = pa.Table.from_pylist([MEMBER], schema=pa.schema([f for f in MEMBERS_SCHEMA if f.name in MEMBER]))
    jobs = pa.Table.from_pylist([{**JOB, "job_id": f"j{i}"} for i in range(6)])
    pairs = pa.table({"member_id": ["m1"], "job_id": ["j0"], "query": [None]}, schema=pa.schema(
        [("member_id", pa.string()), ("job_id", pa.string()), ("query", pa.string())]))
    return {"members": pack_entities(members, "member_id", "member", "members"),
            "jobs": pack_entities(jobs, "job_id", "job", "jobs"), "pairs": pair_queries(pairs)}


def _text_stage(task, lookups):
    return ExampleStage(_TextBuilder, {}, _TEXT_SCHEMA, ("member_id", "text"), lookups=lookups, task=task)


def _by_job(table: pa.Table) -> pa.Table:
    """Stage output in input order (built rows come before rejected ones; row i has job j<i>)."""
    return table.sort_by("job_id")


def _degenerate_and_good_labels() -> pa.Table:
    texts = [(t, "High") for t, _ in DEGENERATE] + [
        (GOOD, "Medium"), (GOOD.replace("Python and SQL", "Python and Java"), "Medium")]
    return _labels([_row(label=label, explanation=t, job=f"j{i}") for i, (t, label) in enumerate(texts)])


@pytest.mark.parametrize("task", ["explainer", "teacher_sft"])
def test_invalid_explanations_become_error_rows_for_text_tasks(task, content_lookups):
    rows = teacher_label_rows(_degenerate_and_good_labels(), "explainer", 0.0, "s")
    out = _by_job(_text_stage(task, content_lookups)(rows))
    assert out.num_rows == rows.num_rows  # every input row leaves as one output row
    reasons = out.column("reason").to_pylist()
    assert reasons[:3] == [f"invalid_explanation:{r}" for _, r in DEGENERATE]
    assert reasons[3] is None and out.column("text")[3].as_py() == GOOD  # the good one is an example
    # Grounding uses the joined member and job rows: Java is on neither.
    assert reasons[4] == "invalid_explanation:ungrounded_skill"
    assert out.column("text").to_pylist()[:3] == [None, None, None]
    errs = error_table(out.filter(out.column("reason").is_valid()))
    assert errs.schema == ERRORS_SCHEMA and errs.num_rows == 4
    assert errs.column("table").to_pylist() == ["teacher_labels"] * 4
    assert errs.column("stage").to_pylist() == ["distill"] * 4
    assert errs.column("reason").to_pylist() == reasons[:3] + reasons[4:]


def test_the_classifier_trains_on_labels_and_skips_the_text_checks(content_lookups):
    rows = teacher_label_rows(_degenerate_and_good_labels(), "classifier", 0.0, "s")
    out = _by_job(_text_stage("classifier", content_lookups)(rows))
    assert out.column("reason").to_pylist() == [None] * rows.num_rows


def test_teacher_sft_seed_rows_with_bad_text_or_contradicting_scores_are_rejected(content_lookups):
    fours = dict.fromkeys(("skills", "seniority", "experience", "domain", "location", "education"), 4.0)
    twos = dict.fromkeys(fours, 2.0)
    zeros = dict.fromkeys(fours, 0.0)
    seed = pa.Table.from_pylist([
        {"member_id": "m1", "job_id": "j0", "fit_label": "Medium", "dimension_scores": twos, "explanation": GOOD},
        {"member_id": "m1", "job_id": "j1", "fit_label": "Medium", "dimension_scores": zeros, "explanation": GOOD},
        {"member_id": "m1", "job_id": "j2", "fit_label": "Low", "dimension_scores": fours,
         "explanation": GOOD.replace("Medium fit", "Low fit")},
        {"member_id": "m1", "job_id": "j3", "fit_label": "High", "dimension_scores": fours, "explanation": "Medium"},
    ])
    rows = seed_rows(seed, "teacher_sft", 1.0, 0.0, "s")
    out = _by_job(_text_stage("teacher_sft", content_lookups)(rows))
    assert out.column("reason").to_pylist() == [
        None, "scores_contradict_label", "scores_contradict_label",
        "invalid_explanation:too_short+not_prose+truncated+wrong_label"]
    errs = error_table(out.filter(out.column("reason").is_valid()))
    assert errs.column("table").to_pylist() == ["seed"] * 3
    # The explainer trains on the text only: the scores are not its concern.
    explainer = _by_job(_text_stage("explainer", content_lookups)(seed_rows(seed, "explainer", 1.0, 0.0, "s")))
    assert explainer.column("reason").to_pylist() == [None, None, None, out.column("reason")[3].as_py()]


def test_summary_counts_rejected_rows_by_reason(content_lookups, tmp_path):
    from lantern_batch.distill.data import _summarise

    rows = teacher_label_rows(_degenerate_and_good_labels(), "explainer", 0.0, "s")
    rows = pa.concat_tables([rows, teacher_label_rows(_labels([_row(member="m-nobody", explanation=GOOD)]),
                                                      "explainer", 0.0, "s")])
    out = _text_stage("explainer", content_lookups)(rows)
    io.write_table(out, str(tmp_path / "examples"))
    prepared = _summarise("explainer", str(tmp_path / "examples"), str(tmp_path / "errors"), {})
    assert prepared.num_train == 1 and prepared.counts["excluded"] == 5
    assert prepared.counts["rows:teacher"] == 6 == prepared.num_train + prepared.num_heldout + prepared.counts["excluded"]
    assert prepared.counts["excluded:teacher:invalid_explanation:truncated+repetition"] == 1
    assert prepared.rejected == {"invalid_explanation:too_short+not_prose+truncated+multiple_labels": 1,
                                 "invalid_explanation:too_short+not_prose+truncated+wrong_label": 1,
                                 "invalid_explanation:truncated+repetition": 1,
                                 "invalid_explanation:ungrounded_skill": 1, "unknown_member": 1}
    summary = prepared.to_json()
    assert summary["rejected"] == prepared.rejected
    assert summary["rejected_summary"].startswith("5 rows rejected: invalid_explanation:too_short+")
    errors = io.read_table(str(tmp_path / "errors"))
    assert sorted(errors.column("reason").to_pylist()) == sorted(prepared.rejected)


def test_a_teachers_training_set_keeps_only_its_configured_prompt_version(tmp_path):
    """Teacher X relabelled with prompt v3 over stored v2 labels: its v3 training set has no v2 row."""
    from lantern_batch.distill.config import DataSettings

    v2 = _labels([_row(member=f"m{i}", prompt_version="v2") for i in range(4)])
    v3 = _labels([_row(member=f"m{i}", label="Low", p=(0.1, 0.2, 0.7), prompt_version="v3") for i in range(3)])
    io.write_table(v2, str(tmp_path / "labels" / "teacher=x"), basename="part-a.parquet")
    io.write_table(v3, str(tmp_path / "labels" / "teacher=x"), basename="part-b.parquet")
    source = label_source(DataSettings(teacher_labels=str(tmp_path), teacher="x", prompt_version="v3", seed=None),
                          "classifier")
    assert source.path.endswith("teacher=x") and source.prompt_version == "v3"
    assert "prompt_version" in source.columns
    stored = io.read_table(source.path, columns=source.columns)
    rows = teacher_label_rows(keep_prompt_version(stored, source.prompt_version), "classifier", 0.0, "s")
    assert rows.num_rows == 3 and set(rows.column("fit_label").to_pylist()) == {"Low"}
    # Not configured: the table's only version is taken, several are an error naming them.
    from lantern_batch.errors import InputError

    with pytest.raises(InputError, match=r"several prompt versions \(v2, v3\)"):
        label_source(DataSettings(teacher_labels=str(tmp_path), teacher="x", seed=None), "classifier")
    with pytest.raises(InputError, match=r"no rows of prompt version 'v4' \(found: v2, v3\)"):
        label_source(DataSettings(teacher_labels=str(tmp_path), teacher="x", prompt_version="v4", seed=None),
                     "classifier")
    io.write_table(v3, str(tmp_path / "labels" / "teacher=y"))
    assert label_source(DataSettings(teacher_labels=str(tmp_path), teacher="y", seed=None),
                        "classifier").prompt_version == "v3"


def test_a_fused_table_has_no_prompt_version_to_filter(tmp_path):
    from lantern_batch.distill.config import DataSettings

    io.write_table(_labels([_row()]).drop_columns(["prompt_version"]), str(tmp_path / "fused"))
    (tmp_path / "fused" / "_SUCCESS").write_text('{"teachers": []}')  # a complete fusion
    source = label_source(DataSettings(teacher_labels=str(tmp_path), prompt_version="v3", seed=None), "classifier")
    assert source.path.endswith("fused") and source.prompt_version is None
    assert "prompt_version" not in source.columns
