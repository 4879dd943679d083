"""Hardware-dependent choices: the engine dtype ``auto`` and bf16 autocast follow native bf16."""

import pytest
import torch

from lantern_batch.classifier import autocast_context, bf16_supported
from lantern_batch.runtime import engine_kwargs


def test_engine_dtype_auto_is_bf16_only_where_the_cpu_has_it():
    want = "bfloat16" if bf16_supported("cpu") else "float32"
    assert engine_kwargs({"dtype": "auto", "max_model_len": 512}) == {"dtype": want, "max_model_len": 512}
    assert engine_kwargs({"max_model_len": 512})["dtype"] == want  # unset means auto
    # An explicit dtype is the user's choice.
    assert engine_kwargs({"dtype": "bfloat16"}) == {"dtype": "bfloat16"}
    assert engine_kwargs({"dtype": "float32"}) == {"dtype": "float32"}


def test_autocast_never_emulates_bf16_on_a_cpu_without_it():
    a = torch.randn(8, 8)
    with autocast_context("cpu", True):
        on = (a @ a).dtype
    with autocast_context("cpu", False):
        off = (a @ a).dtype
    assert off == torch.float32
    assert on == (torch.bfloat16 if bf16_supported("cpu") else torch.float32)


_DEAD_TRACKER = """
import os, signal, sys, time
from multiprocessing import resource_tracker, shared_memory
shm = shared_memory.SharedMemory(create=True, size=16)
os.kill(resource_tracker._resource_tracker._pid, signal.SIGKILL)  # as vLLM's engine shutdown does
time.sleep(0.3)
if sys.argv[1] == "quiet":
    from lantern_batch.runtime import quiet_dead_resource_tracker
    quiet_dead_resource_tracker()
    quiet_dead_resource_tracker()  # idempotent
shm.close()
shm.unlink()
time.sleep(0.3)  # a relaunched tracker prints its traceback asynchronously
"""


@pytest.mark.parametrize("mode", ["loud", "quiet"])
def test_a_dead_resource_tracker_prints_no_traceback_after_shutdown(mode):
    """After an engine shutdown killed the resource tracker, unlinking shared memory relaunches
    one that prints ``KeyError: '/psm_…'``; :func:`quiet_dead_resource_tracker` skips it."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _DEAD_TRACKER, mode], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert ("KeyError" in run.stderr) is (mode == "loud"), run.stderr


def test_engine_shutdown_quiets_the_resource_tracker_before_the_engine_goes(monkeypatch):
    """vLLM's engine shutdown kills the tracker and unlinks shared memory in the same call: the
    quiet unregister must be in place before it (a KeyError traceback printed during a
    successful demo's precompute, 2026-12-08), and a second shutdown is harmless."""
    from multiprocessing import resource_tracker
    from types import SimpleNamespace

    from lantern_batch.runtime import shutdown_engine

    monkeypatch.setattr(resource_tracker, "unregister", resource_tracker.unregister)  # restored after
    seen = []
    core = SimpleNamespace(shutdown=lambda: seen.append(getattr(resource_tracker.unregister, "quiet_when_dead", False)))
    llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=core))
    shutdown_engine(llm)
    shutdown_engine(llm)
    shutdown_engine(None)
    assert seen == [True, True]
