"""Explainer stage: the label-conditioned explainer in vLLM actors, for the selected pairs.

Reads ``__messages`` (the chat prompt built by the feature join with the classifier's
``fit_label`` in it, see :func:`lantern_batch.prompts.explainer_messages`), tokenises it
(:class:`PromptBuilder`, no vLLM) and writes ``explanation`` (:class:`ExplainerActor`). A pair whose explanation cannot be produced — the
prompt plus ``max_tokens`` does not fit the model's context, the engine fails on it, the output
is empty — keeps
``explanation`` null and gets ``__explain_failed``; it is counted in the manifest
(``explanations_failed``), never turned into an error row. A pair's other columns are never
touched, so no model output can change the row's schema or its label.

Every generated explanation is checked before it can be published
(:func:`lantern_batch.quality.check_explanation`, against the pair's label and the member and
job facts the join put in ``__facts``). An invalid one is generated once more with
``retry_sampling_params`` up to ``regenerations`` times, each with the next seed; still invalid,
it is left null and its
reasons go to ``__explain_invalid`` (counted by reason in the manifest's
``explanations_invalid``) and its ``explainer_version`` is cleared, so an incremental run does
not retry it with the same model. A published explanation is therefore always a valid one.

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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch.logs import get_logger
from lantern_batch.runtime import retry_sampling as runtime_retry_sampling
from lantern_batch.runtime import shutdown_engine

log = get_logger(__name__)


@dataclass(frozen=True)
class ExplainerSettings:
    """Everything an explainer actor needs (plain values: sent to Ray workers)."""

    model_dir: str
    """Where the driver resolved the model (a path on the driver's node)."""
    version: str
    prompt_version: str = "e1"
    """Explainer prompt version the model was trained with (its export's ``lantern_batch.json``;
    exports that predate the field were trained on e1)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    sampling_params: dict[str, Any] = field(default_factory=dict)
    max_explanation_chars: int = 600
    regenerations: int = 1
    retry_sampling_params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.7, "seed": 17})
    ref: str = ""
    """The model reference each node resolves itself where ``model_dir`` is not on it."""

    def local_dir(self) -> str:
        """The model's directory on this node, checked to be ``version``."""
        from lantern_batch.models import model_version, on_this_node

        return on_this_node(self.ref or self.model_dir, self.model_dir, self.version,
                            lambda d: "exp-" + model_version(d))


def retry_sampling(settings: ExplainerSettings, k: int) -> dict[str, Any]:
    """Sampling parameters of regeneration ``k`` (0-based): see :func:`lantern_batch.runtime.retry_sampling`."""
    return runtime_retry_sampling(settings.sampling_params, settings.retry_sampling_params, k)


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def clean_explanation(text: str | None, max_chars: int) -> str | None:
    """Whitespace-normalised explanation cut to ``max_chars``; a text cut off mid-sentence (by
    ``max_tokens`` or the cut) keeps its complete sentences only. None when nothing is left."""
    if text is None:
        return None
    text = " ".join(text.split())[:max_chars]
    if not text:
        return None
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if ends and ends[-1] < len(text):
        text = text[:ends[-1]]
    return text


def explanation_facts(member: dict | None, job: dict | None) -> str | None:
    """The member and job fields the validator grounds an explanation in, as JSON (``__facts``)."""
    if member is None or job is None:
        return None
    m = {k: member.get(k) for k in ("member_id", "headline", "summary", "current_title", "seniority",
                                    "years_experience", "skills", "location")}
    m["experience"] = [{k: (r or {}).get(k) for k in ("title", "start_year", "end_year", "description")}
                       for r in member.get("experience") or ()]
    j = {k: job.get(k) for k in ("job_id", "title", "company", "description", "seniority", "required_skills",
                                 "location", "workplace_type")}
    return json.dumps({"member": m, "job": j}, ensure_ascii=False)


def check_generated(text: str | None, label: str | None, facts: str | None) -> str | None:
    """The validator's reasons for one generated explanation (``+``-joined), None when valid."""
    from lantern_batch.quality import check_explanation

    f = json.loads(facts) if facts else {}
    return check_explanation(text, label, f.get("member"), f.get("job")).reason


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
    cfg = json.loads((Path(settings.local_dir()) / "config.json").read_text())
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

        self.tokenizer = AutoTokenizer.from_pretrained(settings.local_dir())
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
    return rows.drop_columns(["__prompt_ids", "__facts"])


class ExplainerActor:
    """Ray Data callable class: one vLLM engine, one ``generate`` call per batch of prompts
    (``__prompt_ids``, built by :class:`PromptBuilder`)."""

    def __init__(self, settings: ExplainerSettings, meter: Any = None):
        from vllm import LLM, SamplingParams

        self.settings = settings
        self.meter = meter
        from lantern_batch.runtime import engine_kwargs

        self.llm = LLM(model=settings.local_dir(), **engine_kwargs(settings.engine_kwargs))
        self.params = SamplingParams(**settings.sampling_params)
        self.retry_params = [SamplingParams(**retry_sampling(settings, k)) for k in range(settings.regenerations)]
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.max_tokens = int(self.params.max_tokens or 16)

    def __del__(self):
        # Ray Data drops the UDF when the actor exits gracefully: stop the engine process here,
        # not in interpreter teardown, where its exit races the resource tracker's.
        shutdown_engine(getattr(self, "llm", None))

    def _generate(self, prompts: list[list[int]], params: Any = None) -> list[tuple[str | None, int]]:
        """(text, output tokens) per prompt; a failing batch is retried prompt by prompt.

        A dead engine is not a per-prompt failure: the actor exits so that Ray restarts it and
        Ray Data retries the batch (``max_restarts`` / ``max_task_retries``).
        """
        try:
            outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params or self.params,
                                     use_tqdm=False)
            return [(o.outputs[0].text if o.outputs else None,
                     len(o.outputs[0].token_ids) if o.outputs else 0) for o in outs]
        except Exception as exc:  # noqa: BLE001 - one bad prompt must not fail the batch
            if type(exc).__name__ == "EngineDeadError":
                log.error("explain.engine_dead: exiting so the actor is restarted")
                os._exit(1)
            if len(prompts) == 1:
                log.warning("explain.prompt_failed error=%s", type(exc).__name__)
                return [(None, 0)]
            return [r for p in prompts for r in self._generate([p], params)]

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
        labels = rows.column("fit_label").to_pylist()
        facts = rows.column("__facts").to_pylist()
        invalid: list[str | None] = [None] * len(raw)
        attempts: list[int | None] = [None] * len(raw)
        tokens = 0
        for params in [self.params, *self.retry_params]:
            if not prompts:
                break
            again, again_prompts = [], []
            for i, (text, n_tok) in zip(todo, self._generate(prompts, params), strict=True):
                tokens += n_tok
                attempts[i] = (attempts[i] or 0) + 1
                text = clean_explanation(text, self.settings.max_explanation_chars)
                reason = check_generated(text, labels[i], facts[i]) if text is not None else None
                texts[i], invalid[i] = (None, reason) if reason else (text, None)
                if reason:
                    again.append(i)
                    again_prompts.append(raw[i])
            todo, prompts = again, again_prompts
        out = drop_prompt_ids(rows)
        out = _set(out, "explanation", pa.array(texts, pa.string()))
        out = _set(out, "__explain_failed", pa.array([t is None and r is None for t, r in zip(texts, invalid, strict=True)],
                                                     pa.bool_()))
        out = _set(out, "__explain_invalid", pa.array(invalid, pa.string()))
        out = _set(out, "__explain_attempts", pa.array(attempts, pa.int8()))
        # A rejected explanation is withheld: the row carries no explainer version, so a later
        # incremental run does not retry it (the same model on the same input writes the same text).
        rejected = pa.array([r is not None for r in invalid], pa.bool_())
        out = _set(out, "explainer_version", pc.if_else(rejected, pa.scalar(None, pa.string()),
                                                        out.column("explainer_version")))
        if self.meter is not None:
            self.meter.add.remote("explain", rows.num_rows, time.perf_counter() - start, tokens)
        return out


