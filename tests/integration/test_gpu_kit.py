"""The GPU measurement kit's CPU dry run (``bash bench/gpu/run.sh --cpu --tiny``), so the kit cannot
rot between GPU leases: every section runs the project's own code path on tiny models and writes
positive numbers, and the table is printed last.

The run hides every installed package the GPU image lacks (``--simulate-image``:
bench/gpu/imagesim, bench/gpu/image-packages.txt), Ray, vLLM, pydantic and DeepSpeed among them,
so it also proves that the classifier stage and the loss code import and run without them. About
15 s on an idle 2-core machine (~40 s beside a running demo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("ceilings", "classifier", "train", "generate")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OUT", None)
    env.pop("PYTHONPATH", None)
    env["PYTHON"] = sys.executable
    return env


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-kit")
    proc = subprocess.run(
        ["bash", str(ROOT / "bench/gpu/run.sh"), "--cpu", "--tiny", "--simulate-image", "--out", str(out)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads((out / "gpu-dryrun.json").read_text())


def test_runs_without_what_the_gpu_image_lacks(dry_run):
    _, res = dry_run
    assert res["image_simulated"] is True
    assert res["environment"] == {"ray": False, "vllm": False, "deepspeed": False, "pydantic": False}
    assert res["mode"] == "cpu-tiny"
    assert res["errors"] == []


def test_every_section_has_positive_numbers(dry_run):
    _, res = dry_run
    assert all(s in res and "error" not in res[s] and "skipped" not in res[s] for s in SECTIONS)
    c = res["ceilings"]
    assert c["matmul_tflops_bf16"] > 0 and c["matmul_tflops_fp32"] > 0 and c["copy_gbps_read_plus_write"] > 0

    models = res["classifier"]["models"]
    assert set(models) == {"minilm", "modernbert-base"}
    for m in models.values():
        assert m["weights"].startswith("random") and m["parameters"] > 0
        assert len(m["max_lengths"]) == 2
        for point in m["max_lengths"].values():
            assert point["naive_pairs_per_s"] > 0 and point["naive_mfu_vs_fp32"] > 0
            assert len(point["batches"]) == 2
            for b in point["batches"].values():
                assert b["stage_pairs_per_s"] > 0 and b["speedup_vs_naive"] > 0
                assert 0 < b["mfu_forward"] and 0 < b["forward_share_of_stage"] <= 1

    train = res["train"]["models"]
    assert set(train) == {"smollm2-135m-pruned", "llama-1b"}
    for m in train.values():
        assert m["tokens_per_s"] > 0 and m["mfu_6n"] > 0 and m["mfu_model"] > 0
        assert set(m["loss_parts"]) == {"sft", "kd"} and m["loss_parts"]["kd"] > 0
    assert train["smollm2-135m-pruned"]["layers_kept"] == 2  # every 2nd of 4 layers, as layer_pruned keeps

    gen = res["generate"]
    assert len(gen["transformers"]) == 2
    assert all(p["output_tokens_per_s"] > 0 for p in gen["transformers"].values())
    assert gen["vllm"]["skipped"]  # a stated reason, not a silent gap


def test_table_is_printed_last(dry_run):
    stdout, _ = dry_run
    lines = stdout.rstrip().splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("GPU kit: cpu-tiny"))
    table = lines[start:]
    assert not any(ln.startswith("[kit ") for ln in table)
    assert table[1].split() == ["section", "what", "value"]
    for section in ("ceiling", "classifier", "train", "generate"):
        assert any(ln.startswith(section) for ln in table[3:]), section
    assert "vllm" in table[-1]


def test_kit_modules_import_without_ray_or_pydantic():
    """The project modules the kit runs, imported with the GPU image's packages only."""
    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('ray') is None and importlib.util.find_spec('pydantic') is None\n"
        "import lantern_batch.precompute.classifier_stage, lantern_batch.precompute.route\n"
        "import lantern_batch.classifier, lantern_batch.distill.losses, lantern_batch.distill.decoder\n"
        "import lantern_batch.prompts, lantern_batch.taxonomy, lantern_batch.models\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pydantic', 'vllm', 'deepspeed'))\n"
        "assert not bad, bad\n"
    )
    env = _env()
    env["PYTHONPATH"] = f"{ROOT / 'bench/gpu/imagesim'}{os.pathsep}{ROOT}"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
