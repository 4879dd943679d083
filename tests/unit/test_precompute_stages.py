"""The classifier stage and the explainer's prompt step on tiny models, without Ray or vLLM."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from lantern_batch.precompute.classifier_stage import (
    ClassifierActor,
    ClassifierSettings,
    read_meta,
    with_scores,
)
from lantern_batch.precompute.config import ClassifierStageConfig
from lantern_batch.precompute.explainer_stage import (
    ExplainerSettings,
    PromptBuilder,
    clean_explanation,
    context_length,
)
from lantern_batch.precompute.route import WORK_SCHEMA, work_table
from lantern_batch.schema import FIT_LABELS


def _classifier(tmp_path, tiny_bert_dir):
    from transformers import AutoTokenizer

    from lantern_batch.classifier import FitClassifier

    out = tmp_path / "cls"
    FitClassifier.from_encoder(tiny_bert_dir).save(out, {"max_length": 64, "text_max_chars": 300},
                                                    tokenizer=AutoTokenizer.from_pretrained(str(tiny_bert_dir)))
    return out


def test_classifier_actor_scores_rows_and_keeps_the_layout(tmp_path, tiny_bert_dir):
    model_dir = _classifier(tmp_path, tiny_bert_dir)
    meta = read_meta(model_dir)
    settings = ClassifierSettings.from_config(ClassifierStageConfig(batch_size=3, torch_threads=1), model_dir, meta)
    assert settings.max_length == 64 and settings.max_chars == 300 and settings.version == meta["version"]
    texts = ["python spark data engineer " * k for k in (1, 9, 3, 20, 2)]
    rows = work_table({"member_id": [f"m{i}" for i in range(5)], "job_id": ["j"] * 5, "__route": ["score"] * 5})
    rows = rows.append_column("__text", pa.array(texts))
    out = ClassifierActor(settings)(rows)
    assert out.schema == WORK_SCHEMA  # __text dropped, nothing else added
    probs = np.stack([out.column(c).to_numpy() for c in ("p_high", "p_medium", "p_low")], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert out.column("fit_label").to_pylist() == [FIT_LABELS[i] for i in probs.argmax(axis=1)]
    # Length-sorted batches: each row gets the same scores as when scored alone.
    alone = ClassifierActor(settings)(rows.slice(3, 1))
    assert abs(alone.column("p_high")[0].as_py() - out.column("p_high")[3].as_py()) < 1e-3


def test_classifier_actor_skips_rows_the_content_join_failed(tmp_path, tiny_bert_dir):
    model_dir = _classifier(tmp_path, tiny_bert_dir)
    settings = ClassifierSettings.from_config(ClassifierStageConfig(batch_size=2, torch_threads=1), model_dir,
                                              read_meta(model_dir))
    texts = ["python spark data engineer", None, "registered nurse " * 4]
    rows = work_table({"member_id": ["m0", "m1", "m2"], "job_id": ["j"] * 3,
                       "__route": ["score", "error", "score"], "__err_reason": [None, "content_changed", None]})
    out = ClassifierActor(settings)(rows.append_column("__text", pa.array(texts, pa.string())))
    assert out.column("__route").to_pylist() == ["score", "error", "score"]
    both = ClassifierActor(settings)(rows.filter(pa.array([True, False, True]))
                                     .append_column("__text", pa.array([texts[0], texts[2]])))
    np.testing.assert_allclose(out.column("p_high").to_numpy()[[0, 2]], both.column("p_high").to_numpy(), atol=1e-3)


def test_with_scores_renormalises():
    rows = work_table({"member_id": ["a"], "job_id": ["b"]})
    out = with_scores(rows, np.array([[0.2, 0.2, 0.6000001]], dtype=np.float64), "v")
    assert out.column("fit_label").to_pylist() == ["Low"] and out.column("classifier_version")[0].as_py() == "v"
    assert abs(sum(out.column(c)[0].as_py() for c in ("p_high", "p_medium", "p_low")) - 1) < 1e-6


def test_prompt_builder_fails_prompts_over_the_context(tiny_llama_dir):
    settings = ExplainerSettings(model_dir=str(tiny_llama_dir), version="e",
                                 engine_kwargs={"max_model_len": 120}, sampling_params={"max_tokens": 20})
    assert context_length(settings) == 120
    short = [{"role": "user", "content": "Skills: python."}]
    long = [{"role": "user", "content": "Senior software engineer with Python. " * 40}]
    rows = work_table({"member_id": ["a", "b", "c"], "job_id": ["j"] * 3, "__explain": [True] * 3})
    rows = rows.append_column("__messages", pa.array([json.dumps(short), json.dumps(long), None]))
    out = PromptBuilder(settings)(rows)
    assert out.column("__explain").to_pylist() == [True, False, False]
    assert out.column("__explain_failed").to_pylist() == [False, True, True]
    ids = out.column("__prompt_ids").to_pylist()
    assert ids[0] and len(ids[0]) <= 100 and ids[1] is None
    assert "__messages" not in out.column_names
    no_limit = ExplainerSettings(model_dir=str(tiny_llama_dir), version="e")
    assert context_length(no_limit) == 2048  # the model's max_position_embeddings


def test_clean_explanation():
    assert clean_explanation("  You are a\n\nHigh fit  because ", 100) == "You are a High fit because"
    assert clean_explanation("\n\n\n", 100) is None and clean_explanation(None, 10) is None
    assert clean_explanation("x" * 50, 10) == "x" * 10
    # Cut off mid-sentence (max_tokens, or the character cut): the complete sentences remain.
    assert clean_explanation("High fit: they match. The role is rem", 100) == "High fit: they match."
    assert clean_explanation("High fit. They list Python and SQL.", 20) == "High fit."
    assert clean_explanation("Low fit! Wrong city.", 100) == "Low fit! Wrong city."


def test_each_regeneration_samples_with_the_next_seed():
    from lantern_batch.precompute.explainer_stage import retry_sampling

    settings = ExplainerSettings(model_dir="m", version="e", regenerations=3,
                                 sampling_params={"max_tokens": 96, "temperature": 0.0},
                                 retry_sampling_params={"temperature": 0.7, "seed": 17})
    tries = [retry_sampling(settings, k) for k in range(settings.regenerations)]
    assert [t["seed"] for t in tries] == [17, 18, 19]
    assert all(t["temperature"] == 0.7 and t["max_tokens"] == 96 for t in tries)
    unseeded = ExplainerSettings(model_dir="m", version="e", retry_sampling_params={"temperature": 0.7})
    assert "seed" not in retry_sampling(unseeded, 2)
