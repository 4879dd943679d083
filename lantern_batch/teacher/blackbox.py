"""The black-box teacher T1: any OpenAI-compatible chat completions endpoint.

    export LANTERN_T1_BASE_URL=http://127.0.0.1:8000/v1 LANTERN_T1_API_KEY=...
    lantern-batch synthesize --config configs/demo_synthesize.yaml \
        --set 'teachers=[{name: t1, kind: openai, model: my-served-model}]'

What leaves the machine: only the member and job fields the config allows
(``openai.member_fields`` / ``openai.job_fields``; the member's free-text ``summary`` is not in
the default), with e-mail addresses (also ``name(at)host(dot)com`` forms), phone numbers and
URLs (also scheme-less ones such as ``jane.de/about``) in free text replaced by ``[email]`` /
``[phone]`` / ``[url]`` (``openai.redact``; the patterns are :mod:`lantern_batch.contact`'s, the
validator's ``contact_info`` uses the same). The prompt is the same versioned teacher prompt as
the vLLM stage's, so labels from T1 and T2 are comparable. Only the configured endpoint is
contacted: redirects are not followed (a 3xx is a row error), and no ``OPENAI_*`` organisation
or project header from the environment is sent.

Requests go through the ``openai`` SDK: at most ``max_concurrency`` in flight per actor (a
thread pool); the SDK retries HTTP 408, 409, 429, 5xx, timeouts and connection errors up to
``max_retries`` times, waiting what a valid ``Retry-After`` header asks (up to two minutes; a
missing, negative or unparseable one falls back to exponential backoff from ``backoff_s``,
capped at ``max_backoff_s``, with jitter). Other statuses are row errors
(``request_failed:http_<status>``), and so is a 200 whose body is no usable chat completion
(``request_failed:bad_response:<why>``): one bad response never fails the batch. An answer
that cannot be decoded (not JSON, nested too deep, a number too long) is unparseable, and
logprobs that are no log-probabilities (positive) are ignored (one-hot). Structured
output via ``response_format`` (JSON schema) and ``logprobs``/``top_logprobs`` when the endpoint
supports them; p_high/p_medium/p_low come from the label position's top logprobs, else one-hot.
An unparseable answer is asked once more with temperature 0.7.

Response cache: one JSON file per request under
``OUT/cache/teacher=NAME/members/<mm>/<member hash>/<sha256>.json``, keyed by the hash of the
endpoint's base URL and the whole request body (model, messages, parameters), so a different
endpoint or model never reuses another's answers. Entries sit in one directory per member
(:func:`member_cache_dir`; a hash of the member id, not the id) so that ``lantern-batch forget``
can delete a member's answers without the requests; entries written before that layout
(``<hh>/<sha256>.json``) are still read, and forget deletes them all, since they cannot be told
apart by member. Only responses
that became a label are cached: an unparseable or invalid answer is asked again by a rerun. A
rerun or a resumed run pays for no labelled request twice. The cache lives under the run's
output, so deleting the output deletes it (same retention as the labels). Token accounting:
``usage`` of each response (cached responses cost 0) is summed into the run summary.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openai
import pyarrow as pa

from lantern_batch import io
from lantern_batch.contact import redact
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

FREE_TEXT = {"headline", "summary", "description", "current_title", "title"}


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


def response_problem(resp: Any) -> str | None:
    """Why ``resp`` is not a usable chat completion (a short code), or None when it is.

    Checked before anything reads the response, for fresh and cached responses alike, so a
    malformed body from any endpoint is one row's error, never an exception in the batch.
    """
    if not isinstance(resp, dict):
        return "not_an_object"
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no_choices"
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        return "bad_choice"
    content = choice["message"].get("content")
    if content is not None and not isinstance(content, str):
        return "bad_content"
    if resp.get("usage") is not None and not isinstance(resp["usage"], dict):
        return "bad_usage"
    return None


class ResponseCache:
    """JSON responses on disk or S3, keyed by endpoint and request hash (see module doc)."""

    def __init__(self, directory: str | None, endpoint: str = ""):
        self.directory = directory
        self.endpoint = endpoint.rstrip("/")

    def key(self, body: dict[str, Any]) -> str:
        """Hash of this cache's endpoint, the body's model and the whole body: another endpoint
        or another model never gets this request's answer."""
        scoped = {"endpoint": self.endpoint, "model": body.get("model"), "body": body}
        blob = json.dumps(scoped, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str, member_id: str | None = None) -> str:
        if member_id is None:  # the layout before per-member directories
            return io.join(self.directory, key[:2], f"{key}.json")  # type: ignore[arg-type]
        return io.join(self.directory, member_cache_dir(member_id), f"{key}.json")  # type: ignore[arg-type]

    def get(self, key: str, member_id: str | None = None) -> dict[str, Any] | None:
        """The cached response (the member's directory first, then the older flat layout), or
        None when absent, unreadable or not a usable response."""
        if not self.directory:
            return None
        for path in dict.fromkeys([self._path(key, member_id), self._path(key)]):
            if not io.exists(path):
                continue
            try:
                resp = json.loads(io.read_text(path))
            except (OSError, ValueError, RecursionError):
                return None
            return resp if response_problem(resp) is None else None
        return None

    def put(self, key: str, response: dict[str, Any], member_id: str | None = None) -> None:
        if self.directory:
            io.write_text(self._path(key, member_id), json.dumps(response))


