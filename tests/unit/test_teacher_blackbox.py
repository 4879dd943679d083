"""Black-box teacher pieces without a model: redaction, field allow-list, the response cache,
and the client's retries, backoff and malformed responses against a real local HTTP server
(canned replies on loopback)."""

import gzip
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from lantern_batch.prompts import DATA_TAGS
from lantern_batch.schema import DIMENSIONS
from lantern_batch.teacher.blackbox import (
    BlackBoxTeacher,
    ChatClient,
    RequestFailed,
    ResponseCache,
    allowed_view,
    redact,
)
from lantern_batch.teacher.config import OpenAIConfig, PromptConfig
from lantern_batch.teacher.records import JOINED_SCHEMA


def test_redaction():
    text = ("Mail jane.doe@example.com or call +1 (415) 555-0134 / 555-123-4567; "
            "portfolio https://jane.dev/work and github.com/jane. Worked 2015-2019, led 12 people.")
    out = redact(text)
    for secret in ("jane.doe@example.com", "555-0134", "555-123-4567", "https://jane.dev", "github.com/jane"):
        assert secret not in out
    assert out.count("[email]") == 1 and out.count("[phone]") == 2 and out.count("[url]") == 2
    assert "2015-2019" in out and "12 people" in out
    assert redact(None) is None


def test_allowed_view_drops_fields_and_redacts_nested_text():
    member = {"member_id": "m1", "summary": "secret summary", "current_title": "Engineer",
              "experience": [{"title": "Dev", "company": "Acme", "description": "see acme.com/me"}]}
    view = allowed_view(member, ["current_title", "experience"], do_redact=True)
    assert view["summary"] is None and view["member_id"] is None
    assert view["current_title"] == "Engineer"
    assert view["experience"][0]["description"] == "see [url]"


def test_request_body_sends_only_allowed_redacted_fields(monkeypatch):
    monkeypatch.setenv("LANTERN_T1_BASE_URL", "http://127.0.0.1:9/v1")
    teacher = BlackBoxTeacher({"name": "t1", "prompt_version": "v1", "model": "m"}, OpenAIConfig().model_dump(),
                              PromptConfig().model_dump(), cache_dir=None)
    member = {"member_id": "m1", "current_title": "Engineer", "summary": "PRIVATE-SUMMARY",
              "headline": "Reach me at jane@example.com", "skills": ["Python"]}
    job = {"job_id": "j1", "title": "Dev", "company": "SecretCo", "description": "Requirements:\n- Python"}
    body = teacher.request_body({"member": member, "job": job, "query": None})
    text = json.dumps(body)
    assert "PRIVATE-SUMMARY" not in text and "jane@example.com" not in text and "SecretCo" not in text
    assert "[email]" in text and body["model"] == "m"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["fit_label"]["enum"] == ["High", "Medium", "Low"]
    assert all(f"<{t}>" in body["messages"][1]["content"] or t == "search_query" for t in DATA_TAGS)


def test_missing_endpoint_is_a_clear_error(monkeypatch):
    from lantern_batch.errors import InputError

    monkeypatch.delenv("LANTERN_T1_BASE_URL", raising=False)
    with pytest.raises(InputError, match="LANTERN_T1_BASE_URL"):
        BlackBoxTeacher({"name": "t1", "prompt_version": "v1", "model": "m"}, OpenAIConfig().model_dump(),
                        PromptConfig().model_dump(), cache_dir=None)


def test_response_cache_roundtrip(tmp_path):
    cache = ResponseCache(str(tmp_path / "cache"))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    key = cache.key(body)
    assert key == cache.key(json.loads(json.dumps(body))) and len(key) == 64
    assert cache.get(key) is None
    resp = {"choices": [{"message": {"content": "{}"}}]}
    cache.put(key, resp)
    assert cache.get(key) == resp
    assert (tmp_path / "cache" / key[:2] / f"{key}.json").is_file()
    assert ResponseCache(None).get(key) is None
    # A cached file that is no usable response is a miss, not an error.
    cache.put(key, {"choices": [1]})
    assert cache.get(key) is None
    (tmp_path / "cache" / key[:2] / f"{key}.json").write_bytes(b"\xff[")
    assert cache.get(key) is None


