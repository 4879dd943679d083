"""Stage plumbing without an engine: output token offsets, the row builder, the commit writer."""

import json
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from lantern_batch.schema import DIMENSIONS, ERRORS_SCHEMA, TEACHER_LABELS_SCHEMA
from lantern_batch.teacher.job import commit_writer
from lantern_batch.teacher.records import LABELED_SCHEMA, LabeledRows, split_labeled
from lantern_batch.teacher.vllm_stage import output_tokens


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join({1: '{"a":', 2: '"é', 3: '"}'}[i] for i in ids)


def _lp(text, logprob=-0.1):
    return SimpleNamespace(decoded_token=text, logprob=logprob)


def test_output_tokens_uses_decoded_tokens_or_falls_back_to_decoding():
    out = SimpleNamespace(token_ids=[1, 2, 3], text='{"a":"é"}',
                          logprobs=[{1: _lp('{"a":')}, {2: _lp('"é'), 9: _lp('"x', -2.0)}, {3: _lp('"}')}])
    ids, texts, positions = output_tokens(out, _Tok())
    assert ids == [1, 2, 3] and "".join(texts) == out.text
    assert (9, '"x', -2.0) in positions[1]
    # Byte-level pieces that do not concatenate to the text: offsets come from decoding.
    broken = SimpleNamespace(token_ids=[1, 2, 3], text='{"a":"é"}',
                             logprobs=[{1: _lp('{"a":')}, {2: _lp('"\ufffd')}, {3: _lp('"}')}])
    _, texts, _ = output_tokens(broken, _Tok())
    assert "".join(texts) == broken.text


def _src(i):
    return {"pair_id": f"p{i}", "member_id": f"m{i}", "job_id": "j", "input_fingerprint": "f", "_row_key": f"p{i}#0"}


def test_rows_split_into_labels_and_errors_and_commit(tmp_path):
    rows = LabeledRows("t", "v1", "bundled:x")
    rows.add_label(_src(0), fit_label="High", probs=[0.7, 0.2, 0.1], dimension_scores={d: 4 for d in DIMENSIONS},
                   explanation="Fits.", token_ids=[5], topk_ids=[[5, 6]], topk_logprobs=[[-0.1, -2.0]],
                   prompt_tokens=100, output_tokens=20, cached_tokens=80)
    rows.add_error(_src(1), stage="teacher", reason="over_context", detail="teacher=t", prompt_tokens=3000)
    rows.add_passthrough({**_src(2), "_err_table": "pairs", "_err_stage": "dedup", "_err_reason": "duplicate_pair",
                          "_err_detail": None})
    table = rows.to_table()
    assert table.schema.equals(LABELED_SCHEMA)
    labels, errors = split_labeled(table)
    assert labels.schema.equals(TEACHER_LABELS_SCHEMA) and labels.num_rows == 1
    assert errors.schema.equals(ERRORS_SCHEMA) and errors.column("reason").to_pylist() == ["over_context", "duplicate_pair"]

    summary = commit_writer(table, str(tmp_path), "t", "v1").to_pylist()[0]
    assert (summary["rows"], summary["labelled"], summary["teacher_errors"], summary["input_errors"]) == (3, 1, 1, 1)
    assert summary["prompt_tokens"] == 3100 and summary["cached_tokens"] == 80
    assert json.loads(summary["reasons"]) == {"over_context": 1, "duplicate_pair": 1}
    label_files = list((tmp_path / "labels" / "teacher=t").glob("part-*.parquet"))
    marker_files = list((tmp_path / "_commits" / "teacher=t" / "prompt_version=v1").glob("*.parquet"))
    assert len(label_files) == 1 and len(marker_files) == 1
    assert label_files[0].stem == "part-" + marker_files[0].stem
    assert pq.read_table(marker_files[0]).column("kind").to_pylist() == ["teacher", "teacher", "input"]
    # The same batch committed again (a retried task) overwrites its own files.
    commit_writer(table, str(tmp_path), "t", "v1")
    assert len(list((tmp_path / "labels" / "teacher=t").glob("part-*.parquet"))) == 1
    assert commit_writer(pa.Table.from_pylist([], schema=LABELED_SCHEMA), str(tmp_path), "t", "v1").num_rows == 0


def test_a_retry_keeps_the_label_of_a_parsed_output_only():
    """The label a retry keeps (``vllm.retry_keeps_label``) is the rejected output's own; an
    output without a parseable label (engine error, cut-off JSON) retries with every label."""
    from lantern_batch.teacher.vllm_stage import VLLMTeacher

    stage = SimpleNamespace(max_chars=500)

    def result(text):
        return SimpleNamespace(outputs=[SimpleNamespace(text=text)])

    scores = json.dumps(dict.fromkeys(DIMENSIONS, 0))
    circular = f'{{"fit_label":"Medium","dimension_scores":{scores},"explanation":"The profile shows a profile."}}'
    assert VLLMTeacher._first_label(stage, result(circular)) == "Medium"
    assert VLLMTeacher._first_label(stage, result('{"fit_label":"High","dimension_scores":{"ski')) is None
    assert VLLMTeacher._first_label(stage, None) is None


def test_retry_schema_allows_only_the_kept_label():
    from lantern_batch.prompts import output_json_schema

    assert output_json_schema(300)["properties"]["fit_label"]["enum"] == ["High", "Medium", "Low"]
    assert output_json_schema(300, ("Low",))["properties"]["fit_label"]["enum"] == ["Low"]
