"""Explainer data prep on a local Ray, through both joins (broadcast and shuffle): teacher labels
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


@pytest.mark.parametrize("broadcast_join_max_rows", [2_000_000, 0], ids=["broadcast", "shuffle"])
def test_explainer_never_trains_on_invalid_explanations(ray_local, tiny_world, tiny_llama_dir,
                                                       labels_with_degenerate_text, broadcast_join_max_rows,
                                                       tmp_path):
    from lantern_batch.config import InputTables
    from lantern_batch.distill.config import DataSettings
    from lantern_batch.distill.data import prepare_examples, read_examples
    from lantern_batch.distill.train_explainer import EXAMPLE_SCHEMA, ExplainerExampleBuilder

    synth, rows = labels_with_degenerate_text
    inputs = InputTables(**{k: str(tiny_world / k) for k in ("members", "jobs", "pairs")})
    data = DataSettings(teacher_labels=str(synth), seed=None, holdout_fraction=0.0,
                        broadcast_join_max_rows=broadcast_join_max_rows)
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


def test_max_examples_caps_training_rows_and_keeps_every_heldout_row(ray_local, tiny_world, tiny_llama_dir,
                                                                     labels_with_degenerate_text, tmp_path):
    from lantern_batch.config import InputTables
    from lantern_batch.distill.config import DataSettings
    from lantern_batch.distill.data import heldout_mask, prepare_examples
    from lantern_batch.distill.train_explainer import EXAMPLE_SCHEMA, ExplainerExampleBuilder

    synth, rows = labels_with_degenerate_text
    inputs = InputTables(**{k: str(tiny_world / k) for k in ("members", "jobs", "pairs")})
    data = DataSettings(teacher_labels=str(synth), seed=None, holdout_fraction=0.5, max_examples=5)
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
