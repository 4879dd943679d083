"""The vLLM teacher stage: a Ray actor that owns one ``vllm.LLM`` and labels batches of pairs.

    ds.map_batches(VLLMTeacher, fn_constructor_kwargs={...}, batch_size=32, concurrency=1,
                   num_cpus=1, batch_format="pyarrow", max_restarts=2, max_task_retries=2)

Reads :data:`~lantern_batch.teacher.records.JOINED_SCHEMA` rows (member and job structs,
query, pair keys, error columns) and writes :data:`~lantern_batch.teacher.records.LABELED_SCHEMA`
rows: one label or one error per input row, never fewer, never more.

Per batch:

1. Build the chat prompt (:func:`lantern_batch.prompts.teacher_messages`), apply the model's
   chat template and tokenise once. A prompt whose tokens plus ``max_tokens`` exceed the
   engine's ``max_model_len`` becomes an ``over_context`` error row (it could not finish).
2. ``LLM.generate`` over token ids with JSON-schema structured decoding (``fit_label`` first)
   and ``logprobs = max(topk, 8)``.
3. Parse each output (:mod:`~lantern_batch.teacher.parsing`) and check it
   (:func:`~lantern_batch.teacher.parsing.check_label`: the explanation validator and the
   dimension scores against the label); rows that fail are generated again, ``retries`` times at
   most, with ``retry_sampling_params`` and the next seed each time (with ``retry_keeps_label``
   the retry's schema allows only the label the first pass chose, so a retry rewrites the
   scores and the explanation, never the judgement); still failing -> ``unparseable:<reason>`` or
   ``invalid_output:<reasons>`` errors, never labels.
4. p_high/p_medium/p_low from the logprobs at the fit-label position
   (:mod:`~lantern_batch.teacher.soft_labels`) and the sparse top-k of the explanation tokens
   (:mod:`~lantern_batch.teacher.topk`).

**Own actor vs. ``ray.data.llm``.** Both run the same engine; ``bench/teacher.py`` measures
them on the same prompts (see ``bench/RESULTS.md``: the processor reached 0.9x–1.0x this
stage's tokens/s here). This class is used because the stage needs things the processor's
fixed preprocess -> engine -> postprocess chain does not give per row: the over-context check
before the engine sees the prompt (the processor fails the whole batch), the retries of
unparseable outputs with other sampling parameters inside the same batch, and the token
offsets of the sampled tokens to find the label position and the explanation span. On CPU the
processor also needs a ``placement_group_config`` with CPU bundles and
``log_engine_metrics=False``; this actor needs neither.

**Engine death.** If the engine process dies (``EngineDeadError``), the actor exits so Ray
restarts it (``max_restarts``) and Ray Data retries the batch on the new actor
(``max_task_retries``); a batch is committed only by the writer, so nothing is written twice.
``LANTERN_FAULT_CRASH_ONCE=<path>`` makes the first actor to see a batch exit abruptly (once
per path): the restart tests use it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pyarrow as pa

from lantern_batch.logs import event, get_logger
from lantern_batch.prompts import output_json_schema, teacher_messages
from lantern_batch.runtime import retry_sampling, shutdown_engine
from lantern_batch.schema import FIT_LABELS
from lantern_batch.teacher.parsing import (
    ParseError,
    check_label,
    error_reason,
    parse_output,
    string_value_span,
)
from lantern_batch.teacher.records import LabeledRows
from lantern_batch.teacher.soft_labels import Candidate, label_probs, one_hot
from lantern_batch.teacher.topk import explanation_topk

log = get_logger(__name__)

OUTPUT_EXCERPT_CHARS = 400
"""How much of a rejected teacher output its error row's ``detail`` keeps."""

FAULT_ENV = "LANTERN_FAULT_CRASH_ONCE"
MIN_LABEL_LOGPROBS = 8
"""Candidates needed at the label position: the grammar leaves ~6 label-starting tokens."""


def _maybe_crash() -> None:
    path = os.environ.get(FAULT_ENV)
    if path and not os.path.exists(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)  # an abrupt death, as an OOM kill or a segfault would be


