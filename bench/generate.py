"""Benchmark: throughput and peak memory of ``lantern-batch generate`` at 100k and 1M pairs.

    python bench/generate.py            # ~1 min on 2 cores; writes bench/results/generate.json

Each size runs in a fresh subprocess (members = pairs / 10, jobs = pairs / 50, 1,500 seed rows),
so its peak RSS is its own: the parent reads it with ``os.wait4`` (per-child rusage; the
cumulative ``RUSAGE_CHILDREN`` would carry the first child's peak into the second). A third
child that only imports the generator gives the interpreter + library baseline. The claim
checked: streaming keeps memory flat, i.e. peak RSS at 1M pairs <= 1.5x the peak at 100k.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SIZES = (100_000, 1_000_000)
MAX_RSS_RATIO = 1.5

CHILD = """
import json, sys, time
from lantern_batch.world import GenerateConfig, generate
n, out = int(sys.argv[1]), sys.argv[2]
if n == 0:
    print(json.dumps({"seconds": 0.0}))
    sys.exit(0)
cfg = GenerateConfig(out=out, num_members=n // 10, num_jobs=n // 50, num_pairs=n, num_seed=1500)
start = time.perf_counter()
summary = generate(cfg)
print(json.dumps({"seconds": time.perf_counter() - start, **summary}))
"""


def run_child(num_pairs: int, out: str) -> dict:
    """Run one generate in a fresh interpreter; return its summary, wall time and peak RSS."""
    env = {**os.environ, "LANTERN_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(num_pairs), out],
                            stdout=subprocess.PIPE, env=env, cwd=ROOT)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"generate at {num_pairs} pairs failed with exit code {proc.returncode}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: ru_maxrss is in KiB
    return result


def main() -> int:
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        baseline = run_child(0, tmp)
        print(f"import baseline: peak RSS {baseline['peak_rss_mb']:.0f} MB")
        for n in SIZES:
            t0 = time.perf_counter()
            r = run_child(n, os.path.join(tmp, f"world-{n}"))
            r["wall_seconds_incl_startup"] = round(time.perf_counter() - t0, 2)
            r["pairs_per_s"] = round(n / r["seconds"])
            runs.append(r)
            print(f"{n:>9,} pairs: {r['seconds']:6.1f} s, {r['pairs_per_s']:>7,} pairs/s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
    small, large = runs
    rss_ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    above = (large["peak_rss_mb"] - baseline["peak_rss_mb"]) / max(small["peak_rss_mb"] - baseline["peak_rss_mb"], 1e-9)
    rate_ratio = large["pairs_per_s"] / small["pairs_per_s"]
    flat = rss_ratio <= MAX_RSS_RATIO
    print(f"peak RSS 1M / 100k = {rss_ratio:.2f}x (limit {MAX_RSS_RATIO}x): {'PASS' if flat else 'FAIL'}")
    print(f"RSS above the import baseline, 1M / 100k = {above:.2f}x; throughput 1M / 100k = {rate_ratio:.2f}x")
    report = {
        "benchmark": "generate",
        "machine": "2-core x86-64 CPU VM, 24 GiB, no GPU",
        "date": "2026-11-24",
        "python": platform.python_version(),
        "sizing": "members = pairs / 10, jobs = pairs / 50, num_seed = 1500, chunk_rows = 100000",
        "baseline_import_peak_rss_mb": baseline["peak_rss_mb"],
        "runs": [
            {k: r[k] for k in ("pairs", "members", "jobs", "seed", "seconds", "pairs_per_s", "peak_rss_mb",
                               "wall_seconds_incl_startup", "apply_rate", "seed_high", "seed_medium", "seed_low")}
            for r in runs
        ],
        "peak_rss_ratio_1m_vs_100k": round(rss_ratio, 3),
        "rss_above_baseline_ratio_1m_vs_100k": round(above, 3),
        "throughput_ratio_1m_vs_100k": round(rate_ratio, 3),
        "max_rss_ratio": MAX_RSS_RATIO,
        "flat_memory": flat,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generate.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS / 'generate.json'}")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
