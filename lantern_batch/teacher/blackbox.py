"""The black-box teacher T1: any OpenAI-compatible chat completions endpoint.

    export LANTERN_T1_BASE_URL=http://127.0.0.1:8000/v1 LANTERN_T1_API_KEY=...
    lantern-batch synthesize --config configs/demo_synthesize.yaml \
        --set 'teachers=[{name: t1, kind: openai, model: my-served-model}]'

What leaves the machine: only the member and job fields the config allows
(``openai.member_fields`` / ``openai.job_fields``; the member's free-text ``summary`` is not in
the default), with e-mail addresses, phone numbers and URLs in free text replaced by
``[email]`` / ``[phone]`` / ``[url]`` (``openai.redact``). The prompt is the same versioned
teacher prompt as the vLLM stage's, so labels from T1 and T2 are comparable.

Requests: at most ``max_concurrency`` in flight per actor (a thread pool); HTTP 429, 5xx,
timeouts and connection errors are retried up to ``max_retries`` times with exponential
backoff and jitter (a ``Retry-After`` header wins); other 4xx are row errors. Structured
output via ``response_format`` (JSON schema) and ``logprobs``/``top_logprobs`` when the
endpoint supports them; p_high/p_medium/p_low come from the label position's top logprobs,
else one-hot. An unparseable answer is asked once more with temperature 0.7.

Response cache: one JSON file per request under ``OUT/cache/teacher=NAME/<hh>/<sha256>.json``,
keyed by the hash of the whole request body (model, messages, parameters): a rerun or a resumed
run pays for no request twice. It lives under the run's output, so deleting the output deletes
it (same retention as the labels). Token accounting: ``usage`` of each response (cached
responses cost 0) is summed into the run summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lantern_batch import io
from lantern_batch.errors import InputError
from lantern_batch.logs import event, get_logger
from lantern_batch.prompts import output_json_schema, teacher_messages
from lantern_batch.teacher.parsing import (
    ParseError,
    check_label,
    error_reason,
    parse_output,
    string_value_span,
)
from lantern_batch.teacher.records import LabeledRows
from lantern_batch.teacher.soft_labels import label_probs, one_hot

log = get_logger(__name__)

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|dev|ai|co|me)(?:/[^\s<>\"']*)?",
                  re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w/+])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?![\w/])")
FREE_TEXT = {"headline", "summary", "description", "current_title", "title"}


def redact(text: str | None) -> str | None:
    """Replace e-mail addresses, URLs and phone numbers in ``text``."""
    if not text:
        return text
    text = _EMAIL.sub("[email]", text)
    text = _URL.sub("[url]", text)
    # 9-15 digits: phone numbers; fewer are years, year ranges ("2015-2019"), amounts.
    return _PHONE.sub(lambda m: "[phone]" if 9 <= sum(c.isdigit() for c in m.group()) <= 15 else m.group(), text)


def allowed_view(row: dict[str, Any] | None, fields: list[str], do_redact: bool) -> dict[str, Any]:
    """Only the allowed fields of a member/job row (others None), free text redacted."""
    row = row or {}
    out: dict[str, Any] = {k: None for k in row}
    for f in fields:
        v = row.get(f)
        if do_redact:
            if isinstance(v, str):
                v = redact(v)
            elif isinstance(v, list):
                v = [{k: (redact(x) if isinstance(x, str) else x) for k, x in e.items()} if isinstance(e, dict)
                     else (redact(e) if isinstance(e, str) else e) for e in v]
        out[f] = v
    return out


class ResponseCache:
    """JSON responses on disk or S3, keyed by request hash (see module doc)."""

    def __init__(self, directory: str | None):
        self.directory = directory

    @staticmethod
    def key(body: dict[str, Any]) -> str:
        blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> str:
        return io.join(self.directory, key[:2], f"{key}.json")  # type: ignore[arg-type]

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.directory:
            return None
        path = self._path(key)
        if not io.exists(path):
            return None
        try:
            return json.loads(io.read_text(path))
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, key: str, response: dict[str, Any]) -> None:
        if self.directory:
            io.write_text(self._path(key), json.dumps(response))


class RequestFailed(Exception):
    """A request that failed for good; ``reason`` is a short code (``http_400``, ...)."""

    def __init__(self, reason: str, attempts: int):
        self.reason, self.attempts = reason, attempts
        super().__init__(reason)


@dataclass
class ChatClient:
    """A minimal chat-completions client with retries and backoff (thread-safe)."""

    base_url: str
    api_key: str | None
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        import httpx

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(base_url=self.base_url.rstrip("/"), headers=headers, timeout=self.timeout_s)
        self.retries = 0
        self._lock = threading.Lock()

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
        if retry_after:
            try:
                delay = min(self.max_backoff_s, float(retry_after))
            except ValueError:
                pass
        time.sleep(delay)

    def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """POST ``/chat/completions``; returns (response JSON, attempts).

        Raises:
            RequestFailed: a non-retryable status, or retries exhausted.
        """
        import httpx

        attempt = 0
        while True:
            try:
                resp = self._http.post("/chat/completions", json=body)
                if resp.status_code == 200:
                    return resp.json(), attempt + 1
                retryable = resp.status_code == 429 or resp.status_code >= 500
                reason, retry_after = f"http_{resp.status_code}", resp.headers.get("Retry-After")
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                retryable, reason, retry_after = True, type(exc).__name__.lower(), None
            if not retryable:
                raise RequestFailed(reason, attempt + 1)
            if attempt >= self.max_retries:
                raise RequestFailed(f"retries_exhausted:{reason}", attempt + 1)
            with self._lock:
                self.retries += 1
            self._sleep(attempt, retry_after)
            attempt += 1

    def close(self) -> None:
        self._http.close()


def _logprob_positions(choice: dict[str, Any]) -> tuple[list[str], list[list[tuple[int, str, float]]]] | None:
    """Token texts and top candidates from an OpenAI ``logprobs.content`` list."""
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    texts = [c.get("token", "") for c in content]
    positions = [[(-1, t.get("token", ""), float(t.get("logprob", float("-inf")))) for t in (c.get("top_logprobs") or [])]
                 for c in content]
    return texts, positions


class BlackBoxTeacher:
    """Ray Data UDF (actor): label JOINED rows through an OpenAI-compatible endpoint."""

    def __init__(self, teacher: dict[str, Any], openai_cfg: dict[str, Any], prompt: dict[str, Any],
                 cache_dir: str | None):
        self.name, self.version, self.model = teacher["name"], teacher["prompt_version"], teacher["model"]
        self.cfg, self.prompt = openai_cfg, prompt
        base_url = os.environ.get(openai_cfg["base_url_env"])
        if not base_url:
            raise InputError(f"black-box teacher '{self.name}': environment variable "
                             f"{openai_cfg['base_url_env']} (endpoint base URL) is not set")
        self.client = ChatClient(base_url, os.environ.get(openai_cfg["api_key_env"]),
                                 openai_cfg["max_retries"], openai_cfg["backoff_s"],
                                 openai_cfg["max_backoff_s"], openai_cfg["timeout_s"])
        self.cache = ResponseCache(cache_dir if openai_cfg["cache"] else None)
        self.pool = ThreadPoolExecutor(max_workers=openai_cfg["max_concurrency"])
        self.max_chars = int(prompt["max_explanation_chars"])
        self.check_outputs = bool(prompt.get("check_outputs", True))
        self.schema = output_json_schema(self.max_chars)

    def request_body(self, row: dict[str, Any], retry: bool = False) -> dict[str, Any]:
        member = allowed_view(row["member"], self.cfg["member_fields"], self.cfg["redact"])
        job = allowed_view(row["job"], self.cfg["job_fields"], self.cfg["redact"])
        query = redact(row.get("query")) if self.cfg["redact"] else row.get("query")
        msgs = teacher_messages(member, job, query, self.version, member_tokens=self.prompt["member_tokens"],
                                job_tokens=self.prompt["job_tokens"])
        body: dict[str, Any] = {"model": self.model, "messages": msgs, **self.cfg["request_kwargs"]}
        if self.cfg["json_schema"]:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "fit_label", "schema": self.schema, "strict": True}}
        if self.cfg["top_logprobs"]:
            body["logprobs"] = True
            body["top_logprobs"] = self.cfg["top_logprobs"]
        if retry:
            body["temperature"] = 0.7
            body["seed"] = 17
        return body

    def _call(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(response, failure reason, served from cache)."""
        key = self.cache.key(body)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, None, True
        try:
            resp, _ = self.client.complete(body)
        except RequestFailed as exc:
            return None, exc.reason, False
        self.cache.put(key, resp)
        return resp, None, False

    def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {"prompt_tokens": 0, "output_tokens": 0, "cache_hits": 0}
        first_reason = None
        for retry in (False, True):
            resp, failure, hit = self._call(self.request_body(row, retry))
            result["cache_hits"] += int(hit)
            if resp is None:
                result["error"] = f"request_failed:{failure}"
                return result
            if not hit:
                usage = resp.get("usage") or {}
                result["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                result["output_tokens"] += int(usage.get("completion_tokens") or 0)
            choice = (resp.get("choices") or [{}])[0]
            text = (choice.get("message") or {}).get("content") or ""
            try:
                parsed = parse_output(text, finish_reason=choice.get("finish_reason"),
                                      max_explanation_chars=self.max_chars)
                if self.check_outputs:
                    check_label(parsed, row.get("member"), row.get("job"))
            except ParseError as exc:
                first_reason = first_reason or exc.reason
                result["retried"] = True
                continue
            probs, found = None, False
            lp = _logprob_positions(choice)
            if lp is not None:
                texts, positions = lp
                span = string_value_span("".join(texts), "fit_label")
                if span is not None:
                    probs, found = label_probs(texts, positions, span[0])
            result.update(parsed=parsed, probs=probs if found else one_hot(parsed.fit_label), found=found)
            return result
        result["error"] = error_reason(first_reason)
        return result

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = LabeledRows(self.name, self.version, f"openai:{self.model}")
        rows = batch.to_pylist()
        todo = [r for r in rows if r.get("_err_reason") is None]
        for r in rows:
            if r.get("_err_reason") is not None:
                out.add_passthrough(r)
        retries_before = self.client.retries
        for r, res in zip(todo, self.pool.map(self._one, todo), strict=False):
            if "error" in res:
                out.add_error(r, stage="teacher", reason=res["error"], detail=f"teacher={self.name}",
                              prompt_tokens=res["prompt_tokens"], output_tokens=res["output_tokens"],
                              retried=bool(res.get("retried")))
                continue
            p = res["parsed"]
            out.add_label(r, fit_label=p.fit_label, probs=res["probs"], dimension_scores=p.dimension_scores,
                          explanation=p.explanation, prompt_tokens=res["prompt_tokens"],
                          output_tokens=res["output_tokens"], retried=bool(res.get("retried")),
                          probs_from_logprobs=res["found"], cache_hit=res["cache_hits"] > 0)
        event(log, "blackbox.batch", teacher=self.name, rows=len(todo),
              http_retries=self.client.retries - retries_before)
        return out.to_table()
