"""Explainer data prep in the driver and on a local Ray, through both joins (broadcast and shuffle):
the paths build the same examples; teacher labels
whose explanations fail the validator against the real member and job rows become error rows
with their reasons, good ones become examples, the summary counts the rejected rows by reason,
and every input row is accounted for."""

import pyarrow as pa
import pytest

from lantern_batch import io

pytestmark = pytest.mark.integration

DEGENERATE = {
    "High, Medium, Low": "invalid_explanation:too_short+not_prose+truncated+multiple_labels",
    "Medium": "invalid_explanation:too_short+not_prose+truncated+wrong_label",
    "This is a high fit fit fit fit fit fit fit fit": "invalid_explanation:truncated+repetition",
}


@pytest.fixture(scope="module")
def labels_with_degenerate_text(tiny_world, tmp_path_factory):
    """Policy teacher labels of 40 pairs; the first three get a degenerate explanation (label High)."""
    from lantern_batch.distill.policy_teacher import policy_teacher_labels

    members, jobs = io.read_table(str(tiny_world / "members")), io.read_table(str(tiny_world / "jobs"))
    table = policy_teacher_labels(members, jobs, io.read_table(str(tiny_world / "pairs")).slice(0, 40))
    rows = table.to_pylist()
    for row, text in zip(rows, DEGENERATE, strict=False):
        row["fit_label"], row["explanation"] = "High", text
        row["p_high"], row["p_medium"], row["p_low"] = 0.8, 0.1, 0.1
    out = tmp_path_factory.mktemp("synth")
    io.write_table(pa.Table.from_pylist(rows, schema=table.schema), str(out / "labels" / "teacher=t2"))
    return out, rows


#: (broadcast_join_max_rows, in_process_max_rows) of each path through prepare_examples.
PATHS = {"in_process": (2_000_000, 20_000), "broadcast": (2_000_000, 0), "shuffle": (0, 20_000)}


@pytest.mark.parametrize("path", list(PATHS))
def test_explainer_never_trains_on_invalid_explanations(ray_local, tiny_world, tiny_llama_dir,
                                                       labels_with_degenerate_text, path, tmp_path):
    from lantern_batch.config import InputTables
    from lantern_batch.distill.config import DataSettings
    from lantern_batch.distill.data import prepare_examples, read_examples
    from lantern_batch.distill.train_explainer import EXAMPLE_SCHEMA, ExplainerExampleBuilder

    synth, rows = labels_with_degenerate_text
    inputs = InputTables(**{k: str(tiny_world / k) for k in ("members", "jobs", "pairs")})
    broadcast_join_max_rows, in_process_max_rows = PATHS[path]
    data = DataSettings(teacher_labels=str(synth), seed=None, holdout_fraction=0.0,
                        broadcast_join_max_rows=broadcast_join_max_rows, in_process_max_rows=in_process_max_rows)
    prompt = {"member_tokens": 60, "job_tokens": 60, "max_length": 384, "max_target_tokens": 128}
    work = tmp_path / "work"
    prepared = prepare_examples(
        task="explainer", inputs=inputs, data=data, work_dir=str(work), builder=ExplainerExampleBuilder,
        builder_kwargs={"tokenizer_dir": str(tiny_llama_dir), "prompt": prompt, "prompt_version": "e2"},
        schema=EXAMPLE_SCHEMA,
        hash_fields=("member_id", "job_id", "explanation"), settings_for_fingerprint={})

    # Every input row ends as an example or an error row.
    assert prepared.counts["rows:teacher"] == len(rows) == prepared.num_train + prepared.counts["excluded"]
    assert prepared.rejected == {reason: 1 for reason in DEGENERATE.values()}
    assert prepared.to_json()["rejected_summary"].startswith("3 rows rejected: invalid_explanation:")
    errors = io.read_table(str(work / "errors"))
    by_pair = {(e["member_id"], e["job_id"]): e for e in errors.to_pylist()}
    for row in rows[:3]:
        err = by_pair[(row["member_id"], row["job_id"])]
        assert err["reason"] == DEGENERATE[row["explanation"]]
        assert (err["table"], err["stage"]) == ("teacher_labels", "distill")
    # The policy's own explanations are grounded in the same member and job rows: all examples.
    examples = read_examples(str(work / "examples"), columns=["member_id", "job_id", "explanation"])
    assert sorted(examples.column("explanation").to_pylist()) == sorted(r["explanation"] for r in rows[3:])


