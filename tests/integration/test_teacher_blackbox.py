"""The black-box teacher T1 against a real OpenAI-compatible server: ``vllm``'s API server
(CPU build) serving the tiny random Llama on loopback, started by a module fixture.

A ``synthesize`` run with one ``openai`` teacher labels a few pairs through the server
(structured output, logprobs, token accounting, response cache); a second run of the same
pairs with ``resume=false`` takes every label from the cache: only answers that became no
label (never cached) are asked again.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pyarrow.parquet as pq
import pytest

from lantern_batch.config import load_config
from lantern_batch.teacher.config import SynthesizeConfig

pytestmark = pytest.mark.integration

FRACTION = 0.03


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def t1_server(tiny_llama_dir, tmp_path_factory):
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 with a 256 MiB KV cache
    (bf16 only where this CPU has it natively, as the pipeline's own engines)."""
    from lantern_batch.runtime import engine_kwargs

    port = _free_port()
    log_path = tmp_path_factory.mktemp("t1_server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_llama_dir),
           "--served-model-name", "t1", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", engine_kwargs({"dtype": "auto"})["dtype"], "--max-model-len", "2048", "--enforce-eager",
           "--kv-cache-memory-bytes", str(256 * 2**20), "--disable-log-stats",
           "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError("vLLM server exited:\n" + log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() > deadline:
                raise RuntimeError("vLLM server did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(1)
        yield base
    finally:
        kids = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k in kids:
            if k.is_running():
                k.kill()


def _config(world: pathlib.Path, out: pathlib.Path, resume: bool = True) -> SynthesizeConfig:
    return load_config(SynthesizeConfig, "configs/demo_synthesize.yaml", [
        f"inputs.members={world / 'members'}", f"inputs.jobs={world / 'jobs'}",
        f"inputs.pairs={world / 'pairs'}", f"out={out}", f"sample_fraction={FRACTION}",
        "teachers=[{name: t1, kind: openai, model: t1, prompt_version: v0}]",
        "prompt.member_tokens=100", "prompt.job_tokens=100", "prompt.max_explanation_chars=40",
        # Mechanics with a tiny model or a canned server: its text is no fit explanation, so the
        # output check (tested in test_teacher_synthesize) is off here.
        "prompt.check_outputs=false",
        "openai.request_kwargs={temperature: 0.0, max_tokens: 128}", "openai.max_concurrency=4",
        f"resume={str(resume).lower()}",
    ])


def test_blackbox_teacher_labels_through_a_real_server_and_caches(ray_local, tiny_world, t1_server, tmp_path,
                                                                     monkeypatch):
    from lantern_batch.teacher.job import run

    monkeypatch.setenv("LANTERN_T1_BASE_URL", t1_server)
    monkeypatch.setenv("LANTERN_T1_API_KEY", "test-key")
    out = tmp_path / "synth"
    assert run(_config(tiny_world, out)) == 0
    first = json.loads((out / "run_summary.json").read_text())["passes"]["t1"]
    assert first["conserved"] and first["processed"] > 0
    labels = pq.read_table(str(out / "labels" / "teacher=t1"), partitioning=None)
    errors = pq.read_table(str(out / "errors"), partitioning=None) if list((out / "errors").glob("part-*")) else None
    n_err = errors.num_rows if errors is not None else 0
    assert labels.num_rows + n_err == first["processed"]
    assert labels.num_rows >= first["processed"] // 2  # the grammar makes most outputs parse
    assert set(labels.column("model_ref").to_pylist()) == {"openai:t1"}
    total = labels.column("p_high").to_numpy() + labels.column("p_medium").to_numpy() + labels.column("p_low").to_numpy()
    assert (abs(total - 1) < 1e-3).all()
    assert first["prompt_tokens"] > 0 and first["output_tokens"] > 0
    # Only answers that became labels are cached (one per labelled pair).
    cache_files = list((out / "cache" / "teacher=t1").rglob("*.json"))
    assert 0 < len(cache_files) <= first["labelled"]

    # Same pairs again from scratch: every label comes from the cache. Tokens are paid only for
    # answers that did not parse the first time (the pair's first ask, or both of an error's).
    assert run(_config(tiny_world, out, resume=False)) == 0
    second = json.loads((out / "run_summary.json").read_text())["passes"]["t1"]
    assert second["processed"] == first["processed"]
    assert second["cache_hits"] == second["labelled"] == first["labelled"]
    assert second["prompt_tokens"] <= first["prompt_tokens"]
    assert (second["prompt_tokens"] == 0) == (first["retried"] == 0)
    again = pq.read_table(str(out / "labels" / "teacher=t1"), partitioning=None)
    assert sorted(again.column("pair_id").to_pylist()) == sorted(labels.column("pair_id").to_pylist())
    assert os.environ["LANTERN_T1_API_KEY"] not in (out / "resolved_config.yaml").read_text()
