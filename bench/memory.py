"""Benchmark: peak memory of synthesize's input scan and of ``validate`` at 100k and 1M pairs.

    python bench/memory.py            # ~5 min on 2 cores; writes bench/results/memory.json
    python bench/memory.py --sizes 20000 200000   # a quicker look

The claim checked (issue 13): no process holds a structure that grows with the number of pairs,
so peak RSS at 1M pairs <= 1.5x the peak at 100k, for

* **scan**: synthesize's input stage without the engine, as a resumed pass runs it: every shard
  of the scan (:func:`lantern_batch.teacher.job._scan_shard`: the shard's done rows streamed from
  the commit markers, its later copies, skips and changed keys, written as plan files), one shard
  after another in one process, then the join's plan reads (:meth:`ScanPlan.lookup`) for every
  batch of 8,192 pairs. ``shard_rows`` is 120,000, so 100k pairs (with the injected bad rows,
  ~102k) are one shard and 1M are 9.
* **validate**: ``validate_path("pairs", ...)`` (streamed in batches of 65,536 rows, duplicates
  found in passes over hash buckets, ``shard_rows`` 120,000 as well), error rows written.

Each is also measured the old way, for comparison: the scan in one shard in memory (the whole
done set from :func:`~lantern_batch.teacher.store.load_done`, then
:func:`~lantern_batch.teacher.inputs.scan_pairs`: what ``_scan`` held before), and validate as
``validate_table(read_table(...))``.

Every measurement runs in a fresh interpreter; the parent reads its peak RSS with ``os.wait4``
(per-child rusage), and stays small itself (it imports no pyarrow): a child's ``ru_maxrss`` can
carry the parent's high-water mark across a vfork and exec. The worlds (``lantern_batch.world``:
members = pairs / 10, jobs = pairs / 50, 2% injected bad rows, so duplicates and errors) and the
markers of an earlier pass (half the pairs labelled, a tenth of those since changed; markers of
20,000 rows) are written by a setup child. Member and job content hashes are one constant (the
side tables are broadcast and sized by members and jobs, not pairs; they are not what is
measured here), so a pair's fingerprint depends on its query only.
"""

from __future__ import annotations

import argparse
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
SHARD_ROWS = 120_000
JOIN_BATCH = 8_192
MARKER_ROWS = 20_000
MAX_RSS_RATIO = 1.5
KINDS = ("scan", "scan_old", "validate", "validate_old")


# --------------------------------------------------------------------------- children


class _SameHash(dict):
    """A content index where every id has the same hash (see the module doc)."""

    def get(self, key, default=None):  # noqa: ANN001
        return "h"

    def __bool__(self) -> bool:
        return True


def _setup(n: int, root: str) -> dict:
    import pyarrow as pa

    from lantern_batch.precompute.fingerprints import content_fingerprints
    from lantern_batch.teacher import store
    from lantern_batch.teacher.inputs import pair_ids, pair_read_tasks, read_row_group
    from lantern_batch.world import GenerateConfig, generate

    generate(GenerateConfig(out=f"{root}/world", num_members=n // 10, num_jobs=n // 50, num_pairs=n, num_seed=0,
                            inject_bad_rows=0.02))
    seen: set[tuple[str, str]] = set()
    keys: list[str] = []
    fps: list[str | None] = []
    files = 0

    def flush() -> None:
        nonlocal keys, fps, files
        markers = store.marker_rows(keys, [None] * len(keys), [None] * len(keys), input_fingerprints=fps,
                                    teacher_version="tv")
        store.commit_batch(f"{root}/out", "t", "v1", pa.table({}), pa.table({}), markers)
        keys, fps, files = [], [], files + 1

    for task in pair_read_tasks(f"{root}/world/pairs"):
        t = read_row_group(task.__dict__, columns=["member_id", "job_id", "query"])
        mids, jids, queries = (t.column(c).to_pylist() for c in ("member_id", "job_id", "query"))
        for pid, m, j, q in zip(pair_ids(mids, jids), mids, jids, queries, strict=True):
            if pid is None or (m, j) in seen:
                continue
            seen.add((m, j))
            if int(pid[:2], 16) % 2 == 0:  # half the pairs were labelled ...
                keys.append(f"{pid}#0")
                # ... a tenth of those from content that has changed since
                fps.append("changed" if int(pid[2:4], 16) % 10 == 0 else content_fingerprints(["h"], ["h"], [q])[0])
            if len(keys) == MARKER_ROWS:
                flush()
    if keys:
        flush()
    return {"pairs_rows": sum(t.num_rows for t in pair_read_tasks(f"{root}/world/pairs")),
            "marker_files": files}