MEMBER_CACHE_ROOT = "members"


def member_cache_dir(member_id: str) -> str:
    """The cache directory of one member's responses, relative to a teacher's cache:
    ``members/<mm>/<sha256(member_id)[:32]>`` (a hash, so the id is not in object names)."""
    h = hashlib.sha256(str(member_id).encode("utf-8")).hexdigest()[:32]
    return f"{MEMBER_CACHE_ROOT}/{h[:2]}/{h}"


class RequestFailed(Exception):
    """A request that failed for good; ``reason`` is a short code (``http_400``,
    ``retries_exhausted:http_503``, ``bad_response:not_json``, ...)."""

    def __init__(self, reason: str, attempts: int):
        self.reason, self.attempts = reason, attempts
        super().__init__(reason)


# Longest Retry-After wait honoured; the SDK does not retry at all when asked to wait longer.
RETRY_AFTER_MAX_S = 120.0
_RETRIED_STATUSES = frozenset({408, 409, 429})


class _OpenAI(openai.OpenAI):
    """``openai.OpenAI`` whose exponential backoff is ``backoff`` (the config's ``backoff_s`` /
    ``max_backoff_s``). What to retry, how often and the ``Retry-After`` parsing stay the SDK's."""

    backoff: Callable[[int], float]

    def _calculate_retry_timeout(self, remaining_retries: int, options: Any,
                                 response_headers: Any = None) -> float:
        retry_after = self._parse_retry_after_header(response_headers)
        if retry_after is not None and math.isfinite(retry_after) and 0 < retry_after <= RETRY_AFTER_MAX_S:
            return retry_after
        return self.backoff(options.get_max_retries(self.max_retries) - remaining_retries)


@dataclass
class ChatClient:
    """A chat-completions client on the ``openai`` SDK (thread-safe).

    The SDK does the retries (``max_retries``), the per-request ``timeout_s`` and honours
    ``Retry-After``; ``backoff_s`` / ``max_backoff_s`` shape its backoff (:meth:`backoff`).
    Redirects are not followed, and without ``api_key`` no ``Authorization`` header is sent.
    """

    base_url: str
    api_key: str | None
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        self.retries = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        http = openai.DefaultHttpxClient(follow_redirects=False, event_hooks={"request": [self._count_attempt]})
        self._sdk = _OpenAI(
            base_url=self.base_url.rstrip("/"),
            # The SDK needs a key; without one the Authorization header is omitted per request.
            api_key=self.api_key or "unset",
            default_headers={"OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()},
            max_retries=self.max_retries, timeout=self.timeout_s, http_client=http,
        )
        self._sdk.backoff = self.backoff
        self._options: dict[str, Any] = {} if self.api_key else {"headers": {"Authorization": openai.Omit()}}

    def _count_attempt(self, _request: Any) -> None:
        self._local.attempts = getattr(self._local, "attempts", 0) + 1

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0 = the first) when no usable ``Retry-After``
        was sent: ``backoff_s * 2**retry``, capped at ``max_backoff_s``, times a jitter in [0.5, 1]."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** min(retry, 64)) * (0.5 + random.random() / 2)

    def _failure(self, exc: openai.OpenAIError, attempts: int) -> str:
        """The reason code of a request the SDK gave up on."""
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            reason, retried = f"http_{status}", status in _RETRIED_STATUSES or status >= 500
        elif isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
            cause = exc.__cause__
            reason = type(cause).__name__.lower() if cause is not None else type(exc).__name__.lower()
            retried = True
        else:
            reason, retried = type(exc).__name__.lower(), False
        return f"retries_exhausted:{reason}" if retried and attempts > self.max_retries else reason

    def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """POST ``/chat/completions``; returns (response JSON, attempts).

        Raises:
            RequestFailed: a non-retryable status, retries exhausted, or a response body that is
                not a usable chat completion (``bad_response:<why>``).
        """
        self._local.attempts = 0
        try:
            content = self._sdk.post("/chat/completions", body=body, cast_to=bytes, options=self._options)
            failure = None
        except openai.OpenAIError as exc:
            content, failure = None, exc
        attempts = max(1, self._local.attempts)
        with self._lock:
            self.retries += attempts - 1
        if failure is not None:
            raise RequestFailed(self._failure(failure, attempts), attempts) from failure
        try:
            resp = json.loads(content)  # type: ignore[arg-type]
        except (ValueError, RecursionError):  # not JSON, or bytes that decode to no text
            raise RequestFailed("bad_response:not_json", attempts) from None
        problem = response_problem(resp)
        if problem is not None:
            raise RequestFailed(f"bad_response:{problem}", attempts)
        return resp, attempts

    def close(self) -> None:
        self._sdk.close()


