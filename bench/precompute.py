"""Benchmarks of the nightly precompute, each a ratio against a baseline measured in the same run.

    flock /tmp/lantern-heavy.lock .venv/bin/python bench/precompute.py     # ~15 min on 2 cores
    .venv/bin/python bench/precompute.py --only classifier,join            # a subset

Writes ``bench/results/precompute.json`` and ``bench/results/precompute.png``; the numbers are
discussed in ``bench/RESULTS.md``. Parts (each runs in its own interpreter, so memory and
engines never leak from one into the next):

* ``classifier`` — the classifier stage (:class:`ClassifierActor`: tokenise, length-sort,
  dynamic padding, ``inference_mode``, bf16 autocast where the CPU has it) vs a naive loop
  (same model and max length, one pair per forward pass, fp32, ``inference_mode``); model FLOPs
  utilisation of the forward passes and of the whole stage against 2048² matmul FLOP/s measured
  in the same run at fp32 and bf16. Target >= 3x, MFU >= 30%. Then where a forward batch's
  time goes (profiler: linear layers, attention, GELU, LayerNorm, other), the stage's ceiling
  with every linear layer at the measured bf16 matmul rate, and other ways to run the same
  model (fp32 batched, bf16 weights, int8 dynamic quantisation) with their pairs/s and their
  agreement with the fp32 probabilities.
* ``explainer`` — output tokens/s of the explanation stage (Ray Data: prompt step + vLLM actor)
  vs bare ``vllm.LLM.generate`` on the same token ids and sampling parameters, both measured from
  engine-ready to the last token. Target >= 0.8.
* ``join`` — the content join onto 100k pairs: broadcast through the object store vs Ray Data's
  hash join, through the pipeline's own ``Pipeline._join``. Decides ``join.strategy: auto``.
* ``scaling`` — the real CLI at 10k and 100k pairs (fresh Ray each), wall time and peak RSS of
  the whole process tree (driver, raylet, Ray workers, the vLLM engine); then an incremental
  day on the 100k output with 1% of members changed. Targets: time ratio <= 11, memory ratio
  <= 1.5, incremental <= 10% of the full run.

Models: the classifier is all-MiniLM-L6-v2 (the demo student's architecture) with a head fitted
to the world's seed labels, max length 128; the explainer is SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "runs" / "bench" / "precompute"
PARTS = ("classifier", "explainer", "scaling", "join")
SCALING_MAX_LENGTH = 64
"""Classifier tokens per pair in the scaling runs. Every bench pair's text is longer than 128
tokens, so the classifier's cost is fixed per pair; halving it keeps the bench short and makes
the fixed costs (Ray, vLLM start, reading, routing) weigh more, the harder case for the
incremental target."""
RUN_TIMEOUT_S = 1500  # one CLI run of the scaling part; a hang must not hold the machine
MACHINE = "2-core x86-64 CPU VM, 24 GiB, no GPU"
DATE = "2026-11-24"
DS_FULL, DS_INCR = "2026-11-24", "2026-11-25"

# Explainer settings shared by the explainer part and the pipeline runs.
EXPLAINER_ENGINE = {"dtype": "bfloat16", "max_model_len": 1024, "enforce_eager": True,
                    "kv_cache_memory_bytes": 256 * 1024**2, "seed": 0}


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Inputs: worlds and models


def world(n_pairs: int) -> Path:
    """A generated world with ``n_pairs`` pairs (members = pairs/10, jobs = pairs/50)."""
    from lantern_batch.world import GenerateConfig, run_generate

    out = WORK / f"world_{n_pairs // 1000}k"
    if not (out / "pairs").exists():
        run_generate(GenerateConfig(out=str(out), num_members=n_pairs // 10, num_jobs=n_pairs // 50,
                                    num_pairs=n_pairs, num_seed=400, seed=11))
    return out


def classifier_export(seed_world: Path) -> Path:
    """MiniLM-L6 + a head fitted (on frozen features) to the seed labels, exported with max
    length 128: the demo student's architecture and cost, with labels that vary like a real one."""
    out = WORK / "models" / "classifier"
    if (out / "lantern_batch.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer

    from lantern_batch import io, models, prompts
    from lantern_batch.classifier import FitClassifier
    from lantern_batch.schema import FIT_LABELS

    torch.manual_seed(0)
    enc_dir = models.resolve("bundled:minilm")
    model = FitClassifier.from_encoder(enc_dir).eval()
    tok = AutoTokenizer.from_pretrained(str(enc_dir))
    members = {r["member_id"]: r for r in io.read_table(str(seed_world / "members")).to_pylist()}
    jobs = {r["job_id"]: r for r in io.read_table(str(seed_world / "jobs")).to_pylist()}
    seed = io.read_table(str(seed_world / "seed")).to_pylist()
    texts = [prompts.classifier_text(members[s["member_id"]], jobs[s["job_id"]], None) for s in seed]
    y = torch.tensor([FIT_LABELS.index(s["fit_label"]) for s in seed])
    with torch.inference_mode():
        e = tok(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
        h = model.pool(model.encoder(input_ids=e["input_ids"], attention_mask=e["attention_mask"]).last_hidden_state,
                       e["attention_mask"])
    h = h.clone()
    head = torch.nn.Linear(h.shape[1], 3)
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(h), y).backward()
        opt.step()
    model.head.load_state_dict(head.state_dict())
    model.save(out, {"max_length": 128}, tokenizer=tok)
    return out


def classifier_texts(w: Path, n: int) -> list[str]:
    from lantern_batch import io, prompts

    members = {r["member_id"]: r for r in io.read_table(str(w / "members")).to_pylist()}
    jobs = {r["job_id"]: r for r in io.read_table(str(w / "jobs")).to_pylist()}
    pairs = io.read_table(str(w / "pairs")).slice(0, n).to_pylist()
    return [prompts.classifier_text(members[p["member_id"]], jobs[p["job_id"]], p["query"]) for p in pairs]


# ---------------------------------------------------------------------------------------------
# Part: classifier stage vs naive loop, MFU


def matmul_flops(dtype, n: int = 2048, reps: int = 12) -> float:
    import torch

    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def forward_flops(config, lengths: list[int]) -> float:
    """Model FLOPs of encoder forwards over sequences of these (unpadded) lengths: per layer
    2·L·(4·d² + 2·d·ff) for the projections and FFN plus 4·L²·d for attention."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return float(sum(layers * (2 * L * (4 * d * d + 2 * d * ff) + 4 * L * L * d) for L in lengths))


def part_classifier() -> dict:
    import numpy as np
    import pyarrow as pa
    import torch

    from lantern_batch.classifier import load_classifier
    from lantern_batch.precompute.classifier_stage import (
        ClassifierActor,
        ClassifierSettings,
        read_meta,
    )
    from lantern_batch.precompute.config import ClassifierStageConfig
    from lantern_batch.precompute.route import work_table

    torch.set_num_threads(2)
    w = world(10_000)
    cls_dir = classifier_export(w)
    texts = classifier_texts(w, 1024)
    meta = read_meta(cls_dir)
    ml = int(meta["max_length"])

    fp32 = matmul_flops(torch.float32)
    bf16 = matmul_flops(torch.bfloat16)
    log(f"matmul 2048²: fp32 {fp32 / 1e9:.0f} GFLOP/s, bf16 {bf16 / 1e9:.0f} GFLOP/s")

    # Naive: the same model and max length, one pair per forward pass, fp32. It runs in rounds
    # alternating with the stage's rounds below, so outside load on the shared 2 cores falls on
    # both sides of the ratio alike (one block each moved the ratio by 2.1-2.6x between runs).
    model, tok, _ = load_classifier(cls_dir)
    n_naive = 192
    naive_s = [0.0]

    def naive_round(chunk: list[str]) -> None:
        start = time.perf_counter()
        with torch.inference_mode():
            for t in chunk:
                e = tok(t, truncation=True, max_length=ml, return_tensors="pt")
                model(e["input_ids"], e["attention_mask"])  # [1, seq] -> [1, 3]
        naive_s[0] += time.perf_counter() - start

    naive_round(texts[:8])
    naive_s[0] = 0.0

    # The stage, exactly as the pipeline's actor runs it, with the forward passes timed.
    settings = ClassifierSettings.from_config(ClassifierStageConfig(), cls_dir, meta)
    actor = ClassifierActor(settings)
    forward_s = [0.0]
    inner = actor.model.forward

    def timed_forward(*a, **k):
        t0 = time.perf_counter()
        out = inner(*a, **k)
        forward_s[0] += time.perf_counter() - t0
        return out

    actor.model.forward = timed_forward
    rows = work_table({"member_id": [str(i) for i in range(len(texts))], "job_id": ["j"] * len(texts)})
    rows = rows.append_column("__text", pa.array(texts))
    actor(rows.slice(0, 64))
    forward_s[0] = 0.0
    stage_s = 0.0
    rounds = rows.num_rows // 512  # rows_per_call = 512, as in the demo config
    for r in range(rounds):
        naive_round(texts[r * n_naive // rounds : (r + 1) * n_naive // rounds])
        start = time.perf_counter()
        actor(rows.slice(r * 512, 512))
        stage_s += time.perf_counter() - start
    naive_rate = n_naive / naive_s[0]
    stage_rate = len(texts) / stage_s

    lengths = [len(x) for x in tok(texts, truncation=True, max_length=ml)["input_ids"]]
    flops = forward_flops(actor.model.encoder.config, lengths)
    peak = bf16 if actor.bf16 else fp32
    naive_flops = forward_flops(model.encoder.config, lengths[:n_naive])
    out = {
        "model": "all-MiniLM-L6-v2 + 3-way head", "max_length": ml, "pairs_stage": len(texts),
        "pairs_naive": n_naive, "mean_tokens": float(np.mean(lengths)),
        "dtype_stage": "bf16 autocast" if actor.bf16 else "fp32", "batch_size": settings.batch_size,
        "naive_pairs_per_s": round(naive_rate, 1), "stage_pairs_per_s": round(stage_rate, 1),
        "speedup": round(stage_rate / naive_rate, 2),
        "matmul_gflops_fp32": round(fp32 / 1e9, 1), "matmul_gflops_bf16": round(bf16 / 1e9, 1),
        "forward_gflops_per_s": round(flops / forward_s[0] / 1e9, 1),
        "mfu_forward": round(flops / forward_s[0] / peak, 3),
        "utilisation_stage": round(flops / stage_s / peak, 3),
        "naive_mfu_fp32": round(naive_flops / naive_s[0] / fp32, 3),
        "gflop_per_pair": round(flops / len(texts) / 1e9, 3),
        # The scaling runs cut every pair at SCALING_MAX_LENGTH tokens (all bench texts are longer).
        "gflop_per_pair_scaling": round(forward_flops(actor.model.encoder.config, [SCALING_MAX_LENGTH]) / 1e9, 3),
        "targets": {"speedup": 3.0, "mfu_forward": 0.30},
    }
    log(f"classifier: naive {naive_rate:.1f} pairs/s, stage {stage_rate:.1f} pairs/s "
        f"({out['speedup']}x); MFU forward {out['mfu_forward']:.0%}, stage {out['utilisation_stage']:.0%}")
    actor.model.forward = inner
    out["forward_breakdown"] = forward_breakdown(actor.model, tok, texts[:64], ml, actor.bf16, bf16, naive_rate)
    out["variants"] = classifier_variants(model, tok, texts[:256], ml, naive_rate)
    return out


def forward_breakdown(model, tok, texts: list[str], max_length: int, bf16: bool, bf16_rate: float,
                      naive_rate: float) -> dict:
    """Where a forward batch's time goes (torch profiler, self CPU time by op), and the stage's
    ceiling: the pairs/s it would reach if every linear layer ran at the 2048² bf16 matmul rate
    measured in this run and attention and the elementwise ops took what they take now."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from lantern_batch.classifier import autocast_context

    cfg = model.encoder.config
    enc = tok(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    batches = [(enc["input_ids"][i : i + 32], enc["attention_mask"][i : i + 32]) for i in range(0, len(texts), 32)]
    with torch.inference_mode(), autocast_context("cpu", bf16):
        model(*batches[0])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for ids, mask in batches:
                model(ids, mask)  # [32, seq] -> [32, 3]
    groups = {"linear": ("addmm", "aten::mm", "linear_dynamic", "matmul"),
              "attention": ("scaled_dot_product", "bmm", "softmax"),
              "gelu": ("gelu",), "layer_norm": ("layer_norm",)}
    seconds = dict.fromkeys([*groups, "other"], 0.0)
    for ev in prof.key_averages():
        if ev.key.startswith(("aten::linear", "aten::scaled_dot_product_attention", "aten::matmul")):
            continue  # wrappers: their time is in the kernels they call
        group = next((g for g, keys in groups.items() if any(k in ev.key for k in keys)), "other")
        seconds[group] += ev.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    seq = int(enc["input_ids"].shape[1])
    d, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    linear_flops = len(texts) * layers * 2 * seq * (4 * d * d + 2 * d * ff)
    ceiling_s = linear_flops / bf16_rate + total - seconds["linear"]
    out = {"pairs": len(texts), "seq": seq, "seconds": {k: round(v, 3) for k, v in seconds.items()},
           "share": {k: round(v / total, 3) for k, v in seconds.items()},
           "linear_gflops_per_s": round(linear_flops / seconds["linear"] / 1e9, 1),
           "ceiling_pairs_per_s": round(len(texts) / ceiling_s, 1),
           "ceiling_speedup": round(len(texts) / ceiling_s / naive_rate, 2)}
    log(f"forward breakdown: {out['share']}; linear {out['linear_gflops_per_s']} GFLOP/s; "
        f"ceiling {out['ceiling_pairs_per_s']} pairs/s = {out['ceiling_speedup']}x naive")
    return out


def classifier_variants(model, tok, texts: list[str], max_length: int, naive_rate: float) -> dict:
    """Other ways to run the same model on the same pairs, each against the fp32 batched
    probabilities: pairs/s, its ratio to the naive loop, max abs probability difference and
    label agreement. ``model`` is the fp32 model; copies are converted, it is not changed."""
    import copy
    import warnings

    import numpy as np
    import torch

    from lantern_batch.classifier import predict_proba

    def bf16_weights():
        return copy.deepcopy(model).to(torch.bfloat16)

    def int8_dynamic():
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        torch.backends.quantized.engine = "x86"  # fbgemm kernels with AVX-512 VNNI
        m = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao deprecation notice
            m.encoder = quantize_dynamic(m.encoder, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                         dtype=torch.qint8)
        return m

    runs = {  # name: (model factory, bf16 autocast)
        "fp32_batched": (lambda: model, False),
        "bf16_autocast": (lambda: model, True),  # the stage's choice
        "bf16_weights": (bf16_weights, False),
        "int8_dynamic_per_channel": (int8_dynamic, False),
    }
    ref = None
    out = {"pairs": len(texts)}
    for name, (make, bf16) in runs.items():
        m = make()
        predict_proba(m, tok, texts[:32], max_length=max_length, bf16=bf16)  # warm-up
        start = time.perf_counter()
        probs = predict_proba(m, tok, texts, max_length=max_length, batch_size=32, bf16=bf16)
        rate = len(texts) / (time.perf_counter() - start)
        ref = probs if ref is None else ref
        out[name] = {"pairs_per_s": round(rate, 1), "vs_naive": round(rate / naive_rate, 2),
                     "max_abs_diff_vs_fp32": round(float(np.abs(probs - ref).max()), 4),
                     "label_agreement_vs_fp32": round(float((probs.argmax(1) == ref.argmax(1)).mean()), 4)}
        log(f"variant {name}: {out[name]}")
    return out


# ---------------------------------------------------------------------------------------------
# Part: explanation stage vs bare vLLM


def explainer_rows(n: int):
    """``n`` work rows with label-conditioned explainer prompts from the 10k world."""
    import json as _json

    import pyarrow as pa

    from lantern_batch import io, prompts
    from lantern_batch.precompute.route import work_table

    w = world(10_000)
    members = {r["member_id"]: r for r in io.read_table(str(w / "members")).to_pylist()}
    jobs = {r["job_id"]: r for r in io.read_table(str(w / "jobs")).to_pylist()}
    pairs = io.read_table(str(w / "pairs")).slice(0, n).to_pylist()
    labels = ["High", "Medium", "Low"]
    msgs = [_json.dumps(prompts.explainer_messages(members[p["member_id"]], jobs[p["job_id"]], p["query"],
                                                   labels[i % 3], member_tokens=150, job_tokens=150))
            for i, p in enumerate(pairs)]
    rows = work_table({"member_id": [p["member_id"] for p in pairs], "job_id": [p["job_id"] for p in pairs],
                       "fit_label": [labels[i % 3] for i in range(n)], "__explain": [True] * n})
    return rows.append_column("__messages", pa.array(msgs))


def explainer_settings(max_tokens: int):
    from lantern_batch import models
    from lantern_batch.precompute.explainer_stage import ExplainerSettings

    # ignore_eos: every prompt yields exactly max_tokens in both runs, so token counts match.
    return ExplainerSettings(model_dir=str(models.resolve("bundled:smollm2")), version="bench",
                             engine_kwargs=dict(EXPLAINER_ENGINE),
                             sampling_params={"max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True})


N_PROMPTS, MAX_TOKENS = 64, 64


def part_explainer_bare() -> dict:
    from vllm import LLM, SamplingParams

    from lantern_batch.precompute.explainer_stage import PromptBuilder

    settings = explainer_settings(MAX_TOKENS)
    prepared = PromptBuilder(settings)(explainer_rows(N_PROMPTS))
    ids = prepared.column("__prompt_ids").to_pylist()
    start = time.perf_counter()
    llm = LLM(model=settings.model_dir, **settings.engine_kwargs)
    init_s = time.perf_counter() - start
    params = SamplingParams(**settings.sampling_params)
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
    gen_s = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"prompts": len(ids), "prompt_tokens": sum(len(p) for p in ids), "output_tokens": tokens,
            "engine_init_s": round(init_s, 1), "generate_s": round(gen_s, 2),
            "tokens_per_s": round(tokens / gen_s, 1)}


def part_explainer_stage() -> dict:
    import ray
    import ray.data

    from lantern_batch.config import RayConfig
    from lantern_batch.precompute.config import ExplainerStageConfig
    from lantern_batch.precompute.explainer_stage import ExplainerActor, PromptBuilder
    from lantern_batch.runtime import init_ray

    settings = explainer_settings(MAX_TOKENS)
    ready_file = WORK / "explainer_ready.txt"
    ready_file.unlink(missing_ok=True)

    class ReadyExplainer(ExplainerActor):
        """The pipeline's actor, noting when its engine is up (to leave start-up out)."""

        def __init__(self, settings, path):
            super().__init__(settings)
            Path(path).write_text(str(time.time()))

    # The pipeline's batching: prompts per vLLM call = explainer.batch_size of the config.
    batch = ExplainerStageConfig().batch_size
    init_ray(RayConfig(num_cpus=8, object_store_memory=500_000_000, log_to_driver=False))
    ds = ray.data.from_arrow(explainer_rows(N_PROMPTS))
    ds = ds.map_batches(PromptBuilder, batch_size=batch, batch_format="pyarrow",
                        fn_constructor_kwargs={"settings": settings}, concurrency=1, num_cpus=0.5)
    ds = ds.map_batches(ReadyExplainer, batch_size=batch, batch_format="pyarrow",
                        fn_constructor_kwargs={"settings": settings, "path": str(ready_file)},
                        concurrency=1, num_cpus=1)
    start = time.time()
    out = ds.materialize()
    end = time.time()
    ready = float(ready_file.read_text())
    n = out.count()
    tokens = n * MAX_TOKENS  # ignore_eos: every explanation has exactly max_tokens tokens
    explained = sum(1 for r in out.take_all() if r["explanation"])
    return {"prompts": n, "explained": explained, "output_tokens": tokens,
            "engine_init_s": round(ready - start, 1), "generate_s": round(end - ready, 2),
            "tokens_per_s": round(tokens / (end - ready), 1), "wall_s_incl_start": round(end - start, 1),
            "prompts_per_call": batch}


# ---------------------------------------------------------------------------------------------
# Part: content join, broadcast vs shuffle


def part_join() -> dict:
    import pyarrow as pa
    import ray.data

    from lantern_batch import io
    from lantern_batch.config import RayConfig
    from lantern_batch.precompute import features
    from lantern_batch.precompute.pipeline import Pipeline, PipelineSpec
    from lantern_batch.runtime import init_ray
    from lantern_batch.schema import RowLimits

    w = world(100_000)
    limits = RowLimits()
    files = {t: io.list_parquet_files(str(w / t)) for t in ("members", "jobs", "pairs")}

    def index(table_name: str):
        blocks = [features.digest_batch(c, table_name, limits)
                  for i, f in enumerate(files[table_name])
                  for c in features.read_file_batches(f, i, table_name, 5000)]
        return features.finalize_index(blocks, table_name)[0]

    m_index, j_index = index("members"), index("jobs")
    rows = pa.concat_tables([features.annotate_pairs(c, m_index, j_index, "bench", limits, 1)
                             for i, f in enumerate(files["pairs"])
                             for c in features.read_file_batches(f, i, "pairs", 10_000)])
    rows = rows.filter(rows.column("__err_reason").is_null())
    init_ray(RayConfig(num_cpus=8, object_store_memory=1_500_000_000, log_to_driver=False))
    out = {"pairs": rows.num_rows, "members": m_index.num_rows, "jobs": j_index.num_rows}
    for strategy in ("broadcast", "shuffle"):
        spec = PipelineSpec(
            run_id="bench", ds=DS_FULL, member_files=files["members"], job_files=files["jobs"],
            pair_files=files["pairs"], rows_in=rows.num_rows, prev_files=[], scores_dir="", errors_dir="",
            classifier=None, explainer=None, policy=None, run_fp="bench", limits=limits, incremental=False,
            rows_per_partition=100_000, rows_per_file=50_000, join_strategy=strategy,
            broadcast_max_bytes=1 << 40, join_partitions=None, classifier_resources={}, explainer_resources={})
        pipe = Pipeline(spec)
        ds = ray.data.from_arrow([rows.slice(i, 5000) for i in range(0, rows.num_rows, 5000)])
        start = time.perf_counter()
        joined = pipe._join(ds, "classifier", {"max_chars": 1500}, 512).materialize()
        secs = time.perf_counter() - start
        n = joined.count()
        assert n == rows.num_rows, (strategy, n)
        out[strategy] = {"seconds": round(secs, 2), "pairs_per_s": round(n / secs, 1)}
        log(f"join {strategy}: {secs:.1f} s for {n} pairs")
    out["broadcast_vs_shuffle"] = round(out["shuffle"]["seconds"] / out["broadcast"]["seconds"], 2)
    return out


# ---------------------------------------------------------------------------------------------
# Part: the real CLI at 10k and 100k pairs, then an incremental day


def _pss(pid: int) -> int:
    """Proportional set size of one process (shared pages split between their users), bytes."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def tree_memory(pid: int) -> tuple[int, int, int]:
    """``(rss, pss, processes)`` summed over ``pid`` and all its descendants (the CLI's driver,
    Ray's GCS, raylet and workers, the vLLM engine process). RSS counts a shared page (the
    object store, shared libraries) once per process that maps it; PSS splits it between them."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    rss = pss = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        pss += _pss(p.pid)
    return rss, pss, len(procs)


def run_cli(cfg: dict, name: str) -> dict:
    """Run ``lantern-batch precompute`` in a fresh process; wall time and peak process-tree RSS."""
    import yaml

    path = WORK / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    logf = (WORK / f"{name}.log").open("wb")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lantern_batch.cli", "precompute", "--config", str(path)],
                            cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    peak = {"rss": 0, "pss": 0, "processes": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss, pss, n = tree_memory(proc.pid)
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            peak["processes"] = max(peak["processes"], n)
            done.wait(0.5)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        rc = proc.wait()
    wall = time.perf_counter() - start
    done.set()
    t.join()
    if rc != 0:
        raise SystemExit(f"{name}: precompute exited {rc}; see {WORK / (name + '.log')}")
    from lantern_batch import io

    man, _ = io.published_files(str(Path(cfg["out"], "scores", f"ds={cfg['ds']}")))  # the live manifest
    c = man["counts"]
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak["rss"] / 2**20, 1),
            "peak_pss_mb": round(peak["pss"] / 2**20, 1), "max_processes": peak["processes"],
            "rows_in": c["rows_in"], "rows_scored": c["rows_scored"], "rows_reused": c["rows_reused"],
            "rows_error": c["rows_error"], "explained": c["explanations_generated"],
            "explanations_selected": c["explanations_selected"],
            "explanations_reused": c["explanations_reused"], "explain_failed": c["explanations_failed"],
            "explainer_started": man["stages"].get("explainer_engine_started"),
            "timings": {k: round(v, 1) for k, v in man["timings"].items()}, "stages": man["stages"]}


def pipeline_config(w: Path, out: Path, ds: str, cls_dir: Path) -> dict:
    from lantern_batch import models

    return {
        "inputs": {t: str(w / t) for t in ("members", "jobs", "pairs")},
        "out": str(out), "ds": ds,
        # max_length 64: half the per-pair cost of the export's 128 tokens, so the 100k run
        # takes ~9 min, not ~18, on these 2 cores (see SCALING_MAX_LENGTH).
        "classifier": {"ref": str(cls_dir), "batch_size": 32, "rows_per_call": 512,
                       "max_length": SCALING_MAX_LENGTH},
        "explainer": {
            "ref": str(models.resolve("bundled:smollm2")),
            # About one pair in 1,500 is explained: a few dozen at 100k pairs.
            "policy": {"labels": ["High"], "top_n_per_member": 1, "sample_rate": 0.002, "seed": 0},
            "member_tokens": 150, "job_tokens": 150, "engine_kwargs": dict(EXPLAINER_ENGINE),
            "sampling_params": {"max_tokens": 48, "temperature": 0.0},
        },
        "ray": {"num_cpus": 8, "object_store_memory": 1_000_000_000, "log_to_driver": True},
    }


def change_members(w: Path, share: float) -> tuple[Path, int]:
    """A copy of the world's members with ``share`` of them (every k-th) given a new summary."""
    import pyarrow as pa

    from lantern_batch import io

    members = io.read_table(str(w / "members"))
    step = round(1 / share)
    summaries = [(s or "") + " Recently completed a certification." if i % step == 0 else s
                 for i, s in enumerate(members.column("summary").to_pylist())]
    members = members.set_column(members.schema.get_field_index("summary"), "summary", pa.array(summaries))
    out = WORK / "world_100k_changed"
    io.write_table(members, str(out / "members"), basename="part-0.parquet")
    return out / "members", sum(1 for i in range(members.num_rows) if i % step == 0)


def part_scaling() -> dict:
    import shutil

    w10, w100 = world(10_000), world(100_000)
    cls_dir = classifier_export(world(10_000))
    res = {}
    for name, w in (("10k", w10), ("100k", w100)):
        out = WORK / f"out_{name}"
        shutil.rmtree(out, ignore_errors=True)
        log(f"scaling: full run at {name} pairs")
        res[name] = run_cli(pipeline_config(w, out, DS_FULL, cls_dir), f"full_{name}")
        log(f"  {res[name]['wall_s']} s, peak RSS {res[name]['peak_rss_mb']} MB")
    members, n_changed = change_members(w100, 0.01)
    cfg = pipeline_config(w100, WORK / "out_100k", DS_INCR, cls_dir)
    cfg["inputs"]["members"] = str(members)
    log(f"incremental: {n_changed} members changed")
    res["incremental_100k"] = run_cli(cfg, "incremental_100k")
    res["incremental_100k"]["members_changed"] = n_changed
    log(f"  {res['incremental_100k']['wall_s']} s")
    res["time_ratio_100k_vs_10k"] = round(res["100k"]["wall_s"] / res["10k"]["wall_s"], 2)
    # The target is on process-tree memory: RSS (the measure; counts each shared
    # object-store page once per process that maps it) and PSS (each shared page split between
    # its users: the memory the tree really holds). Both are reported.
    res["memory_ratio_100k_vs_10k"] = round(res["100k"]["peak_rss_mb"] / res["10k"]["peak_rss_mb"], 3)
    res["memory_ratio_pss_100k_vs_10k"] = round(res["100k"]["peak_pss_mb"] / res["10k"]["peak_pss_mb"], 3)
    res["incremental_vs_full"] = round(res["incremental_100k"]["wall_s"] / res["100k"]["wall_s"], 3)
    res["targets"] = {"time_ratio": 11, "memory_ratio": 1.5, "incremental_vs_full": 0.10}
    return res


# ---------------------------------------------------------------------------------------------


def child(part: str) -> dict:
    """Run one part in a fresh interpreter and return its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANTERN_LOG_LEVEL": "WARNING"}
    result = WORK / f"part_{part}.json"
    result.unlink(missing_ok=True)
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", part, "--result", str(result)],
                              cwd=ROOT, env=env, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"part {part} ran past {RUN_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        raise SystemExit(f"part {part} failed with exit code {proc.returncode}")
    return json.loads(result.read_text())


CHECKS = (
    # (key, label, target, ">=" or "<=")
    ("classifier_speedup", "classifier stage\nvs naive loop (x)", 3.0, ">="),
    ("classifier_mfu_forward", "classifier forward\nMFU (bf16 matmul)", 0.30, ">="),
    ("time_ratio_100k_vs_10k", "time\n100k / 10k", 11.0, "<="),
    ("memory_ratio_100k_vs_10k", "peak RSS\n100k / 10k", 1.5, "<="),
    ("memory_ratio_pss_100k_vs_10k", "peak PSS\n100k / 10k", 1.5, "<="),
    ("incremental_vs_full", "incremental (1% members)\n/ full run, 100k", 0.10, "<="),
    ("explainer_vs_bare", "explanation stage\n/ bare vLLM tokens/s", 0.8, ">="),
)


def verdicts(results: dict) -> dict:
    """Each target with its measured value and pass/fail (from whichever parts have run)."""
    c, e, s = results.get("classifier"), results.get("explainer"), results.get("scaling")
    values = {
        "classifier_speedup": c and c["speedup"],
        "classifier_mfu_forward": c and c["mfu_forward"],
        "time_ratio_100k_vs_10k": s and s["time_ratio_100k_vs_10k"],
        "memory_ratio_100k_vs_10k": s and s["memory_ratio_100k_vs_10k"],
        "memory_ratio_pss_100k_vs_10k": s and s.get("memory_ratio_pss_100k_vs_10k"),
        "incremental_vs_full": s and s["incremental_vs_full"],
        "explainer_vs_bare": e and e["ratio"],
    }
    out = {}
    for key, _, target, op in CHECKS:
        v = values[key]
        if v is None:
            continue
        out[key] = {"value": v, "target": f"{op} {target}",
                    "pass": bool(v >= target if op == ">=" else v <= target)}
    return out


def plot(results: dict, path: Path) -> None:
    """One small panel per target: the measured value as a bar, the target as a dashed line
    (green bar: met, red: missed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = results.get("verdicts", {})
    fig, axes = plt.subplots(1, len(CHECKS), figsize=(2.3 * len(CHECKS), 3.6), squeeze=False)
    for ax, (key, label, target, op) in zip(axes[0], CHECKS, strict=True):
        ax.set_xticks([])
        ax.set_title(label, fontsize=9)
        fmt = "{:.0%}" if key in ("classifier_mfu_forward", "incremental_vs_full") else "{:.2f}"
        if key not in v:  # a part that did not run in this results file
            ax.set_yticks([])
            ax.text(0.5, 0.5, f"not measured\n(target {op} {fmt.format(target)})", transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="#777")
            continue
        val = v[key]["value"]
        ax.bar([0], [val], width=0.6, color="#2a7" if v[key]["pass"] else "#c33")
        ax.axhline(target, color="k", ls="--", lw=1)
        ax.set_ylim(0, max(val, target) * 1.3)
        ax.text(0, val, fmt.format(val), ha="center", va="bottom", fontsize=9)
        ax.text(0.5, target, f"target {op} {fmt.format(target)}", transform=ax.get_yaxis_transform(),
                ha="center", va="bottom", fontsize=7)
    fig.suptitle(f"precompute benchmark, {MACHINE}, {DATE}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--plot-only", action="store_true",
                    help="recompute verdicts and the plot from bench/results/precompute.json; run nothing")
    args = ap.parse_args()
    if args.plot_only:
        path = RESULTS / "precompute.json"
        results = json.loads(path.read_text())
        results["verdicts"] = verdicts(results)
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        plot(results, RESULTS / "precompute.png")
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    if args.child:
        fn = {"classifier": part_classifier, "explainer_bare": part_explainer_bare,
              "explainer_stage": part_explainer_stage, "join": part_join}[args.child]
        # The result goes to a file: vLLM and Ray print to stdout too.
        Path(args.result).write_text(json.dumps(fn()))
        return 0

    start = time.perf_counter()
    path = RESULTS / "precompute.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update({"machine": MACHINE, "date": DATE, "platform": platform.platform(),
                    "python": platform.python_version()})
    world(10_000)
    world(100_000)
    classifier_export(world(10_000))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for part in [p.strip() for p in args.only.split(",") if p.strip()]:
        if part not in PARTS:
            raise SystemExit(f"unknown part {part}; choose from {PARTS}")
        t0 = time.perf_counter()
        log(f"part {part}")
        try:
            if part == "classifier":
                results["classifier"] = child("classifier")
            elif part == "explainer":
                bare, stage = child("explainer_bare"), child("explainer_stage")
                results["explainer"] = {"bare": bare, "stage": stage, "prompts": N_PROMPTS,
                                        "max_tokens": MAX_TOKENS, "target": 0.8,
                                        "ratio": round(stage["tokens_per_s"] / bare["tokens_per_s"], 3)}
                log(f"explainer: bare {bare['tokens_per_s']} tok/s, stage {stage['tokens_per_s']} tok/s "
                    f"({results['explainer']['ratio']}x)")
            elif part == "join":
                results["join"] = child("join")
            elif part == "scaling":
                results["scaling"] = part_scaling()
            results.get("failed", {}).pop(part, None)
        except SystemExit as exc:  # a failed part is recorded; the others still run
            log(f"part {part} FAILED: {exc}")
            results.setdefault("failed", {})[part] = str(exc)
        results.setdefault("part_seconds", {})[part] = round(time.perf_counter() - t0, 1)
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")  # progress survives a kill
    if {p.strip() for p in args.only.split(",")} >= set(PARTS):  # a subset keeps the full run's time
        results["bench_seconds"] = round(time.perf_counter() - start, 1)
    c, sc = results.get("classifier"), results.get("scaling")
    if c and sc and sc["100k"]["stages"].get("classify"):
        # End-to-end utilisation of the classifier in the pipeline: model FLOPs of the pairs the
        # 100k run scored over its actor's busy seconds (tokenise, pad, forward, Arrow), and over
        # the wall time of the whole classify phase (join, classify, select).
        cls = sc["100k"]["stages"]["classify"]
        flops = cls["rows"] * c.get("gflop_per_pair_scaling", c["gflop_per_pair"]) * 1e9
        peak = c["matmul_gflops_bf16" if c["dtype_stage"] != "fp32" else "matmul_gflops_fp32"] * 1e9
        sc["pipeline_classifier"] = {
            "pairs_per_s_busy": cls["rows_per_s"],
            "utilisation_busy": round(flops / cls["busy_s"] / peak, 3),
            "pairs_per_s_phase_wall": round(cls["rows"] / sc["100k"]["timings"]["classify"], 1),
            "utilisation_phase_wall": round(flops / sc["100k"]["timings"]["classify"] / peak, 3),
        }
    results["verdicts"] = verdicts(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    plot(results, RESULTS / "precompute.png")

    print("\nprecompute benchmark (" + MACHINE + ")")
    for key, label, _, _ in CHECKS:
        if key in results["verdicts"]:
            r = results["verdicts"][key]
            print(f"  {label.replace(chr(10), ' '):45s} {r['value']:>8} (target {r['target']}): "
                  + ("pass" if r["pass"] else "MISS"))
    if "join" in results:
        j = results["join"]
        print(f"  join onto {j['pairs']} pairs: broadcast {j['broadcast']['seconds']} s, shuffle {j['shuffle']['seconds']} s")
    print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