def _scan(root: str) -> dict:
    import numpy as np

    from lantern_batch.teacher import job as teacher_job
    from lantern_batch.teacher.inputs import ScanPlan, pair_read_tasks, read_row_group, shard_count

    tasks = pair_read_tasks(f"{root}/world/pairs")
    shards = shard_count(tasks, SHARD_ROWS)
    results = [teacher_job._scan_shard(tasks, b, shards, 1.0, f"{root}/out", "t", "v1", "tv", True, _SameHash(),
                                       _SameHash(), None, f"{root}/plan") for b in range(shards)]
    plan = ScanPlan(decisions=tuple(r["decisions"] for r in results if r["decisions"]),
                    changed=tuple(r["changed"] for r in results if r["changed"]))
    copies = skips = 0
    for task in tasks:  # the join's reads of the plan, batch by batch
        orders = read_row_group(task.__dict__, columns=["member_id"]).column("_order").to_numpy()
        for start in range(0, len(orders), JOIN_BATCH):
            c, s = plan.lookup(np.asarray(orders[start:start + JOIN_BATCH]))
            copies, skips = copies + len(c), skips + len(s)
    keys = ("rows_in", "duplicates", "not_sampled", "skipped_done", "changed_done", "forgotten")
    return {"shards": shards, **{k: sum(r[k] for r in results) for k in keys},
            "held_pairs_max": max(r["held"]["pairs"] for r in results),
            "held_done_max": max(r["held"]["done"] for r in results), "plan_copies": copies, "plan_skips": skips}


def _scan_old(root: str) -> dict:
    from lantern_batch.teacher import store
    from lantern_batch.teacher.inputs import pair_read_tasks, scan_pairs

    tasks = pair_read_tasks(f"{root}/world/pairs")
    done, inputs_done = store.load_done(f"{root}/out", "t", "v1", "tv")
    scan = scan_pairs(tasks, 1.0, inputs_done, done, _SameHash(), _SameHash())
    return {"shards": 1, **{k: v for k, v in scan.items() if isinstance(v, int)},
            "decisions_in_memory": len(scan["copy_index"]) + len(scan["skip"]), "held_done_max": len(done)}


def _validate(root: str) -> dict:
    from lantern_batch.validation import validate_path

    result = validate_path("pairs", f"{root}/world/pairs", errors_out=f"{root}/errors-new", shard_rows=SHARD_ROWS)
    return {"shards": result.shards, "held_keys_max": result.held_keys, "counts": result.counts}


def _validate_old(root: str) -> dict:
    from lantern_batch import io
    from lantern_batch.schema import RowLimits, validate_table

    result = validate_table(io.read_table(f"{root}/world/pairs", table="pairs"), "pairs", RowLimits())
    io.write_table(result.errors, f"{root}/errors-old", basename="part-00000.parquet")
    return {"shards": 1, "counts": result.counts}


def child(kind: str, n: int, root: str) -> None:
    import lantern_batch.teacher.job  # noqa: F401  (imported first: the seconds are the work's)
    import lantern_batch.validation  # noqa: F401

    start = time.perf_counter()
    out: dict = {}
    if kind != "baseline":
        out = {"setup": _setup, "scan": _scan, "scan_old": _scan_old, "validate": _validate,
               "validate_old": _validate_old}[kind](*((n, root) if kind == "setup" else (root,)))
    print(json.dumps({"seconds": round(time.perf_counter() - start, 2), **out}))


