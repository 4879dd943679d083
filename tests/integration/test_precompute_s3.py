"""Precompute with inputs, the classifier and the outputs on S3 (a real moto_server on loopback),
run through the real CLI in a subprocess (its own local Ray, the AWS environment inherited):
a first day, an incremental day that reads the previous partition back from S3, and a run that
finds its ds locked by another holder.

    .venv/bin/python -m pytest -q tests/integration/test_precompute_s3.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from lantern_batch import io
from lantern_batch.schema import ERRORS_SCHEMA, SCORES_SCHEMA

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3_setup(s3_server, tiny_world_dirty, tiny_bert_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    from lantern_batch.classifier import FitClassifier

    local = tmp_path_factory.mktemp("pc_s3")
    cls = local / "classifier"
    FitClassifier.from_encoder(tiny_bert_dir).save(cls, {"max_length": 96},
                                                    tokenizer=AutoTokenizer.from_pretrained(str(tiny_bert_dir)))
    base = s3_server.uri("precompute")
    for name in ("members", "jobs", "pairs"):
        for i, f in enumerate(io.list_parquet_files(str(tiny_world_dirty / name))):
            io.write_table(io.read_table(f), io.join(base, "world", name), basename=f"part-{i}.parquet")
    fs, root = io.filesystem(io.join(base, "models", "classifier"))
    pafs.copy_files(str(cls), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return {"base": base, "local": local}


def _run(s3_setup, ds: str, name: str) -> subprocess.CompletedProcess:
    base = s3_setup["base"]
    cfg = {
        "inputs": {t: io.join(base, "world", t) for t in ("members", "jobs", "pairs")},
        "out": io.join(base, "out"),
        "ds": ds,
        "classifier": {"ref": io.join(base, "models", "classifier"), "batch_size": 16, "torch_threads": 2},
        "explainer": {"enabled": False},
        "ray": {"num_cpus": 4, "object_store_memory": 300_000_000},
    }
    path = s3_setup["local"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANTERN_CACHE_DIR": str(s3_setup["local"] / "cache")}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "lantern_batch.cli", "precompute", "--config", str(path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_precompute_reads_and_publishes_on_s3(s3_setup):
    out = io.join(s3_setup["base"], "out")
    first = _run(s3_setup, "2026-11-24", "day1")
    assert first.returncode == 0, first.stderr[-3000:]
    man, files = io.published_files(io.join(out, "scores", "ds=2026-11-24"))
    assert files and all(f.startswith("s3://") for f in files)
    scores = io.read_published(io.join(out, "scores", "ds=2026-11-24"), schema=SCORES_SCHEMA)
    errors = io.read_published(io.join(out, "errors", "ds=2026-11-24"), schema=ERRORS_SCHEMA)
    assert scores.schema == SCORES_SCHEMA and scores.num_rows == man["counts"]["rows_scored"] > 0
    assert errors.num_rows == man["counts"]["rows_error"] > 0
    assert man["counts"]["conservation_ok"]
    assert io.read_latest(io.join(out, "scores")) == "2026-11-24"
    assert "precompute: published s3://" in first.stdout

    second = _run(s3_setup, "2026-11-25", "day2")
    assert second.returncode == 0, second.stderr[-3000:]
    man2, _ = io.published_files(io.join(out, "scores", "ds=2026-11-25"))
    assert man2["previous"]["ds"] == "2026-11-24"
    assert man2["counts"]["rows_scored"] == 0 and man2["counts"]["rows_reused"] == scores.num_rows
    assert io.read_latest(io.join(out, "scores")) == "2026-11-25"


def test_a_locked_ds_is_refused(s3_setup):
    out = io.join(s3_setup["base"], "out")
    lock = io.PartitionLock(io.join(out, "scores", "_locks", "ds=2026-11-26.lock"), owner="other-run", ttl_s=600)
    with lock:
        proc = _run(s3_setup, "2026-11-26", "locked")
    assert proc.returncode == 1
    assert "held by other-run" in proc.stderr
    assert not io.exists(io.join(out, "scores", "ds=2026-11-26", "_SUCCESS"))