def output_tokens(output: Any, tokenizer: Any) -> tuple[list[int], list[str], list[list[Candidate]]]:
    """Sampled token ids, their texts and the top candidates per position of a vLLM
    ``CompletionOutput``. Texts come from the logprobs' decoded tokens; when they do not
    concatenate to the output text, they are recomputed by incremental decoding."""
    ids = list(output.token_ids)
    positions: list[list[Candidate]] = []
    texts: list[str] = []
    for tid, lp in zip(ids, output.logprobs or [], strict=False):
        positions.append([(int(k), v.decoded_token or "", float(v.logprob)) for k, v in lp.items()])
        texts.append((lp[tid].decoded_token or "") if tid in lp else "")
    if "".join(texts) != output.text:
        texts, prev = [], ""
        for i in range(len(ids)):
            cur = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
            texts.append(cur[len(prev):])
            prev = cur
    return ids, texts, positions


def _n_out(result: Any) -> int:
    """Output tokens of a generation result (0 when the engine failed on it)."""
    return len(result.outputs[0].token_ids) if result is not None else 0


class VLLMTeacher:
    """Ray Data UDF (actor): label JOINED rows with one vLLM engine (see module doc)."""

    def __init__(self, teacher: dict[str, Any], vllm_cfg: dict[str, Any], prompt: dict[str, Any],
                 topk: int):
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        from lantern_batch.models import resolve

        self.name, self.version = teacher["name"], teacher["prompt_version"]
        self.model_ref = teacher["model"]
        self.prompt = prompt
        self.topk = topk
        from lantern_batch.runtime import engine_kwargs

        kwargs = engine_kwargs({**vllm_cfg["engine_kwargs"], **teacher.get("engine_kwargs", {})})
        self.llm = LLM(model=str(resolve(self.model_ref)), **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.max_chars = int(prompt["max_explanation_chars"])
        self.check_outputs = bool(prompt.get("check_outputs", True))
        sampling = {**vllm_cfg["sampling_params"], **teacher.get("sampling_params", {})}
        retries = int(vllm_cfg.get("retries", 1))
        retry_overrides = vllm_cfg.get("retry_sampling_params", {})
        self.retry_keeps_label = bool(vllm_cfg.get("retry_keeps_label", True))
        n_logprobs = max(topk, MIN_LABEL_LOGPROBS)

        def params(kw: dict[str, Any], labels: tuple[str, ...] = FIT_LABELS) -> Any:
            so = StructuredOutputsParams(json=output_json_schema(self.max_chars, labels),
                                         **vllm_cfg.get("structured_outputs", {}))
            return SamplingParams(**kw, logprobs=n_logprobs, structured_outputs=so)

        self.params = params(sampling)
        # Retry k's parameters by the label it must keep (None: any label).
        self.retry_params: list[dict[str | None, Any]] = []
        for k in range(retries):
            kw = retry_sampling(sampling, retry_overrides, k)
            by_label = {None: params(kw)}
            if self.retry_keeps_label:
                by_label.update({label: params(kw, (label,)) for label in FIT_LABELS})
            self.retry_params.append(by_label)
        self.max_tokens = max(int(p.max_tokens or 16) for p in (self.params, *(r[None] for r in self.retry_params)))
        event(log, "teacher.engine_ready", teacher=self.name, max_model_len=self.max_model_len)

    def __del__(self):
        # Ray Data drops the UDF when the actor exits gracefully: stop the engine process here,
        # not in interpreter teardown, where its exit races the resource tracker's. Nothing is
        # imported here: when __del__ runs in teardown after all, imports fail (sys.meta_path is
        # None) and Python prints that as a traceback.
        shutdown_engine(getattr(self, "llm", None))

    # -- prompts ---------------------------------------------------------------------------

    def prompt_ids(self, row: dict[str, Any]) -> list[int]:
        msgs = teacher_messages(row["member"], row["job"], row.get("query"), self.version,
                                member_tokens=self.prompt["member_tokens"], job_tokens=self.prompt["job_tokens"])
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- generation ------------------------------------------------------------------------

    def _generate(self, prompts: list[list[int]], params: Any) -> list[Any]:
        """Generate for token-id prompts; an exception isolates the failing prompts (None)."""
        from vllm.inputs import TokensPrompt

        try:
            from vllm.v1.engine.exceptions import EngineDeadError
        except ImportError:  # pragma: no cover - older layouts
            EngineDeadError = RuntimeError  # noqa: N806

        if not prompts:
            return []
        reqs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        try:
            return self.llm.generate(reqs, params, use_tqdm=False)
        except EngineDeadError:
            event(log, "teacher.engine_dead", teacher=self.name)
            os._exit(1)  # let Ray restart the actor; the batch is retried there
        except Exception:  # noqa: BLE001 - isolate the rows that make the engine raise
            if len(reqs) == 1:
                return [None]
            each = params if isinstance(params, list) else [params] * len(prompts)
            return [self._generate([p], q)[0] for p, q in zip(prompts, each, strict=True)]

    def _first_label(self, result: Any) -> str | None:
        """The fit label a rejected output chose (the greedy pass: the label its soft labels
        favour), or None when it has none to keep (engine error, unparseable output)."""
        if result is None:
            return None
        try:
            return parse_output(result.outputs[0].text, max_explanation_chars=self.max_chars).fit_label
        except ParseError:
            return None

    def _label(self, out: LabeledRows, row: dict[str, Any], result: Any, n_prompt: int,
               retried: bool) -> str | None:
        """Emit a label for ``result``; return the parse failure reason instead, if any."""
        if result is None:
            return "engine_error"
        o = result.outputs[0]
        try:
            parsed = parse_output(o.text, finish_reason=o.finish_reason, max_explanation_chars=self.max_chars)
            if self.check_outputs:
                check_label(parsed, row.get("member"), row.get("job"))
        except ParseError as exc:
            return exc.reason
        ids, texts, positions = output_tokens(o, self.tokenizer)
        text = "".join(texts)
        label_span = string_value_span(text, "fit_label")
        probs, found = label_probs(texts, positions, label_span[0]) if label_span else (None, False)
        if not found:
            probs = one_hot(parsed.fit_label)
        tok_ids = top_ids = top_lps = None
        expl_span = string_value_span(text, "explanation")
        if self.topk > 0 and expl_span is not None:
            tok_ids, top_ids, top_lps = explanation_topk(ids, texts, positions, expl_span, self.topk)
        out.add_label(
            row, fit_label=parsed.fit_label, probs=probs, dimension_scores=parsed.dimension_scores,
            explanation=parsed.explanation, token_ids=tok_ids, topk_ids=top_ids, topk_logprobs=top_lps,
            prompt_tokens=n_prompt, output_tokens=len(ids),
            cached_tokens=int(getattr(result, "num_cached_tokens", 0) or 0),
            retried=retried, probs_from_logprobs=found,
        )
        return None

    def __call__(self, batch: pa.Table) -> pa.Table:
        _maybe_crash()
        out = LabeledRows(self.name, self.version, self.model_ref)
        todo: list[tuple[dict[str, Any], list[int]]] = []
        for row in batch.to_pylist():
            if row.get("_err_reason") is not None:
                out.add_passthrough(row)
                continue
            ids = self.prompt_ids(row)
            if len(ids) + self.max_tokens > self.max_model_len:
                out.add_error(row, stage="teacher", reason="over_context", prompt_tokens=len(ids),
                              detail=f"teacher={self.name} prompt_tokens={len(ids)} "
                                     f"max_tokens={self.max_tokens} max_model_len={self.max_model_len}")
                continue
            todo.append((row, ids))
        results = self._generate([ids for _, ids in todo], self.params)
        # Rows still without a label: (row, prompt ids, first reason, output tokens so far,
        # last reason, last result, the label a retry keeps or None).
        pending: list[tuple[dict[str, Any], list[int], str, int, str, Any, str | None]] = []
        for (row, ids), res in zip(todo, results, strict=False):
            reason = self._label(out, row, res, len(ids), retried=False)
            if reason is not None:
                keep = self._first_label(res) if self.retry_keeps_label else None
                pending.append((row, ids, reason, _n_out(res), reason, res, keep))
        for by_label in self.retry_params:  # each retry samples with the next seed
            if not pending:
                break
            results = self._generate([p[1] for p in pending], [by_label[p[6]] for p in pending])
            still = []
            for (row, ids, first, n_out, _, _, keep), res in zip(pending, results, strict=False):
                reason = self._label(out, row, res, len(ids), retried=True)
                if reason is not None:
                    still.append((row, ids, first, n_out + _n_out(res), reason, res, keep))
            pending = still
        for row, ids, first, n_out, reason, res, keep in pending:
            # The last try's text (its start): what the teacher wrote is what a reader of the
            # error table needs to judge the reason.
            said = json.dumps(res.outputs[0].text[:OUTPUT_EXCERPT_CHARS], ensure_ascii=False) if res is not None else "null"
            out.add_error(row, stage="teacher", reason=error_reason(reason), prompt_tokens=len(ids),
                          output_tokens=n_out, retried=bool(self.retry_params),
                          detail=f"teacher={self.name} first={first} tries={1 + len(self.retry_params)} "
                                 + (f"kept_label={keep} " if keep else "") + f"output={said}")
        return out.to_table()
