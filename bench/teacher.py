"""Benchmark: teacher synthesis throughput on the same prompts, four ways, plus the join choice
and job-description compression.

    flock /tmp/lantern-heavy.lock python bench/teacher.py      # ~8 min on 2 CPU cores

Parts (each in a fresh subprocess, so engines and Ray never overlap in memory):

* ``compression`` — tokens of job descriptions before/after :func:`compress_job_description`
  on the demo world (150 jobs), by the SmolLM2 tokenizer, and of whole teacher prompts.
* ``join`` — the validate/de-duplicate/join stage alone over a 30k-pair world: the broadcast
  :class:`~lantern_batch.teacher.inputs.PairJoiner` vs. Ray Data's hash ``Dataset.join``.
* ``bare`` (b) — ``vllm.LLM.generate`` on token-id prompts: the stage's exact sampling
  (JSON schema, logprobs 20, max_tokens 192) in batches of 16, after a warm-up call; then
  16 prompts x 64 tokens structured vs. unconstrained (structured-output overhead); the prefix
  cache hit rate is ``num_cached_tokens / prompt tokens``.
* ``hf`` (c) — batched ``transformers`` ``generate`` (bf16, left padding, greedy), 8 prompts
  x 32 new tokens (and bare vLLM on the same 8 x 32 for b/c).
* ``pipeline`` (a) — the real ``synthesize`` job (Ray Data + the VLLMTeacher actor +
  commit writer) on the same 32 pairs, batch 16.
* ``raydatallm`` (a') — ``ray.data.llm``'s vLLM processor on the same prompts and sampling.

Steady state: engine start-up (~25 s) is excluded everywhere. For (a) and (a'), the rate is
measured from the end of the first batch to the end of the last one (commit-marker mtimes and
token counts, postprocess timestamps), i.e. over batches 2-3 of 3; (b) over its calls 2-3.
Ratios printed: a/b, a/c, a'/a, structured overhead. The 1-minute load average is recorded
around every part: the machine is shared, and a loaded machine slows every path.
Results: ``bench/results/teacher.json`` and ``teacher.png``;
``python bench/teacher.py --report`` redraws both from the JSON.
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
N_PAIRS = 48
BATCH = 16
MAX_TOKENS = 192
TOPK = 20
FIXED_TOKENS = 64
HF_PROMPTS, HF_TOKENS = 4, 32  # transformers is far slower here: a small slice keeps the run short


def _engine_kwargs() -> dict:
    from lantern_batch.config import load_config
    from lantern_batch.teacher.config import SynthesizeConfig

    return dict(load_config(SynthesizeConfig, str(ROOT / "configs" / "demo_synthesize.yaml")).vllm.engine_kwargs)


def _world(tmp: Path) -> Path:
    """The demo world, and a pairs table of the first N_PAIRS pairs (one row group)."""
    from lantern_batch.io import read_table, write_table
    from lantern_batch.world import GenerateConfig, run_generate

    world = tmp / "world"
    if not (world / "pairs").exists():
        run_generate(GenerateConfig(out=str(world)))
        write_table(read_table(str(world / "pairs")).slice(0, N_PAIRS), str(world / "bench_pairs"),
                    basename="part-00000.parquet")
    return world


def _prompts(world: Path, tokenizer) -> list[list[int]]:
    """Token ids of the teacher prompts of the bench pairs, built as the stage builds them."""
    from lantern_batch.io import read_table
    from lantern_batch.prompts import JOB_TOKENS, MEMBER_TOKENS, teacher_messages

    members = {m["member_id"]: m for m in read_table(str(world / "members")).to_pylist()}
    jobs = {j["job_id"]: j for j in read_table(str(world / "jobs")).to_pylist()}
    out = []
    for p in read_table(str(world / "bench_pairs")).to_pylist():
        msgs = teacher_messages(members[p["member_id"]], jobs[p["job_id"]], p["query"], "v1",
                                member_tokens=MEMBER_TOKENS, job_tokens=JOB_TOKENS)
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


# --------------------------------------------------------------------------- parts


def part_compression(tmp: Path) -> dict:
    from transformers import AutoTokenizer

    from lantern_batch.io import read_table
    from lantern_batch.models import resolve
    from lantern_batch.prompts import approx_tokens, compress_job_description

    world = _world(tmp)
    tok = AutoTokenizer.from_pretrained(resolve("bundled:smollm2"))
    jobs = [j for j in read_table(str(world / "jobs")).to_pylist() if j["description"]]
    before = [len(tok(j["description"]).input_ids) for j in jobs]
    after = [len(tok(compress_job_description(j["description"])).input_ids) for j in jobs]
    prompts = _prompts(world, tok)
    return {
        "jobs": len(jobs),
        "tokens_before_mean": sum(before) / len(jobs), "tokens_after_mean": sum(after) / len(jobs),
        "token_reduction": 1 - sum(after) / sum(before),
        "approx_reduction_chars4": 1 - sum(approx_tokens(compress_job_description(j["description"])) for j in jobs)
        / sum(approx_tokens(j["description"]) for j in jobs),
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
    }


def part_join(tmp: Path) -> dict:
    import ray
    import ray.data

    from lantern_batch.config import RayConfig
    from lantern_batch.io import ray_read_parquet
    from lantern_batch.runtime import init_ray
    from lantern_batch.schema import RowLimits
    from lantern_batch.teacher.inputs import (
        PairJoiner,
        pair_read_tasks,
        prepare_side_table,
        read_pairs_batch,
        scan_pairs,
    )
    from lantern_batch.world import GenerateConfig, run_generate

    world = tmp / "join_world"
    run_generate(GenerateConfig(out=str(world), num_members=3000, num_jobs=600, num_pairs=30_000, num_seed=100))
    init_ray(RayConfig(num_cpus=8, object_store_memory=1_000_000_000, log_to_driver=False))
    ray.data.DataContext.get_current().enable_progress_bars = False
    out = {}

    t0 = time.perf_counter()
    task = ray.remote(prepare_side_table).options(num_returns=3)
    members, bad_m, _ = task.remote(str(world / "members"), "members", RowLimits(), str(tmp / "join_errors"))
    jobs, bad_j, _ = task.remote(str(world / "jobs"), "jobs", RowLimits(), str(tmp / "join_errors"))
    tasks = pair_read_tasks(str(world / "pairs"))
    scan = ray.get(ray.remote(scan_pairs).remote(tasks, 1.0, frozenset()))
    ds = ray.data.from_items([t.__dict__ for t in tasks]).map_batches(read_pairs_batch, batch_size=1, batch_format="pyarrow")
    ds = ds.map_batches(PairJoiner, fn_constructor_kwargs=dict(
        members=members, jobs=jobs, bad_members=bad_m, bad_jobs=bad_j, copy_index=scan["copy_index"],
        skip_keys=frozenset(), sample_fraction=1.0, limits=RowLimits()), batch_size=512,
        batch_format="pyarrow", concurrency=1)
    rows = sum(b.num_rows for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    out["broadcast"] = {"rows": rows, "seconds": time.perf_counter() - t0}

    t0 = time.perf_counter()
    pairs = ray_read_parquet(str(world / "pairs"))
    mem = ray_read_parquet(str(world / "members")).select_columns(["member_id", "current_title", "skills", "seniority"])
    job = ray_read_parquet(str(world / "jobs")).select_columns(["job_id", "title", "required_skills", "seniority"])
    joined = pairs.join(mem, join_type="left_outer", num_partitions=4, on=("member_id",), right_suffix="_m")
    joined = joined.join(job, join_type="left_outer", num_partitions=4, on=("job_id",), right_suffix="_j")
    rows = sum(b.num_rows for b in joined.iter_batches(batch_size=None, batch_format="pyarrow"))
    out["hash_join"] = {"rows": rows, "seconds": time.perf_counter() - t0,
                        "note": "2 left-outer joins, 4 partitions each; no validation or de-duplication"}
    ray.shutdown()
    return out


def part_bare(tmp: Path) -> dict:
    import gc

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import StructuredOutputsParams

    from lantern_batch.models import resolve
    from lantern_batch.prompts import output_json_schema

    world = _world(tmp)
    t0 = time.perf_counter()
    llm = LLM(model=str(resolve("bundled:smollm2")), **_engine_kwargs())
    startup = time.perf_counter() - t0
    prompts = [TokensPrompt(prompt_token_ids=p) for p in _prompts(world, llm.get_tokenizer())]
    schema = StructuredOutputsParams(json=output_json_schema(240))
    stage = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, logprobs=TOPK, structured_outputs=schema)
    llm.generate(prompts[:2], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up, primes the prefix cache

    calls = []
    for i in range(0, len(prompts), BATCH):
        t = time.perf_counter()
        outs = llm.generate(prompts[i:i + BATCH], stage, use_tqdm=False)
        calls.append({"seconds": time.perf_counter() - t, "rows": len(outs),
                      "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                      "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs),
                      "cached_tokens": sum(o.num_cached_tokens or 0 for o in outs),
                      "parsed": sum(_parses(o.outputs[0].text) for o in outs)})

    fixed = {}
    for name, params in (
        ("structured", SamplingParams(temperature=0.0, max_tokens=FIXED_TOKENS, logprobs=TOPK, structured_outputs=schema)),
        ("unconstrained", SamplingParams(temperature=0.0, max_tokens=FIXED_TOKENS, min_tokens=FIXED_TOKENS,
                                         ignore_eos=True, logprobs=TOPK)),
        ("unconstrained_no_logprobs", SamplingParams(temperature=0.0, max_tokens=FIXED_TOKENS, min_tokens=FIXED_TOKENS,
                                                     ignore_eos=True)),
    ):
        t = time.perf_counter()
        outs = llm.generate(prompts[BATCH:2 * BATCH], params, use_tqdm=False)
        n = sum(len(o.outputs[0].token_ids) for o in outs)
        fixed[name] = {"seconds": time.perf_counter() - t, "output_tokens": n,
                       "tokens_per_s": n / (time.perf_counter() - t)}
    t = time.perf_counter()
    outs = llm.generate(prompts[BATCH:BATCH + HF_PROMPTS], SamplingParams(
        temperature=0.0, max_tokens=HF_TOKENS, min_tokens=HF_TOKENS, ignore_eos=True), use_tqdm=False)
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    same_as_hf = {"seconds": time.perf_counter() - t, "output_tokens": n, "tokens_per_s": n / (time.perf_counter() - t)}
    del llm
    gc.collect()
    return {"startup_s": startup, "calls": calls, "fixed64": fixed, "same_as_hf": same_as_hf}


def _parses(text: str) -> bool:
    from lantern_batch.teacher.parsing import ParseError, parse_output

    try:
        parse_output(text)
        return True
    except ParseError:
        return False


def part_hf(tmp: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lantern_batch.models import resolve

    world = _world(tmp)
    path = resolve("bundled:smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    prompts = _prompts(world, tok)[BATCH:BATCH + HF_PROMPTS]
    width = max(map(len, prompts))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # [batch, width], left padded
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        model.generate(input_ids=ids[:2, -64:], attention_mask=mask[:2, -64:], max_new_tokens=2, do_sample=False,
                       pad_token_id=pad)  # warm-up
        t = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=HF_TOKENS,
                             min_new_tokens=HF_TOKENS, do_sample=False, pad_token_id=pad)
        seconds = time.perf_counter() - t
    n = int(out[:, width:].numel())  # min_new_tokens: every row gets exactly HF_TOKENS
    return {"rows": len(prompts), "output_tokens": n, "seconds": seconds, "tokens_per_s": n / seconds}


def part_pipeline(tmp: Path) -> dict:
    import pyarrow.parquet as pq

    from lantern_batch.config import load_config
    from lantern_batch.teacher.config import SynthesizeConfig
    from lantern_batch.teacher.job import run

    world = _world(tmp)
    out = tmp / "pipeline_out"
    cfg = load_config(SynthesizeConfig, str(ROOT / "configs" / "demo_synthesize.yaml"), [
        f"inputs.members={world / 'members'}", f"inputs.jobs={world / 'jobs'}",
        f"inputs.pairs={world / 'bench_pairs'}", f"out={out}", f"vllm.batch_size={BATCH}",
        f"vllm.sampling_params.max_tokens={MAX_TOKENS}", f"topk={TOPK}", "resume=false",
    ])
    t0 = time.perf_counter()
    assert run(cfg) == 0
    wall = time.perf_counter() - t0
    summary = json.loads((out / "run_summary.json").read_text())["passes"]["smollm2"]
    commits = sorted(out.glob("_commits/teacher=smollm2/prompt_version=v1/*.parquet"), key=lambda p: p.stat().st_mtime)
    batches = []
    for c in commits:
        t = pq.read_table(c)
        batches.append({"end": c.stat().st_mtime, "rows": t.num_rows,
                        "output_tokens": int(sum(t.column("output_tokens").to_pylist()))})
    labels = pq.read_table(str(out / "labels" / "teacher=smollm2"), partitioning=None)
    return {"wall_s": wall, "pass": summary, "batches": batches, "labelled": labels.num_rows}


def part_raydatallm(tmp: Path) -> dict:
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from lantern_batch.config import RayConfig
    from lantern_batch.models import resolve
    from lantern_batch.prompts import output_json_schema
    from lantern_batch.runtime import init_ray

    world = _world(tmp)
    from transformers import AutoTokenizer

    model = str(resolve("bundled:smollm2"))
    prompts = _prompts(world, AutoTokenizer.from_pretrained(model))
    init_ray(RayConfig(num_cpus=8, object_store_memory=1_000_000_000, log_to_driver=False))
    ray.data.DataContext.get_current().enable_progress_bars = False
    schema = output_json_schema(240)
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=model, engine_kwargs=_engine_kwargs(), batch_size=BATCH, concurrency=1,
            # One batch in the engine at a time, as the VLLMTeacher actor does: the default (8)
            # overlaps batches, which is the same as a larger batch_size for either path.
            max_concurrent_batches=1,
            # CPU: a CPU-only placement bundle (else it waits for a GPU) and no engine metrics.
            placement_group_config={"bundles": [{"CPU": 1}]}, log_engine_metrics=False,
            tokenize_stage=False, detokenize_stage=False, chat_template_stage=False,
        ),
        preprocess=lambda row: {"tokenized_prompt": row["ids"], "sampling_params": {
            "temperature": 0.0, "max_tokens": MAX_TOKENS, "logprobs": TOPK,
            "structured_outputs": {"json": schema}}},
        postprocess=lambda row: {"n_tokens": len(row["generated_tokens"]), "t_done": time.time()},
    )
    ds = ray.data.from_items([{"ids": p} for p in prompts], override_num_blocks=len(prompts) // BATCH)
    t0 = time.perf_counter()
    rows = processor(ds).take_all()
    wall = time.perf_counter() - t0
    ray.shutdown()
    return {"wall_s": wall, "rows": [{"n_tokens": r["n_tokens"], "t_done": r["t_done"]} for r in rows]}


PARTS = {"compression": part_compression, "join": part_join, "bare": part_bare, "hf": part_hf,
         "pipeline": part_pipeline, "raydatallm": part_raydatallm}


def run_part(name: str, tmp: Path) -> dict:
    env = {**os.environ, "LANTERN_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, "--part", name, str(tmp)], env=env, cwd=ROOT,
                          capture_output=True, timeout=900)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode()[-4000:])
        raise SystemExit(f"part {name} failed (exit {proc.returncode})")
    line = [x for x in proc.stdout.decode().splitlines() if x.startswith("RESULT ")][-1]
    print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    result = json.loads(line[len("RESULT "):])
    result["load_avg_1m"] = [load_before, os.getloadavg()[0]]
    return result


def _steady(ends_and_tokens: list[tuple[float, int]], batch: int) -> float | None:
    """Tokens/s from the end of the first batch to the end of the last (rows sorted by end time)."""
    rows = sorted(ends_and_tokens)
    if len(rows) <= batch:
        return None
    first_end = rows[batch - 1][0]
    tokens = sum(n for _, n in rows[batch:])
    span = rows[-1][0] - first_end
    return tokens / span if span > 0 else None


def summarise(results: dict) -> dict:
    """Derived throughputs and ratios (steady state; see module doc)."""
    bare, hf, pipe, rdl = results["bare"], results["hf"], results["pipeline"], results["raydatallm"]
    later = bare["calls"][1:]
    b_tps = sum(c["output_tokens"] for c in later) / sum(c["seconds"] for c in later)
    b_rps = sum(c["rows"] for c in later) / sum(c["seconds"] for c in later)
    batches = sorted(pipe["batches"], key=lambda b: b["end"])
    span = batches[-1]["end"] - batches[0]["end"] if len(batches) > 1 else 0
    a_tps = sum(b["output_tokens"] for b in batches[1:]) / span if span else None
    a_rps = sum(b["rows"] for b in batches[1:]) / span if span else None
    rdl_tps = _steady([(r["t_done"], r["n_tokens"]) for r in rdl["rows"]], BATCH)
    fixed = bare["fixed64"]
    c_tps = hf["tokens_per_s"]
    calls = bare["calls"]
    throughput = {
        "a_pipeline_tokens_per_s": a_tps, "a_pipeline_rows_per_s": a_rps,
        "b_bare_tokens_per_s": b_tps, "b_bare_rows_per_s": b_rps,
        "c_hf_tokens_per_s": c_tps, "c_hf_rows_per_s": hf["rows"] / hf["seconds"],
        "b_same_prompts_as_c_tokens_per_s": bare["same_as_hf"]["tokens_per_s"],
        "raydatallm_tokens_per_s": rdl_tps,
        "b_fixed64_tokens_per_s": {k: v["tokens_per_s"] for k, v in fixed.items()},
        # Whole runs minus the bare engine's start-up: comparable between the two Ray Data paths.
        "a_pipeline_tokens_per_s_wall_minus_startup": pipe["pass"]["output_tokens"] / (pipe["wall_s"] - bare["startup_s"]),
        "raydatallm_tokens_per_s_wall_minus_startup": sum(r["n_tokens"] for r in rdl["rows"]) / (rdl["wall_s"] - bare["startup_s"]),
    }
    ratios = {
        "a_over_b": a_tps / b_tps if a_tps else None,
        "a_over_c": a_tps / c_tps if a_tps else None,
        "b_over_c_same_prompts": bare["same_as_hf"]["tokens_per_s"] / c_tps,
        "raydatallm_over_a": rdl_tps / a_tps if rdl_tps and a_tps else None,
        "structured_overhead": 1 - fixed["structured"]["tokens_per_s"] / fixed["unconstrained"]["tokens_per_s"],
        "prefix_cache_hit_rate": sum(c["cached_tokens"] for c in calls) / sum(c["prompt_tokens"] for c in calls),
        "parsed_share": sum(c["parsed"] for c in calls) / sum(c["rows"] for c in calls),
    }
    return {"throughput": throughput, "ratios": ratios,
            "targets": {"a_over_b": 0.8, "a_over_c": 1.5, "structured_overhead_max": 0.15}}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = results["throughput"]
    bars = [("(a) Ray Data\npipeline", t["a_pipeline_tokens_per_s"]),
            ("(a') ray.data.llm\nprocessor", t["raydatallm_tokens_per_s"]),
            ("(b) bare\nLLM.generate", t["b_bare_tokens_per_s"]),
            ("(c) transformers\ngenerate", t["c_hf_tokens_per_s"])]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar([b[0] for b in bars], [b[1] or 0 for b in bars], color=["#2a6f97", "#61a5c2", "#468faf", "#a9a9a9"])
    for i, (_, v) in enumerate(bars):
        ax.text(i, (v or 0) + 1, "n/a" if v is None else f"{v:.0f}", ha="center")
    ax.set_ylabel("output tokens / s (steady state)")
    ax.set_title(f"Teacher synthesis, SmolLM2-135M, {results['settings']['pairs']} pairs, CPU (2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: dict) -> None:
    def f(x: float | None, spec: str = ".2f") -> str:
        return "n/a" if x is None else format(x, spec)

    t, r = results["throughput"], results["ratios"]
    print(f"(a) pipeline {f(t['a_pipeline_tokens_per_s'], '.1f')} tok/s   (b) bare vLLM {f(t['b_bare_tokens_per_s'], '.1f')} tok/s   "
          f"(c) transformers {f(t['c_hf_tokens_per_s'], '.1f')} tok/s   (a') ray.data.llm {f(t['raydatallm_tokens_per_s'], '.1f')} tok/s")
    print(f"a/b {f(r['a_over_b'])} (target >= 0.8)   a/c {f(r['a_over_c'])} (target >= 1.5)   a'/a {f(r['raydatallm_over_a'])}")
    print(f"structured-output overhead {f(100 * r['structured_overhead'], '.1f')}% (target <= 15%)   "
          f"prefix cache hit rate {f(100 * r['prefix_cache_hit_rate'], '.1f')}%   parsed {f(100 * r['parsed_share'], '.0f')}%")
    comp, join = results["compression"], results["join"]
    print(f"JD compression: {comp['tokens_before_mean']:.0f} -> {comp['tokens_after_mean']:.0f} tokens "
          f"({100 * comp['token_reduction']:.1f}% fewer); join 30k pairs: broadcast {join['broadcast']['seconds']:.1f} s, "
          f"hash join {join['hash_join']['seconds']:.1f} s")


def main() -> int:
    if "--report" in sys.argv:
        results = json.loads((RESULTS / "teacher.json").read_text())
    else:
        results = {"machine": "2-core x86-64 CPU VM, 24 GiB, no GPU", "device": "cpu",
                   "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
                   "settings": {"pairs": N_PAIRS, "batch": BATCH, "max_tokens": MAX_TOKENS, "topk": TOPK,
                                "model": "bundled:smollm2", "fixed_tokens": FIXED_TOKENS,
                                "hf_prompts": HF_PROMPTS, "hf_tokens": HF_TOKENS}}
        with tempfile.TemporaryDirectory(prefix="bench-teacher-") as tmp:
            for name in PARTS:
                results[name] = run_part(name, Path(tmp))
    results.update(summarise(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "teacher.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "teacher.png")
    report(results)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--part":
        result = PARTS[sys.argv[2]](Path(sys.argv[3]))
        print("RESULT " + json.dumps(result, default=float), flush=True)
        sys.exit(0)
    sys.exit(main())
