"""Black-box teacher pieces without a model: redaction, field allow-list, the response cache,
and the HTTP client's retries and backoff against a real local HTTP server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lantern_batch.prompts import DATA_TAGS
from lantern_batch.teacher.blackbox import (
    BlackBoxTeacher,
    ChatClient,
    RequestFailed,
    ResponseCache,
    allowed_view,
    redact,
)
from lantern_batch.teacher.config import OpenAIConfig, PromptConfig


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
    cache.put(key, {"choices": [1]})
    assert cache.get(key) == {"choices": [1]}
    assert (tmp_path / "cache" / key[:2] / f"{key}.json").is_file()
    assert ResponseCache(None).get(key) is None


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