# --------------------------------------------------------------------------- parent


def run_child(kind: str, n: int, root: str) -> dict:
    """One measurement in a fresh interpreter: its result, wall time and peak RSS."""
    env = {**os.environ, "LANTERN_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, str(n), root],
                            stdout=subprocess.PIPE, env=env, cwd=ROOT)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} at {n} pairs failed with exit code {os.waitstatus_to_exitcode(status)}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: ru_maxrss is in KiB
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=SIZES, metavar=("SMALL", "LARGE"))
    ap.add_argument("--child", nargs=3, metavar=("KIND", "N", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return 0

    t0 = time.perf_counter()
    runs: dict[str, dict[int, dict]] = {k: {} for k in KINDS}
    setups = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        baseline = run_child("baseline", 0, tmp)
        print(f"import baseline: peak RSS {baseline['peak_rss_mb']:.0f} MB")
        for n in args.sizes:
            root = os.path.join(tmp, f"n{n}")
            setups[n] = run_child("setup", n, root)
            print(f"{n:>9,} pairs: world + markers in {setups[n]['seconds']:.0f} s "
                  f"({setups[n]['pairs_rows']:,} pair rows, {setups[n]['marker_files']} marker files)")
            for kind in KINDS:
                r = run_child(kind, n, root)
                runs[kind][n] = r
                print(f"  {kind:<13} {r['seconds']:6.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                      f"shards {r['shards']}")
    small, large = args.sizes
    ratios = {}
    for kind in KINDS:
        a, b = runs[kind][small]["peak_rss_mb"], runs[kind][large]["peak_rss_mb"]
        above = (b - baseline["peak_rss_mb"]) / max(a - baseline["peak_rss_mb"], 1e-9)
        ratios[kind] = {"peak_rss_ratio": round(b / a, 3), "above_baseline_ratio": round(above, 3)}
    for kind in ("scan", "validate"):  # same decisions and counts as the old way
        for n in args.sizes:
            new, old = runs[kind][n], runs[f"{kind}_old"][n]
            same = (new["counts"] == old["counts"] if kind == "validate"
                    else all(new[k] == old[k] for k in ("rows_in", "duplicates", "skipped_done", "changed_done")))
            if not same:
                raise SystemExit(f"{kind} at {n} pairs: counts differ from the old way: {new} vs {old}")
    flat = all(ratios[k]["peak_rss_ratio"] <= MAX_RSS_RATIO for k in ("scan", "validate"))
    for kind in KINDS:
        r = ratios[kind]
        print(f"{kind:<13} peak RSS {large:,} / {small:,} = {r['peak_rss_ratio']:.2f}x "
              f"(above the import baseline {r['above_baseline_ratio']:.2f}x)")
    print(f"scan and validate within {MAX_RSS_RATIO}x: {'PASS' if flat else 'FAIL'}; "
          f"total {time.perf_counter() - t0:.0f} s")
    report = {
        "benchmark": "memory",
        "machine": "2-core AMD EPYC VM, 23 GiB, no GPU",
        "date": "2026-12-08",
        "python": platform.python_version(),
        "sizing": ("members = pairs / 10, jobs = pairs / 50, inject_bad_rows = 0.02; shard_rows = "
                   f"{SHARD_ROWS}; join batches of {JOIN_BATCH}; markers of {MARKER_ROWS} rows"),
        "baseline_import_peak_rss_mb": baseline["peak_rss_mb"],
        "setup": {str(n): setups[n] for n in args.sizes},
        "runs": {kind: {str(n): runs[kind][n] for n in args.sizes} for kind in KINDS},
        "ratios_large_vs_small": ratios,
        "max_rss_ratio": MAX_RSS_RATIO,
        "flat_memory": flat,
    }
    if tuple(args.sizes) == SIZES:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "memory.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS / 'memory.json'}")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