@pytest.mark.parametrize("path", ["in_process", "broadcast"])
def test_max_examples_caps_training_rows_and_keeps_every_heldout_row(ray_local, tiny_world, tiny_llama_dir,
                                                                     labels_with_degenerate_text, path, tmp_path):
    from lantern_batch.config import InputTables
    from lantern_batch.distill.config import DataSettings
    from lantern_batch.distill.data import heldout_mask, prepare_examples
    from lantern_batch.distill.train_explainer import EXAMPLE_SCHEMA, ExplainerExampleBuilder

    synth, rows = labels_with_degenerate_text
    inputs = InputTables(**{k: str(tiny_world / k) for k in ("members", "jobs", "pairs")})
    data = DataSettings(teacher_labels=str(synth), seed=None, holdout_fraction=0.5, max_examples=5,
                        in_process_max_rows=PATHS[path][1])
    prompt = {"member_tokens": 60, "job_tokens": 60, "max_length": 384, "max_target_tokens": 128}
    prepared = prepare_examples(
        task="explainer", inputs=inputs, data=data, work_dir=str(tmp_path / "work"), builder=ExplainerExampleBuilder,
        builder_kwargs={"tokenizer_dir": str(tiny_llama_dir), "prompt": prompt, "prompt_version": "e2"},
        schema=EXAMPLE_SCHEMA, hash_fields=("member_id", "job_id", "explanation"), settings_for_fingerprint={})
    held = heldout_mask([r["member_id"] for r in rows], [r["job_id"] for r in rows], 0.5, data.split_salt)
    good_held = sum(1 for r, h in zip(rows[3:], held[3:], strict=True) if h)
    assert 0 < good_held < len(rows) - 3
    # The cap counts training rows as read (one file, in order): the degenerate ones on the
    # training side come first and end as error rows, the rest of the five as examples.
    degenerate_train = sum(1 for h in held[:3] if not h)
    assert prepared.num_train == 5 - degenerate_train
    assert prepared.num_heldout == good_held  # the cap never shrinks the evaluation split


def test_both_paths_cap_teacher_rows_first_and_build_the_same_examples(ray_local, tiny_world, tiny_llama_dir,
                                                                       labels_with_degenerate_text, tmp_path):
    """Teacher labels plus D_seed under a cap smaller than the seed set: the teacher's rows are
    read first on both paths (a cap that seed rows fill alone trains on no teacher row), and the
    driver and Ray Data write the same examples."""
    from lantern_batch.config import InputTables
    from lantern_batch.distill.config import DataSettings
    from lantern_batch.distill.data import prepare_examples
    from lantern_batch.distill.train_explainer import EXAMPLE_SCHEMA, ExplainerExampleBuilder

    synth, rows = labels_with_degenerate_text
    inputs = InputTables(**{k: str(tiny_world / k) for k in ("members", "jobs", "pairs")})
    prompt = {"member_tokens": 60, "job_tokens": 60, "max_length": 384, "max_target_tokens": 128}
    built = {}
    for path in ("in_process", "broadcast"):
        data = DataSettings(teacher_labels=str(synth), seed=str(tiny_world / "seed"), holdout_fraction=0.2,
                            max_examples=60, in_process_max_rows=PATHS[path][1])
        prepared = prepare_examples(
            task="explainer", inputs=inputs, data=data, work_dir=str(tmp_path / path), builder=ExplainerExampleBuilder,
            builder_kwargs={"tokenizer_dir": str(tiny_llama_dir), "prompt": prompt, "prompt_version": "e2"},
            schema=EXAMPLE_SCHEMA, hash_fields=("member_id", "job_id", "explanation"), settings_for_fingerprint={})
        table = io.read_table(str(tmp_path / path / "examples")).drop_columns(["_hash_lo", "_hash_hi"])
        built[path] = (prepared, table.sort_by([("source", "ascending"), ("member_id", "ascending"),
                                                ("job_id", "ascending")]))
    (a, ta), (b, tb) = built["in_process"], built["broadcast"]
    assert ta.equals(tb)
    assert (a.fingerprint, a.num_train, a.num_heldout, a.counts) == (b.fingerprint, b.num_train, b.num_heldout, b.counts)
    train = ta.filter(pa.compute.and_(ta.column("reason").is_null(), pa.compute.invert(ta.column("heldout"))))
    sources = train.column("source").to_pylist()
    # The cap counts rows as read: degenerate teacher rows inside it end as error rows.
    assert len(sources) == a.num_train and 57 <= a.num_train <= 60 and 0 < sources.count("seed") < len(sources)
    # Every teacher row on the training side was read before any seed row filled the cap.
    assert a.counts["rows:teacher"] == len(rows)