class _Flaky(BaseHTTPRequestHandler):
    """Answers 429 (with Retry-After), then 503, then 200; 400 for a 'bad' model."""

    calls: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(self.headers.get("Authorization", ""))
        n = len(type(self).calls)
        if body.get("model") == "bad":
            self.send_response(400)
            self.end_headers()
            return
        if n == 1:
            self.send_response(429)
            self.send_header("Retry-After", "0.05")
            self.end_headers()
            return
        if n == 2:
            self.send_response(503)
            self.end_headers()
            return
        payload = json.dumps({"choices": [{"message": {"content": "{}"}}], "usage": {"prompt_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture()
def flaky_server():
    _Flaky.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_client_retries_429_and_5xx_with_backoff(flaky_server):
    client = ChatClient(flaky_server, "k", max_retries=3, backoff_s=0.01, max_backoff_s=0.1)
    resp, attempts = client.complete({"model": "m"})
    assert attempts == 3 and client.retries == 2
    assert resp["usage"]["prompt_tokens"] == 5
    assert _Flaky.calls[0] == "Bearer k"


def test_client_gives_up(flaky_server):
    client = ChatClient(flaky_server, None, max_retries=1, backoff_s=0.01, max_backoff_s=0.1)
    with pytest.raises(RequestFailed) as exc:
        client.complete({"model": "m"})
    assert exc.value.reason == "retries_exhausted:http_503" and exc.value.attempts == 2
    with pytest.raises(RequestFailed) as exc:
        client.complete({"model": "bad"})
    assert exc.value.reason == "http_400"
    dead = ChatClient("http://127.0.0.1:9/v1", None, max_retries=1, backoff_s=0.01, max_backoff_s=0.02, timeout_s=1)
    with pytest.raises(RequestFailed, match="retries_exhausted"):
        dead.complete({"model": "m"})


def test_backoff_follows_the_config():
    client = ChatClient("http://127.0.0.1:9/v1", None, backoff_s=0.2, max_backoff_s=1.0)
    assert all(0.1 <= client.backoff(0) <= 0.2 for _ in range(20))
    assert all(0.2 <= client.backoff(1) <= 0.4 for _ in range(20))
    assert all(0.5 <= client.backoff(n) <= 1.0 for n in (3, 10, 5000))


# --- canned replies on loopback -----------------------------------------------------------------

class _Canned(BaseHTTPRequestHandler):
    """Answers each request with the server's next ``replies`` entry (the last one repeats) and
    records method, path, headers and body in ``server.seen``."""

    def _reply(self):
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with srv.lock:
            srv.seen.append({"method": self.command, "path": self.path, "body": body,
                             "headers": {k.lower(): v for k, v in self.headers.items()}})
            status, headers, payload = srv.replies[min(len(srv.seen), len(srv.replies)) - 1]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET = _reply

    def log_message(self, *args):  # keep test output clean
        pass


class CannedServer:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
        self.httpd.seen, self.httpd.lock = [], threading.Lock()
        self.reply(_ok(_answer()))
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def reply(self, *replies):
        """Serve these (status, headers, body) replies from now on, in order."""
        self.httpd.replies = list(replies)
        self.httpd.seen.clear()

    @property
    def seen(self):
        return self.httpd.seen


@pytest.fixture()
def canned():
    """A factory of canned servers, shut down after the test."""
    servers = []

    def make():
        servers.append(CannedServer())
        return servers[-1]

    yield make
    for s in servers:
        s.httpd.shutdown()
        s.httpd.server_close()


def _answer(label="High"):
    return json.dumps({"fit_label": label, "dimension_scores": dict.fromkeys(DIMENSIONS, 3),
                       "explanation": "Python skills match the role."})


def _ok(content, **extra):
    resp = {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}, **extra}
    return 200, {"Content-Type": "application/json"}, json.dumps(resp).encode()


def _teacher(monkeypatch, url, cache_dir=None, model="m", **openai_cfg):
    monkeypatch.setenv("LANTERN_T1_BASE_URL", url)
    monkeypatch.delenv("LANTERN_T1_API_KEY", raising=False)
    cfg = OpenAIConfig(**{"max_retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.05, "top_logprobs": 0,
                          **openai_cfg}).model_dump()
    prompt = PromptConfig(check_outputs=False).model_dump()
    return BlackBoxTeacher({"name": "t1", "prompt_version": "v1", "model": model}, cfg, prompt,
                           cache_dir=None if cache_dir is None else str(cache_dir))


def _batch(n=1):
    rows = [{"member_id": f"m{i}", "job_id": "j1", "pair_id": f"p{i}", "_row_key": f"p{i}#0",
             "member": {"member_id": f"m{i}", "current_title": "Engineer", "skills": ["Python"]},
             "job": {"job_id": "j1", "title": "Python Developer", "required_skills": ["Python"]}}
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=JOINED_SCHEMA)


def _label_one(teacher):
    """(fit_label, error reason) of labelling one pair."""
    row = teacher(_batch()).to_pylist()[0]
    return row["fit_label"], row["_err_reason"]


_JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("payload, why", [
    (b"<html><body>Service temporarily unavailable</body></html>", "not_json"),
    (b"", "not_json"),
    (b"\xff\xfe\xfa{", "not_json"),  # bytes that decode to no text
    (b"[" * 100_000 + b"]" * 100_000, "not_json"),  # nested too deep to decode
    (b"[1, 2]", "not_an_object"),
    (b'"just text"', "not_an_object"),
    (b"null", "not_an_object"),
    (b'{"object": "chat.completion"}', "no_choices"),
    (b'{"choices": "High"}', "no_choices"),
    (b'{"choices": []}', "no_choices"),
    (b'{"choices": [{"message": "High"}]}', "bad_choice"),
    (b'{"choices": ["High"]}', "bad_choice"),
    (b'{"choices": [{"message": {"content": 5}}]}', "bad_content"),
    (b'{"choices": [{"message": {"content": "{}"}}], "usage": "lots"}', "bad_usage"),
])
def test_a_200_that_is_no_chat_completion_is_a_row_error(canned, monkeypatch, tmp_path, payload, why):
    server = canned()
    server.reply((200, _JSON, payload))
    teacher = _teacher(monkeypatch, server.url, cache_dir=tmp_path / "cache")
    assert _label_one(teacher) == (None, f"request_failed:bad_response:{why}")
    assert len(server.seen) == 1
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_a_body_that_fails_to_decode_is_retried_then_a_row_error(canned, monkeypatch):
    server = canned()
    server.reply((200, {**_JSON, "Content-Encoding": "gzip"}, b"definitely not gzip"))
    teacher = _teacher(monkeypatch, server.url, max_retries=1)
    assert _label_one(teacher) == (None, "request_failed:retries_exhausted:decodingerror")
    assert len(server.seen) == 2
    server.reply((200, {**_JSON, "Content-Encoding": "gzip"}, gzip.compress(_ok(_answer("Low"))[2])))
    assert _label_one(teacher) == ("Low", None)


def test_odd_fields_in_a_completion_do_not_fail_the_row(canned, monkeypatch):
    server = canned()
    teacher = _teacher(monkeypatch, server.url)
    odd = {"usage": {"prompt_tokens": "many", "completion_tokens": None}}
    for logprobs in ({"content": [{"token": 5}]}, {"content": [{"token": "{", "top_logprobs": [{"token": "{"}]}]},
                     {"content": "High"}, "yes"):
        resp = json.loads(_ok(_answer("Medium"), **odd)[2])
        resp["choices"][0]["logprobs"] = logprobs
        server.reply((200, _JSON, json.dumps(resp).encode()))
        row = teacher(_batch()).to_pylist()[0]
        assert (row["fit_label"], row["_err_reason"], row["p_medium"]) == ("Medium", None, 1.0)
        assert row["_prompt_tokens"] == 0 and row["_probs_from_logprobs"] is False


@pytest.mark.parametrize("content", [
    "[" * 100_000,  # nested too deep to decode
    '{"fit_label": "High", "dimension_scores": ' + "9" * 5_000 + "}",  # an integer too long to read
    'Sure: {"fit_label": ' + "[" * 100_000,  # an object after prose, nested too deep
])
def test_an_answer_too_deep_or_too_big_to_decode_is_a_row_error_and_not_cached(canned, monkeypatch, tmp_path,
                                                                               content):
    server = canned()
    server.reply(_ok(content))
    teacher = _teacher(monkeypatch, server.url, cache_dir=tmp_path / "cache")
    assert _label_one(teacher) == (None, "unparseable:invalid_json")
    assert len(server.seen) == 2  # the answer and its one retry; the batch did not fail
    assert not list((tmp_path / "cache").rglob("*.json"))


@pytest.mark.parametrize("logprob", [800.0, 1e308, 0.5])
def test_logprobs_that_are_no_log_probabilities_fall_back_to_one_hot(canned, monkeypatch, tmp_path, logprob):
    """A positive "logprob" (exp overflows for large ones) is a malformed field: the label
    stands with one-hot probabilities, the batch does not fail, and the cached answer reads
    back the same way."""
    server = canned()
    text = _answer("Low")
    head, tail = text.split("Low", 1)
    tops = [{"token": "Low", "logprob": logprob}, {"token": "High", "logprob": -2.0}]
    resp = json.loads(_ok(text)[2])
    resp["choices"][0]["logprobs"] = {"content": [{"token": head, "top_logprobs": []},
                                                  {"token": "Low", "top_logprobs": tops},
                                                  {"token": tail, "top_logprobs": []}]}
    server.reply((200, _JSON, json.dumps(resp).encode()))
    teacher = _teacher(monkeypatch, server.url, cache_dir=tmp_path / "cache", top_logprobs=3)
    for cache_hit in (False, True):
        row = teacher(_batch()).to_pylist()[0]
        assert (row["fit_label"], row["_err_reason"], row["_cache_hit"]) == ("Low", None, cache_hit)
        assert (row["p_high"], row["p_medium"], row["p_low"]) == (0.0, 0.0, 1.0)
        assert row["_probs_from_logprobs"] is False
    assert len(server.seen) == 1


def test_label_probabilities_come_from_the_logprobs(canned, monkeypatch):
    server = canned()
    text = _answer("High")
    head, tail = text.split("High", 1)
    tops = [{"token": t, "logprob": math.log(p)} for t, p in (("High", 0.7), ("Medium", 0.2), ("Low", 0.1))]
    resp = json.loads(_ok(text)[2])
    resp["choices"][0]["logprobs"] = {"content": [{"token": head, "top_logprobs": []},
                                                  {"token": "High", "top_logprobs": tops},
                                                  {"token": tail, "top_logprobs": None}]}
    server.reply((200, _JSON, json.dumps(resp).encode()))
    row = _teacher(monkeypatch, server.url, top_logprobs=3)(_batch()).to_pylist()[0]
    assert row["fit_label"] == "High" and row["_probs_from_logprobs"] is True
    assert (row["p_high"], row["p_medium"], row["p_low"]) == pytest.approx((0.7, 0.2, 0.1))
    assert row["_prompt_tokens"] == 7 and row["_output_tokens"] == 3


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_row_errors_and_never_followed(canned, monkeypatch, status):
    elsewhere = canned()
    server = canned()
    teacher = _teacher(monkeypatch, server.url)
    for target in (f"{elsewhere.url}/chat/completions", "/v1/chat/completions", "/v1/other"):
        server.reply((status, {"Location": target}, b""))
        assert _label_one(teacher) == (None, f"request_failed:http_{status}")
        assert len(server.seen) == 1  # neither followed nor retried
    assert elsewhere.seen == []


class _RecordingClient(ChatClient):
    """A client that records which retries asked for the config's backoff (and waits none)."""

    def backoff(self, retry):
        self.__dict__.setdefault("asked", []).append(retry)
        return 0.0


@pytest.mark.parametrize("retry_after", ["-1", "-0.5", "-1e9", "soon", "", "nan", "inf", "0",
                                         "Wed, 21 Oct 2015 07:28:00 GMT", "Mon, 99 Foo 2015"])
@pytest.mark.parametrize("status", [429, 503])
def test_a_negative_or_garbage_retry_after_falls_back_to_backoff(canned, retry_after, status):
    server = canned()
    server.reply((status, {"Retry-After": retry_after}, b""), _ok(_answer()))
    client = _RecordingClient(server.url, None, max_retries=2)
    resp, attempts = client.complete({"model": "m"})
    assert attempts == 2 and client.asked == [0] and resp["usage"]["prompt_tokens"] == 7


@pytest.mark.parametrize("retry_after", ["99999", "1e400"])
def test_an_excessive_retry_after_is_no_wait_and_no_crash(canned, retry_after):
    server = canned()
    server.reply((429, {"Retry-After": retry_after}, b""), _ok(_answer()))
    client = _RecordingClient(server.url, None, max_retries=2)
    try:
        assert client.complete({"model": "m"})[1] == 2 and client.asked == [0]
    except RequestFailed as exc:  # the SDK declines to wait that long
        assert (exc.reason, exc.attempts) == ("http_429", 1)


def test_retry_after_is_honoured_and_backoff_comes_from_the_config(canned):
    server = canned()
    server.reply((429, {"Retry-After": "0.3"}, b""), _ok(_answer()))
    client = _RecordingClient(server.url, None, max_retries=2)
    t0 = time.monotonic()
    assert client.complete({"model": "m"})[1] == 2
    assert time.monotonic() - t0 >= 0.3 and "asked" not in client.__dict__
    server.reply((503, {}, b""), (503, {}, b""), _ok(_answer()))
    assert client.complete({"model": "m"})[1] == 3
    assert client.asked == [0, 1] and client.retries == 3


def test_no_key_sends_no_authorization_and_no_openai_environment(canned, monkeypatch):
    server = canned()
    for var, value in (("OPENAI_API_KEY", "sk-from-env"), ("OPENAI_ORG_ID", "org-env"),
                       ("OPENAI_PROJECT_ID", "proj-env"), ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")):
        monkeypatch.setenv(var, value)
    ChatClient(server.url, None, max_retries=0).complete({"model": "m"})
    ChatClient(server.url, "k", max_retries=0).complete({"model": "m"})
    (keyless, keyed) = [r["headers"] for r in server.seen]
    assert "authorization" not in keyless and keyed["authorization"] == "Bearer k"
    for headers in (keyless, keyed):
        assert not {"openai-organization", "openai-project"} & set(headers)
        assert "sk-from-env" not in json.dumps(headers)
    assert [json.loads(r["body"]) for r in server.seen] == [{"model": "m"}] * 2


def test_an_unparseable_answer_is_not_cached(canned, monkeypatch, tmp_path):
    server = canned()
    server.reply(_ok("I think this candidate is a good fit."))
    teacher = _teacher(monkeypatch, server.url, cache_dir=tmp_path / "cache")
    assert _label_one(teacher) == (None, "unparseable:invalid_json")
    assert len(server.seen) == 2  # the answer and its one retry
    assert not list((tmp_path / "cache").rglob("*.json"))
    # A rerun asks again; once an answer parses it is cached and the next rerun asks nothing.
    server.reply(_ok(_answer("Low")))
    assert _label_one(teacher) == ("Low", None)
    assert len(server.seen) == 1 and len(list((tmp_path / "cache").rglob("*.json"))) == 1
    server.reply(_ok(_answer("High")))
    row = teacher(_batch()).to_pylist()[0]
    assert (row["fit_label"], row["_cache_hit"], row["_prompt_tokens"]) == ("Low", True, 0)
    assert server.seen == []


def test_an_invalid_answer_that_parsed_on_retry_caches_only_the_retry(canned, monkeypatch, tmp_path):
    server = canned()
    server.reply(_ok("not json"), _ok(_answer("Medium")))
    teacher = _teacher(monkeypatch, server.url, cache_dir=tmp_path / "cache")
    assert _label_one(teacher) == ("Medium", None)
    (cached,) = (tmp_path / "cache").rglob("*.json")
    assert json.loads(cached.read_text())["choices"][0]["message"]["content"] == _answer("Medium")


def test_cache_key_includes_endpoint_and_model(canned, monkeypatch, tmp_path):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    a = ResponseCache(str(tmp_path), "http://a:8000/v1")
    assert a.key(body) == ResponseCache(str(tmp_path), "http://a:8000/v1/").key(body)
    assert a.key(body) != ResponseCache(str(tmp_path), "http://b:8000/v1").key(body)
    assert a.key(body) != a.key({**body, "model": "m2"})

    cache = tmp_path / "cache"
    first, second = canned(), canned()
    first.reply(_ok(_answer("High")))
    second.reply(_ok(_answer("Low")))
    assert _label_one(_teacher(monkeypatch, first.url, cache)) == ("High", None)
    assert _label_one(_teacher(monkeypatch, first.url, cache)) == ("High", None)
    assert len(first.seen) == 1  # the second run came from the cache
    assert _label_one(_teacher(monkeypatch, second.url, cache)) == ("Low", None)
    assert len(second.seen) == 1  # another endpoint: asked, not served first's answer
    first.reply(_ok(_answer("Medium")))
    assert _label_one(_teacher(monkeypatch, first.url, cache, model="m2")) == ("Medium", None)
    assert len(first.seen) == 1  # another model on the same endpoint: asked too


# --- redaction: each case both ways --------------------------------------------------------------

@pytest.mark.parametrize("text, secret, placeholder", [
    ("portfolio jane.de/about", "jane.de", "[url]"),
    ("see www.x.org for more", "www.x.org", "[url]"),
    ("see www.x.org.", "www.x.org", "[url]"),
    ("profile linkedin.com/in/jane-doe", "jane-doe", "[url]"),
    ("blog: jane.dev", "jane.dev", "[url]"),
    ("my site jane.co.uk", "jane.co.uk", "[url]"),
    ("write to jane(at)host(dot)com", "host", "[email]"),
    ("write to jane [at] host [dot] com", "host", "[email]"),
    ("write to JANE (AT) MAIL (DOT) ORG", "MAIL", "[email]"),
    ("write to jane.doe [at] mail.host.de", "mail.host.de", "[email]"),
    ("write to jane@host(dot)com", "host", "[email]"),
    ("call 555-1234 after six", "555-1234", "[phone]"),
    ("call 555.1234", "555.1234", "[phone]"),
    ("call5551234567", "5551234567", "[phone]"),
    ("tel:+4915112345678", "15112345678", "[phone]"),
    ("mobile +49 30 1234567", "1234567", "[phone]"),
    ("(415) 555-0134", "555-0134", "[phone]"),
    ("www.x.com", "www.x.com", "[url]"),
    ("call 5551234 after six", "5551234", "[phone]"),
    ("5551234", "5551234", "[phone]"),
    ("call5551234", "5551234", "[phone]"),
    ("Tel.5551234", "5551234", "[phone]"),
    ("call 555 1234 after six", "555 1234", "[phone]"),
    ("write to jane at host dot com", "host", "[email]"),
    ("write to JANE AT HOST DOT COM", "HOST", "[email]"),
    ("write to jane(@)host(.)com", "host", "[email]"),
    ("write to jane [@] host [.] com", "host", "[email]"),
    ("write to jane @ host . com", "host", "[email]"),
])
def test_redaction_catches(text, secret, placeholder):
    out = redact(text)
    assert secret not in out and placeholder in out


@pytest.mark.parametrize("text", [
    "Python 3.11, Java 17 and Node 18.17.0",
    "v10.15.7 on 192.168.1.100",
    "Worked 2019-2021 and 2015-2019, 2010 - 2015",
    "Awards 2019 2020 2021",
    "Started 01.05.2019 (2019-05-01)",
    "Salary $120,000 - $150,000",
    "Salary €85.000-95.000",
    "85.000-95.000 EUR",
    "USD 100000-120000",
    "100000-120000 per year",
    "100000-120000",
    "120k-150k",
    "$500-1000 bonus",
    "£45,000 - £55,000",
    "grew revenue 30-40%, team of 5-10",
    "ASP.NET, VB.NET and .NET 8",
    "Node.js/React, Vue.js and Socket-based apps",
    "src/main.py and config.yaml/ files",
    "B.Tech/M.Tech, Ph.D/MBA, e.g. i.e. a.m.",
    "ISO 27001:2013 and an i9-12900K",
    "Meet me (at) noon",
    "Led the team.it was great",
    "3.5 years of Python 3.11, Node.js and ASP.NET",
    "asp.net, vb.net and ado.net; socket.io and Socket.IO",
    "Worked 2019-2023, then 2023 - 2024",
    "Served 1234567 requests a day for 1,234,567 users",
    "Release 2.3.4567 and build 10.0.19045",
    "$5551234 raised, 5551234 EUR budget",
    "Graduated 2019 2023",
    "Worked at Acme. Co-founded Beta in 2019",
    "Ping the team @ Acme. We shipped it",
    "Back at home, dot the i's",
])
def test_redaction_keeps(text):
    assert redact(text) == text
