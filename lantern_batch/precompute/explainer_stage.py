"""Explainer stage: the label-conditioned explainer in vLLM actors, for the selected pairs.

Reads ``__messages`` (the chat prompt built by the feature join with the classifier's
``fit_label`` in it, see :func:`lantern_batch.prompts.explainer_messages`) and writes
``explanation``; ``__messages`` is dropped. A pair whose explanation cannot be produced — the
prompt does not fit the model's context, the engine fails on it, the output is empty — keeps
``explanation`` null and gets ``__explain_failed``; it is counted in the manifest
(``explanations_failed``), never turned into an error row. A pair's other columns are never
touched, so no model output can change the row's schema or its label.

One actor owns one ``vllm.LLM`` (engine settings and sampling parameters come from the config
as is). The pipeline only builds this stage when at least one pair needs an explanation, so an
incremental run with nothing new to explain never starts vLLM.

    actor = ExplainerActor(ExplainerSettings(...))
    explained = actor(rows)      # pyarrow.Table in, pyarrow.Table out
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
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


class ExplainerActor:
    """Ray Data callable class: one vLLM engine, one ``chat`` call per batch of prompts."""

    def __init__(self, settings: ExplainerSettings, meter: Any = None):
        from vllm import LLM, SamplingParams

        self.settings = settings
        self.meter = meter
        self.llm = LLM(model=settings.model_dir, **settings.engine_kwargs)
        self.params = SamplingParams(**settings.sampling_params)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.max_tokens = int(self.params.max_tokens or 16)

    def _fits(self, messages: list[dict]) -> bool:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return len(ids) + self.max_tokens <= self.max_model_len

    def _generate(self, prompts: list[list[dict]]) -> list[tuple[str | None, int]]:
        """(text, output tokens) per prompt; a failing batch is retried prompt by prompt."""
        try:
            outs = self.llm.chat(prompts, self.params, use_tqdm=False)
            return [(o.outputs[0].text if o.outputs else None,
                     len(o.outputs[0].token_ids) if o.outputs else 0) for o in outs]
        except Exception as exc:  # noqa: BLE001 - one bad prompt must not fail the batch
            if len(prompts) == 1:
                log.warning("explain.prompt_failed error=%s", type(exc).__name__)
                return [(None, 0)]
            return [r for p in prompts for r in self._generate([p])]

    def __call__(self, rows: pa.Table) -> pa.Table:
        start = time.perf_counter()
        raw = rows.column("__messages").to_pylist()
        texts: list[str | None] = [None] * len(raw)
        todo, prompts = [], []
        for i, blob in enumerate(raw):
            if blob is None:
                continue
            messages = json.loads(blob)
            if self._fits(messages):
                todo.append(i)
                prompts.append(messages)
        tokens = 0
        if prompts:
            for i, (text, n_tok) in zip(todo, self._generate(prompts), strict=True):
                texts[i] = clean_explanation(text, self.settings.max_explanation_chars)
                tokens += n_tok
        failed = [t is None for t in texts]
        out = rows.drop_columns(["__messages"])
        for name, arr in (("explanation", pa.array(texts, pa.string())),
                          ("__explain_failed", pa.array(failed, pa.bool_()))):
            i = out.schema.get_field_index(name)
            out = out.set_column(i, out.schema.field(i), arr)
        if self.meter is not None:
            self.meter.add.remote("explain", rows.num_rows, time.perf_counter() - start, tokens)
        return out