def canary_explanations(gate: dict[str, Any], settings: ExplainerSettings, limits: Any) -> dict[str, Any]:
    """The explainer half of the quality gate: explain the first ``gate['pairs']`` usable canary
    pairs, each given the canary's own label, through the same :class:`PromptBuilder` and
    :class:`ExplainerActor` as the run, and judge what comes out.

    ``valid_rate`` = explanations that pass the validator / pairs asked (a prompt that does not
    fit or an empty output counts as not valid); ``consistency`` = explanations that state
    exactly one label, the given one / explanations generated. Both are judged on what the run
    would publish, regenerations included (``valid_first_try`` says how many needed none).
    Runs in one Ray task.

    Args:
        gate: the canary paths (``canary``, ``members``, ``jobs``, ``max_pairs``), ``pairs``,
            ``min_valid_rate``, ``min_consistency``, ``member_tokens``, ``job_tokens``.
        settings: the run's explainer.
        limits: :class:`lantern_batch.schema.RowLimits` for validating the canary's members/jobs.
    """
    from collections import Counter

    from lantern_batch import prompts
    from lantern_batch.precompute.manifest import canary_pairs

    usable, _ = canary_pairs(gate, limits)
    usable = usable[: gate["pairs"]]
    n = len(usable)
    report: dict[str, Any] = {"pairs": n, "min_valid_rate": gate["min_valid_rate"],
                              "min_consistency": gate["min_consistency"]}
    if n == 0:
        return {**report, "status": "failed", "reason": "no usable canary pairs to explain"}
    messages = [json.dumps(prompts.explainer_messages(m, j, q, lab, member_tokens=gate["member_tokens"],
                                                      job_tokens=gate["job_tokens"],
                                                      version=settings.prompt_version), ensure_ascii=False)
                for m, j, q, lab in usable]
    rows = pa.table({
        "fit_label": pa.array([lab for *_, lab in usable], pa.string()),
        "explanation": pa.nulls(n, pa.string()),
        "explainer_version": pa.array([settings.version] * n, pa.string()),
        "__explain": pa.array([True] * n), "__explain_failed": pa.array([False] * n),
        "__explain_invalid": pa.nulls(n, pa.string()),
        "__explain_attempts": pa.nulls(n, pa.int8()),
        "__messages": pa.array(messages, pa.string()),
        "__facts": pa.array([explanation_facts(m, j) for m, j, _, _ in usable], pa.string()),
    })
    prepared = PromptBuilder(settings)(rows)
    actor = ExplainerActor(settings)
    try:
        out = actor(prepared)
    finally:
        shutdown_engine(actor.llm)
    texts = out.column("explanation").to_pylist()
    invalid = out.column("__explain_invalid").to_pylist()
    reasons: Counter[str] = Counter(r for inv in invalid if inv for r in inv.split("+"))
    generated = sum(t is not None or r is not None for t, r in zip(texts, invalid, strict=True))
    label_reasons = {"no_label", "multiple_labels", "wrong_label"}
    consistent = sum(t is not None or (r is not None and not label_reasons & set(r.split("+")))
                     for t, r in zip(texts, invalid, strict=True))
    valid = sum(t is not None for t in texts)
    tries = out.column("__explain_attempts").to_pylist()
    valid_rate = valid / n
    consistency = consistent / generated if generated else 0.0
    report.update(valid=valid, valid_first_try=sum(t is not None and a == 1 for t, a in zip(texts, tries, strict=True)),
                  regenerations=settings.regenerations, generations=sum(a or 0 for a in tries), generated=generated, valid_rate=round(valid_rate, 4),
                  consistency=round(consistency, 4), invalid_by_reason=dict(reasons.most_common()),
                  examples=[t for t in texts if t][:3])
    failed = []
    if valid_rate < gate["min_valid_rate"]:
        failed.append(f"{valid_rate:.1%} of {n} canary explanations are valid, below the threshold "
                      f"{gate['min_valid_rate']:.1%}")
    if consistency < gate["min_consistency"]:
        failed.append(f"{consistency:.1%} of {generated} canary explanations state the given label, below "
                      f"the threshold {gate['min_consistency']:.1%}")
    report["status"] = "failed" if failed else "passed"
    if failed:
        report["reason"] = "; ".join(failed)
    return report