def _logprob_positions(choice: dict[str, Any]) -> tuple[list[str], list[list[tuple[int, str, float]]]] | None:
    """Token texts and top candidates from an OpenAI ``logprobs.content`` list; None when absent
    or malformed (the label then gets one-hot probabilities)."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        return None
    texts: list[str] = []
    positions: list[list[tuple[int, str, float]]] = []
    for c in content:
        if not isinstance(c, dict):
            return None
        token, tops = c.get("token", ""), c.get("top_logprobs") or []
        if not isinstance(token, str) or not isinstance(tops, list):
            return None
        cands = []
        for t in tops:
            if not isinstance(t, dict):
                return None
            text, logprob = t.get("token", ""), t.get("logprob")
            logprob = float("-inf") if logprob is None else logprob
            if not isinstance(text, str) or isinstance(logprob, bool) or not isinstance(logprob, (int, float)):
                return None
            if logprob > 0:  # no log-probability (and exp() of a large one overflows)
                return None
            cands.append((-1, text, float(logprob)))
        texts.append(token)
        positions.append(cands)
    return texts, positions


def _tokens(usage: dict[str, Any], key: str) -> int:
    """A token count from ``usage``; 0 when missing or not a non-negative number."""
    v = usage.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return 0
    return int(v)


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
        self.cache = ResponseCache(cache_dir if openai_cfg["cache"] else None, endpoint=base_url)
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

    def _call(self, key: str, body: dict[str, Any], member_id: str | None = None
              ) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(response, failure reason, served from cache). Nothing is cached here: a response
        is cached by :meth:`_one` once it has become a label."""
        cached = self.cache.get(key, member_id)
        if cached is not None:
            return cached, None, True
        try:
            resp, _ = self.client.complete(body)
        except RequestFailed as exc:
            return None, exc.reason, False
        return resp, None, False

    def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {"prompt_tokens": 0, "output_tokens": 0, "cache_hits": 0}
        first_reason = None
        for retry in (False, True):
            body = self.request_body(row, retry)
            key = self.cache.key(body)
            resp, failure, hit = self._call(key, body, row.get("member_id"))
            result["cache_hits"] += int(hit)
            if resp is None:
                result["error"] = f"request_failed:{failure}"
                return result
            if not hit:
                usage = resp.get("usage") or {}
                result["prompt_tokens"] += _tokens(usage, "prompt_tokens")
                result["output_tokens"] += _tokens(usage, "completion_tokens")
            choice = resp["choices"][0]
            text = choice["message"].get("content") or ""
            finish_reason = choice.get("finish_reason")
            try:
                parsed = parse_output(text, finish_reason=finish_reason if isinstance(finish_reason, str) else None,
                                      max_explanation_chars=self.max_chars)
                if self.check_outputs:
                    check_label(parsed, row.get("member"), row.get("job"))
            except ParseError as exc:
                first_reason = first_reason or exc.reason
                result["retried"] = True
                continue
            if not hit:
                self.cache.put(key, resp, row.get("member_id"))
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
