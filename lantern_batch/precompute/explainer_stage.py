"""Explainer stage: the label-conditioned explainer in vLLM actors, for the selected pairs.

Reads ``__messages`` (the chat prompt built by the feature join with the classifier's
``fit_label`` in it, see :func:`lantern_batch.prompts.explainer_messages`), tokenises it
(:class:`PromptBuilder`, no vLLM) and writes ``explanation`` (:class:`ExplainerActor`). A pair whose explanation cannot be produced — the
prompt plus ``max_tokens`` does not fit the model's context, the engine fails on it, the output
is empty — keeps
``explanation`` null and gets ``__explain_failed``; it is counted in the manifest
(``explanations_failed``), never turned into an error row. A pair's other columns are never
touched, so no model output can change the row's schema or its label.

One actor owns one ``vllm.LLM`` (engine settings and sampling parameters come from the config
as is); prompts are tokenised once with the chat template and generated from token ids. This is
a small sibling of :class:`lantern_batch.teacher.vllm_stage.VLLMTeacher` (which adds structured
decoding, logprob parsing and retries with other sampling parameters, none of which a plain-text
explanation needs). The pipeline only builds this stage when at least one pair needs an explanation, so an
incremental run with nothing new to explain never starts vLLM.

    actor = ExplainerActor(ExplainerSettings(...))
    explained = actor(rows)      # pyarrow.Table in, pyarrow.Table out
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from lantern_batch.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class ExplainerSettings:
    """Everything an explainer actor needs (plain values: sent to Ray workers)."""

    model_dir: str
    version: str
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    sampling_params: dict[str, Any] = field(default_factory=dict)
    max_explanation_chars: int = 600


def clean_explanation(text: str | None, max_chars: int) -> str | None:
    """Whitespace-normalised explanation cut to ``max_chars``; None when nothing is left."""
    if text is None:
        return None
    text = " ".join(text.split())
    if not text:
        return None
    return text[:max_chars]


def chat_prompt_ids(tokenizer: Any, messages: list[dict]) -> list[int]:
    """Token ids of a chat prompt (the model's chat template, generation prompt added)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def context_length(settings: ExplainerSettings) -> int:
    """The engine's context: ``engine_kwargs.max_model_len``, else the model's own limit."""
    if settings.engine_kwargs.get("max_model_len"):
        return int(settings.engine_kwargs["max_model_len"])
    cfg = json.loads((Path(settings.model_dir) / "config.json").read_text())
    return int(cfg.get("max_position_embeddings") or 2048)


def _set(rows: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    i = rows.schema.get_field_index(name)
    return rows.set_column(i, rows.schema.field(i), arr)


class PromptBuilder:
    """Ray Data callable class (no vLLM): tokenises ``__messages`` into ``__prompt_ids`` with the
    explainer's own tokenizer and chat template. A prompt that leaves no room for ``max_tokens``
    new tokens fails here (``__explain`` false, ``__explain_failed`` true), so the pipeline starts
    vLLM only when some prompt can actually be explained."""

    def __init__(self, settings: ExplainerSettings, meter: Any = None):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(settings.model_dir)
        self.limit = context_length(settings) - int(settings.sampling_params.get("max_tokens") or 16)
        self.meter = meter

    def __call__(self, rows: pa.Table) -> pa.Table:
        start = time.perf_counter()
        ids: list[list[int] | None] = []
        for blob in rows.column("__messages").to_pylist():
            p = chat_prompt_ids(self.tokenizer, json.loads(blob)) if blob is not None else None
            ids.append(p if p is not None and len(p) <= self.limit else None)
        fits = [p is not None for p in ids]
        out = rows.drop_columns(["__messages"]).append_column("__prompt_ids", pa.array(ids, pa.list_(pa.int32())))
        out = _set(out, "__explain", pa.array(fits, pa.bool_()))
        out = _set(out, "__explain_failed", pa.array([not f for f in fits], pa.bool_()))
        if self.meter is not None:
            self.meter.add.remote("explain_prompts", rows.num_rows, time.perf_counter() - start)
        return out


def drop_prompt_ids(rows: pa.Table) -> pa.Table:
    """Rows that will not reach vLLM, back in the work layout."""
    return rows.drop_columns(["__prompt_ids"])


class ExplainerActor:
    """Ray Data callable class: one vLLM engine, one ``generate`` call per batch of prompts
    (``__prompt_ids``, built by :class:`PromptBuilder`)."""

    def __init__(self, settings: ExplainerSettings, meter: Any = None):
        from vllm import LLM, SamplingParams

        self.settings = settings
        self.meter = meter
        self.llm = LLM(model=settings.model_dir, **settings.engine_kwargs)
        self.params = SamplingParams(**settings.sampling_params)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.max_tokens = int(self.params.max_tokens or 16)

    def _generate(self, prompts: list[list[int]]) -> list[tuple[str | None, int]]:
        """(text, output tokens) per prompt; a failing batch is retried prompt by prompt.

        A dead engine is not a per-prompt failure: the actor exits so that Ray restarts it and
        Ray Data retries the batch (``max_restarts`` / ``max_task_retries``).
        """
        try:
            outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], self.params, use_tqdm=False)
            return [(o.outputs[0].text if o.outputs else None,
                     len(o.outputs[0].token_ids) if o.outputs else 0) for o in outs]
        except Exception as exc:  # noqa: BLE001 - one bad prompt must not fail the batch
            if type(exc).__name__ == "EngineDeadError":
                log.error("explain.engine_dead: exiting so the actor is restarted")
                os._exit(1)
            if len(prompts) == 1:
                log.warning("explain.prompt_failed error=%s", type(exc).__name__)
                return [(None, 0)]
            return [r for p in prompts for r in self._generate([p])]

    def __call__(self, rows: pa.Table) -> pa.Table:
        start = time.perf_counter()
        raw = rows.column("__prompt_ids").to_pylist()
        texts: list[str | None] = [None] * len(raw)
        todo, prompts = [], []
        for i, ids in enumerate(raw):
            # Checked by PromptBuilder already; kept as a guard against another context setting.
            if ids is not None and len(ids) + self.max_tokens <= self.max_model_len:
                todo.append(i)
                prompts.append(ids)
        tokens = 0
        if prompts:
            for i, (text, n_tok) in zip(todo, self._generate(prompts), strict=True):
                texts[i] = clean_explanation(text, self.settings.max_explanation_chars)
                tokens += n_tok
        out = drop_prompt_ids(rows)
        out = _set(out, "explanation", pa.array(texts, pa.string()))
        out = _set(out, "__explain_failed", pa.array([t is None for t in texts], pa.bool_()))
        if self.meter is not None:
            self.meter.add.remote("explain", rows.num_rows, time.perf_counter() - start, tokens)
        return out
