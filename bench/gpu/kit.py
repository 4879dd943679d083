"""GPU measurement kit: ceilings, the classifier stage, the explainer training step and generation,
in one process, each section under its own time cap (issue 16).

    bash bench/gpu/run.sh                          # on a GPU machine: <= 8 minutes, $OUT/gpu.json
    bash bench/gpu/run.sh --cpu --tiny --out DIR   # CPU dry run of the same code (the test suite)

Sections, in order (each writes its numbers into the JSON as soon as it ends, so a run stopped by
its time limit still leaves what it measured):

1. **ceilings**: the dense matmul rate (bf16 and fp32, ``n³``; 8192³ on a GPU) and the
   device-to-device copy bandwidth (bytes read plus bytes written), measured in this run. Every
   MFU below is model FLOPs/s over the *measured* matmul rate of the dtype the path computes in.
2. **classifier**: the precompute stage's own
   :class:`~lantern_batch.precompute.classifier_stage.ClassifierActor` (``__call__`` on an Arrow
   table of pairs, as Ray Data calls it: tokenise, length-sort, dynamic padding, bf16 autocast
   where native, ``with_scores``) on an exported MiniLM-L6 classifier and on a ModernBERT-base
   sized one, at each max length and forward batch size; against the naive loop (one pair per
   forward pass, fp32, ``inference_mode``) on the same model. Forward MFU counts the encoder's
   linear-layer FLOPs (2 per weight per token) plus attention (4·L²·d per layer per sequence)
   over the time spent inside the model's forward calls. MiniLM has its pretrained weights
   where ``bundled:minilm`` resolves, random weights of the same config elsewhere; ModernBERT
   always has random weights (throughput does not depend on the weights' values).
3. **train**: the explainer's training step as ``decoder_train_loop`` runs it: ``collate_lm``
   with the teacher's sparse top-k, :class:`~lantern_batch.distill.decoder.DecoderForKD`
   (LM head at output positions only), ``explainer_loss`` (SFT + TVD over the top-k plus a rest
   bucket), backward, ``AdamW``; fp32 weights under bf16 autocast. On a SmolLM2-135M config pruned
   to every 2nd layer (``layer_pruned``, as configs/prod_distill_explainer.yaml) and a ~1B Llama
   config, random weights. Tokens/s counts every token of the batch; MFU = 6·N·tokens/s over the
   measured bf16 matmul rate (N = all parameters), as the issue defines it, and a tighter model
   count next to it (the LM head only at output positions, causal attention).
4. **generate**: greedy generation of the same token-id prompts (fixed length) with transformers
   ``generate`` (batched, bf16 weights) and, where ``vllm`` imports, ``vllm.LLM.generate`` in a
   child process under the section's time cap; output tokens/s. Skipped with the reason where
   vLLM is absent (the GPU image has none) or in ``--tiny`` mode.

Only torch, transformers, tokenizers, pyarrow, numpy and the project's modules are imported: nothing of Ray,
vLLM (except in its child), DeepSpeed or pydantic, which the GPU image lacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's modules by path
    sys.path.insert(0, str(ROOT))

KIT_VERSION = 1
WHEELS_DIR = ROOT / "bench" / "gpu" / "wheels"
"""What travels to a GPU machine (gitignored): wheels, and ``minilm/`` (MiniLM's config and
tokenizer files, no weights), both written by ``bench/gpu/wheels.sh``."""
ABSENT_ON_IMAGE = ("ray", "vllm", "deepspeed", "pydantic")
"""Packages the GPU image lacks; the JSON records which of them this run could import."""


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the tiny CPU dry run."""

    matmul_n: int
    matmul_reps: int
    copy_mib: int
    copy_reps: int
    cls_max_lengths: tuple[int, ...]
    cls_batches: tuple[int, ...]
    cls_rows: int  # pairs per actor call (rows_per_call)
    cls_min_s: float  # timed seconds per (model, max length, batch) point, at least one call
    cls_naive_s: float  # seconds of naive loop per (model, max length)
    cls_naive_max: int  # pairs of naive loop per (model, max length), at most
    cls_configs: dict[str, dict[str, Any]]
    train_configs: dict[str, dict[str, Any]]
    train_keep_every: int
    train_batch: int
    prompt_len: int
    target_len: int
    topk: int
    train_warmup: int
    train_min_steps: int
    train_max_steps: int
    train_min_s: float
    gen_prompts: int
    gen_prompt_len: int
    gen_new_tokens: int
    gen_batches: tuple[int, ...]
    caps: dict[str, float]  # seconds per section
    budget_s: float  # the whole run


# Shapes of the real models. MiniLM-L6 is all-MiniLM-L6-v2's config.json; ModernBERT-base is
# answerdotai/ModernBERT-base's (22 layers, GLU MLP 2x1152, a global attention layer every 3rd,
# local window 128); SmolLM2-135M is HuggingFaceTB/SmolLM2-135M-Instruct's (30 layers, GQA 9/3,
# tied embeddings), pruned to every 2nd layer as the production explainer; the ~1B config is
# Llama-3.2-1B's shape with SmolLM2's 49,152-token vocabulary (so the same top-k ids apply).
MINILM = dict(kind="bert", hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              vocab_size=30522, max_position_embeddings=512)
MODERNBERT_BASE = dict(kind="modernbert", hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                       intermediate_size=1152, vocab_size=50368, global_attn_every_n_layers=3,
                       local_attention=128, max_position_embeddings=8192)
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                    max_position_embeddings=8192)
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=49152, tie_word_embeddings=True, rope_theta=500000.0,
                max_position_embeddings=8192)

FULL = Sizes(
    matmul_n=8192, matmul_reps=50, copy_mib=2048, copy_reps=50,
    cls_max_lengths=(128, 256), cls_batches=(64, 128, 256, 512, 1024), cls_rows=4096, cls_min_s=1.0,
    cls_naive_s=3.0, cls_naive_max=600,
    cls_configs={"minilm": MINILM, "modernbert-base": MODERNBERT_BASE},
    train_configs={"smollm2-135m-pruned": SMOLLM2_135M, "llama-1b": LLAMA_1B}, train_keep_every=2,
    train_batch=16, prompt_len=600, target_len=128, topk=20,
    train_warmup=3, train_min_steps=5, train_max_steps=40, train_min_s=8.0,
    gen_prompts=256, gen_prompt_len=600, gen_new_tokens=128, gen_batches=(64, 256),
    caps={"ceilings": 30, "classifier": 170, "train": 110, "generate": 110}, budget_s=450,
)
TINY = Sizes(
    matmul_n=256, matmul_reps=3, copy_mib=16, copy_reps=3,
    cls_max_lengths=(32, 64), cls_batches=(2, 8), cls_rows=8, cls_min_s=0.0,
    cls_naive_s=0.2, cls_naive_max=4,
    cls_configs={
        "minilm": dict(MINILM, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        "modernbert-base": dict(MODERNBERT_BASE, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                intermediate_size=48, local_attention=16),
    },
    train_configs={
        "smollm2-135m-pruned": dict(SMOLLM2_135M, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
        "llama-1b": dict(LLAMA_1B, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    },
    train_keep_every=2, train_batch=2, prompt_len=24, target_len=8, topk=4,
    train_warmup=1, train_min_steps=1, train_max_steps=1, train_min_s=0.0,
    gen_prompts=4, gen_prompt_len=16, gen_new_tokens=4, gen_batches=(2, 4),
    caps={"ceilings": 20, "classifier": 40, "train": 30, "generate": 30}, budget_s=150,
)


# ---------------------------------------------------------------------------------------------
# Run state, timing, output


@dataclass
class Run:
    sizes: Sizes
    device: Any  # torch.device
    tiny: bool
    out_path: Path
    started: float = field(default_factory=time.perf_counter)
    results: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.sizes.budget_s - (time.perf_counter() - self.started)

    def deadline(self, section: str) -> float:
        """perf_counter time at which ``section`` stops starting new measurements."""
        return time.perf_counter() + min(self.sizes.caps[section], max(0.0, self.left()))

    def sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        self.results["errors"] = self.errors
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, self.out_path)


def log(msg: str) -> None:
    print(f"[kit {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def available(name: str) -> bool:
    """Whether ``name`` imports here (a failing import counts as absent)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# 1. Ceilings


def matmul_rate(run: Run, dtype, n: int, reps: int) -> float:
    """FLOP/s of an ``n × n @ n × n`` product in ``dtype`` (mean over ``reps`` after warm-up;
    CUDA events on a GPU)."""
    import torch

    dev = run.device
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    for _ in range(5 if dev.type == "cuda" else 1):  # warm-up; lets the clocks rise
        a @ b
    run.sync()
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = time.perf_counter() - t0
    return 2 * n**3 * reps / seconds


def copy_rate(run: Run, mib: int, reps: int) -> float:
    """Bytes/s of a device-to-device copy, counting bytes read plus bytes written."""
    import torch

    n = mib * 2**20
    src = torch.empty(n, dtype=torch.uint8, device=run.device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    run.sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    run.sync()
    return 2 * n * reps / (time.perf_counter() - t0)


def section_ceilings(run: Run) -> dict:
    import torch

    s = run.sizes
    bf16 = matmul_rate(run, torch.bfloat16, s.matmul_n, s.matmul_reps)
    # fp32 without TF32 (PyTorch's default for matmul): the naive loop's dtype.
    fp32 = matmul_rate(run, torch.float32, s.matmul_n, max(2, s.matmul_reps // 5))
    copy = copy_rate(run, s.copy_mib, s.copy_reps)
    out = {"matmul_n": s.matmul_n, "matmul_tflops_bf16": bf16 / 1e12, "matmul_tflops_fp32": fp32 / 1e12,
           "copy_mib": s.copy_mib, "copy_gbps_read_plus_write": copy / 1e9}
    log(f"ceilings: bf16 {bf16 / 1e12:.2f} TFLOP/s, fp32 {fp32 / 1e12:.2f} TFLOP/s ({s.matmul_n}³), "
        f"copy {copy / 1e9:.1f} GB/s")
    return out


def peak(run: Run, bf16: bool) -> float:
    """The measured matmul FLOP/s of the dtype a path computes in."""
    c = run.results["ceilings"]
    return (c["matmul_tflops_bf16"] if bf16 else c["matmul_tflops_fp32"]) * 1e12


# ---------------------------------------------------------------------------------------------
# 2. Classifier stage


def pair_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` classifier input texts in the production layout
    (:func:`lantern_batch.prompts.classifier_text`, default 1,500 characters), for synthetic
    member/job pairs drawn from the taxonomy."""
    from lantern_batch import prompts, taxonomy
    from lantern_batch.schema import SENIORITY_LEVELS, WORKPLACE_TYPES

    rng = random.Random(seed)
    cities = [c.name for c in taxonomy.CITIES]
    out = []
    for _ in range(n):
        fm, fj = rng.choice(taxonomy.FAMILIES), rng.choice(taxonomy.FAMILIES)
        lm, lj = rng.choice(SENIORITY_LEVELS), rng.choice(SENIORITY_LEVELS)
        skills = fm.core_skills + fm.adjacent_skills
        title = rng.choice(fm.titles[lm])
        experience = [{"title": rng.choice(fm.titles[rng.choice(SENIORITY_LEVELS)]),
                       "company": rng.choice(fm.companies), "start_year": 2010 + i * 3,
                       "end_year": None if i == 3 else 2013 + i * 3,
                       "description": "; ".join(rng.sample(fm.duties, min(3, len(fm.duties))))}
                      for i in range(4)]
        member = {
            "headline": f"{title} at {rng.choice(fm.companies)}",
            "summary": " ".join(f"I {d}." for d in rng.sample(fm.duties, len(fm.duties))),
            "current_title": title, "seniority": lm, "years_experience": float(rng.randint(0, 25)),
            "skills": rng.sample(skills, min(10, len(skills))), "experience": experience,
            "education": [{"degree": "BSc", "field": rng.choice(fm.degree_fields),
                           "school": rng.choice(taxonomy.SCHOOLS)}],
            "location": rng.choice(cities),
        }
        job = {
            "title": rng.choice(fj.titles[lj]), "company": rng.choice(fj.companies),
            "description": " ".join(f"You will {d}." for d in fj.duties) * 2,
            "seniority": lj, "required_skills": rng.sample(fj.core_skills, min(6, len(fj.core_skills))),
            "location": rng.choice(cities), "workplace_type": rng.choice(WORKPLACE_TYPES),
        }
        out.append(prompts.classifier_text(member, job, rng.choice(fj.queries)))
    return out


def bert_tokenizer(texts: list[str]) -> tuple[Any, str]:
    """MiniLM's tokenizer (also used for the ModernBERT-sized model) and where it came from:
    the bundled model, else ``bench/gpu/wheels/minilm`` (copied there by wheels.sh), else a
    WordPiece vocabulary trained on the bench texts."""
    from transformers import AutoTokenizer

    for where, path in _minilm_dirs():
        if (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file():
            return AutoTokenizer.from_pretrained(str(path)), where
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    return fast, "WordPiece trained on the bench texts (no MiniLM tokenizer found)"


def _minilm_dirs() -> list[tuple[str, Path]]:
    dirs = []
    try:
        from lantern_batch.models import resolve

        dirs.append(("bundled:minilm", Path(resolve("bundled:minilm"))))
    except Exception:  # noqa: BLE001 - the package is absent on the GPU image
        pass
    dirs.append(("bench/gpu/wheels/minilm", WHEELS_DIR / "minilm"))
    return dirs


def encoder(name: str, shape: dict[str, Any], tiny: bool):
    """``(encoder, weights)``: MiniLM's pretrained weights where the bundled model is here (full
    size only), else random weights of ``shape``."""
    import torch
    from transformers import AutoModel, BertConfig, ModernBertConfig

    kw = {k: v for k, v in shape.items() if k != "kind"}
    if name == "minilm" and not tiny:
        for where, path in _minilm_dirs():
            if (path / "model.safetensors").is_file() or (path / "pytorch_model.bin").is_file():
                return AutoModel.from_pretrained(str(path), dtype=torch.float32), f"pretrained ({where})"
    torch.manual_seed(0)
    config = BertConfig(**kw) if shape["kind"] == "bert" else ModernBertConfig(**kw)
    return AutoModel.from_config(config, dtype=torch.float32), "random (throughput does not depend on weight values)"


def encoder_flops(enc, lengths: list[int]) -> float:
    """Forward FLOPs of the encoder over sequences of these token lengths: 2 per linear weight
    per token, plus 4·L²·d per attention layer per sequence (QKᵀ and AV; ModernBERT's local
    layers are counted in full, which is what SDPA computes under a window mask)."""
    from torch import nn

    linear = sum(m.weight.numel() for m in enc.modules() if isinstance(m, nn.Linear))
    d, layers = enc.config.hidden_size, enc.config.num_hidden_layers
    return float(sum(2 * linear * L + 4 * L * L * d * layers for L in lengths))


def section_classifier(run: Run) -> dict:
    import numpy as np
    import pyarrow as pa

    from lantern_batch.precompute.route import work_table

    s = run.sizes
    deadline = run.deadline("classifier")
    texts = pair_texts(max(s.cls_rows, s.cls_naive_max))
    tok, tok_source = bert_tokenizer(texts)
    rows = work_table({"member_id": [f"m{i}" for i in range(s.cls_rows)], "job_id": ["j"] * s.cls_rows})
    rows = rows.append_column("__text", pa.array(texts[: s.cls_rows]))
    out: dict[str, Any] = {"rows_per_call": s.cls_rows, "tokenizer": tok_source,
                           "text_chars_mean": round(float(np.mean([len(t) for t in texts])), 1),
                           "texts": "synthetic taxonomy pairs in lantern_batch.prompts.classifier_text's layout",
                           "models": {}}
    run.results["classifier"] = out  # saved after each model, so a stopped run keeps what it measured
    work = Path(tempfile.mkdtemp(prefix="lantern-gpu-kit-"))
    try:
        return _classifier_models(run, out, work, deadline, texts, tok, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _classifier_models(run: Run, out: dict, work: Path, deadline: float, texts: list[str], tok, rows) -> dict:
    """Each classifier in turn: export, load through ``ClassifierActor``, then the naive loop and
    the stage at every max length and batch size."""
    import numpy as np
    import torch

    from lantern_batch.classifier import FitClassifier, classifier_version
    from lantern_batch.precompute.classifier_stage import (
        DEFAULT_TEXT_MAX_CHARS,
        ClassifierActor,
        ClassifierSettings,
        read_meta,
    )

    s = run.sizes
    for name, shape in s.cls_configs.items():
        if time.perf_counter() > deadline:
            out["models"][name] = {"skipped": "time cap"}
            continue
        t0 = time.perf_counter()
        enc, weights = encoder(name, shape, run.tiny)
        export = work / name
        FitClassifier(enc, pooling="mean", dropout=0.0).save(export, {"max_length": max(s.cls_max_lengths)}, tokenizer=tok)
        del enc
        meta = read_meta(export)
        settings = ClassifierSettings(
            model_dir=str(export), version=classifier_version(export), max_length=s.cls_max_lengths[0],
            max_chars=int(meta.get("text_max_chars") or DEFAULT_TEXT_MAX_CHARS), batch_size=s.cls_batches[0],
            temperature=float(meta.get("calibration_temperature") or 1.0), dtype="auto", torch_threads=None,
            use_gpu=run.device.type == "cuda")
        actor = ClassifierActor(settings)
        enc = actor.model.encoder
        params = sum(p.numel() for p in actor.model.parameters())
        m: dict[str, Any] = {"weights": weights, "parameters": params, "config": shape,
                             "dtype_stage": "bf16 autocast, fp32 weights" if actor.bf16 else "fp32",
                             "setup_s": round(time.perf_counter() - t0, 1), "max_lengths": {}}
        out["models"][name] = m
        log(f"classifier {name}: {params / 1e6:.1f}M parameters, {weights.split(' ')[0]} weights, "
            f"stage dtype {m['dtype_stage']}")
        forward_s = [0.0]
        inner = actor.model.forward

        def timed_forward(*a, _inner=inner, _acc=forward_s, **k):
            run.sync()
            t = time.perf_counter()
            r = _inner(*a, **k)
            run.sync()
            _acc[0] += time.perf_counter() - t
            return r

        actor.model.forward = timed_forward
        for ml in s.cls_max_lengths:
            if time.perf_counter() > deadline:
                m["max_lengths"][str(ml)] = {"skipped": "time cap"}
                continue
            lengths = [len(x) for x in tok(texts[: s.cls_rows], truncation=True, max_length=ml)["input_ids"]]
            flops_call = encoder_flops(enc, lengths)
            point: dict[str, Any] = {"tokens_mean": round(float(np.mean(lengths)), 1),
                                     "gflop_per_pair": round(flops_call / len(lengths) / 1e9, 3)}
            m["max_lengths"][str(ml)] = point
            # Naive: one pair per forward pass, fp32, on the same model (its own timing).
            actor.model.forward = inner
            naive = naive_loop(run, actor.model, tok, texts, ml, min(deadline, time.perf_counter() + s.cls_naive_s),
                               s.cls_naive_max)
            actor.model.forward = timed_forward
            naive_flops = encoder_flops(enc, naive["lengths"])
            point["naive_pairs_per_s"] = naive["pairs"] / naive["seconds"]
            point["naive_pairs"] = naive["pairs"]
            point["naive_mfu_vs_fp32"] = naive_flops / naive["seconds"] / peak(run, False)
            point["batches"] = {}
            for bs in s.cls_batches:
                if time.perf_counter() > deadline:
                    point["batches"][str(bs)] = {"skipped": "time cap"}
                    continue
                actor.settings = dataclasses.replace(settings, max_length=ml, batch_size=bs)
                try:
                    actor(rows.slice(0, min(s.cls_rows, 2 * bs)))  # warm-up at these shapes
                    calls, stage_s = 0, 0.0
                    forward_s[0] = 0.0
                    while calls == 0 or (stage_s < s.cls_min_s and time.perf_counter() < deadline):
                        t = time.perf_counter()
                        scored = actor(rows)
                        run.sync()
                        stage_s += time.perf_counter() - t
                        calls += 1
                except torch.cuda.OutOfMemoryError as e:
                    point["batches"][str(bs)] = {"error": f"out of memory: {str(e)[:200]}"}
                    free(run.device)
                    continue
                assert scored.num_rows == rows.num_rows and "p_high" in scored.column_names
                pairs = calls * rows.num_rows
                rate = pairs / stage_s
                point["batches"][str(bs)] = {
                    "stage_pairs_per_s": rate, "speedup_vs_naive": rate / point["naive_pairs_per_s"],
                    "forward_share_of_stage": forward_s[0] / stage_s,
                    "mfu_forward": calls * flops_call / forward_s[0] / peak(run, actor.bf16),
                    "mfu_stage": calls * flops_call / stage_s / peak(run, actor.bf16),
                    "pairs": pairs, "seconds": stage_s,
                }
                b = point["batches"][str(bs)]
                log(f"classifier {name} L{ml} bs{bs}: {rate:,.0f} pairs/s ({b['speedup_vs_naive']:.1f}x naive "
                    f"{point['naive_pairs_per_s']:,.1f}), forward MFU {b['mfu_forward']:.1%}, "
                    f"forward {b['forward_share_of_stage']:.0%} of the stage")
            done = {k: v for k, v in point["batches"].items() if "stage_pairs_per_s" in v}
            if done:
                best = max(done, key=lambda k: done[k]["stage_pairs_per_s"])
                point["best_batch"] = int(best)
        actor.model.forward = inner
        del actor, enc
        free(run.device)
        run.save()
    return out


def naive_loop(run: Run, model, tok, texts: list[str], max_length: int, until: float, most: int) -> dict:
    """One pair per forward pass in fp32 (no autocast), tokenised one at a time; stops at
    ``until`` or after ``most`` pairs (at least 2)."""
    import torch

    dev = next(model.parameters()).device
    lengths: list[int] = []
    with torch.inference_mode():
        e = tok(texts[0], truncation=True, max_length=max_length, return_tensors="pt")
        model(e["input_ids"].to(dev), e["attention_mask"].to(dev)).cpu()  # warm-up
        t0 = time.perf_counter()
        for t in texts[:most]:
            e = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
            probs = torch.softmax(model(e["input_ids"].to(dev), e["attention_mask"].to(dev)).float(), -1)
            probs.cpu()
            lengths.append(int(e["input_ids"].shape[1]))
            if len(lengths) >= 2 and time.perf_counter() > until:
                break
        seconds = time.perf_counter() - t0
    return {"pairs": len(lengths), "seconds": seconds, "lengths": lengths}


# ---------------------------------------------------------------------------------------------
# 3. Explainer training step


def decoder_model(shape: dict[str, Any], device, keep_every: int | None, dtype=None):
    """A random-weight Llama causal LM of ``shape`` built on ``device``, pruned by the project's
    ``keep_indices`` / ``layer_pruned`` when ``keep_every`` is set; ``(model, kept layers)``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lantern_batch.distill.decoder import keep_indices, layer_pruned

    torch.manual_seed(0)
    config = LlamaConfig(**shape)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    keep = keep_indices(config.num_hidden_layers, keep_every, None)
    if len(keep) != config.num_hidden_layers:
        layer_pruned(model, keep)
    if dtype is not None:
        model.to(dtype)
    return model, keep


def kd_batch(s: Sizes, vocab: int, seed: int = 0) -> dict[str, list]:
    """A columnar batch as the explainer's data prep writes it: prompt and target token ids and,
    per target token, the teacher's top-k ids and log-probabilities (descending, summing < 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"prompt_ids": [], "target_ids": [], "topk_ids": [], "topk_logprobs": []}
    for _ in range(s.train_batch):
        rows["prompt_ids"].append(rng.integers(3, vocab, s.prompt_len).tolist())
        target = rng.integers(3, vocab, s.target_len).tolist()
        rows["target_ids"].append(target)
        ids, lps = [], []
        for tok_id in target:
            others = dict.fromkeys(int(o) for o in rng.integers(0, vocab, 2 * s.topk) if o != tok_id)
            pos_ids = [tok_id] + list(others)[: s.topk - 1]
            p = np.sort(rng.dirichlet(np.ones(len(pos_ids) + 1)))[::-1][: len(pos_ids)]  # leaves a rest
            ids.append(pos_ids)
            lps.append(np.log(p).tolist())
        rows["topk_ids"].append(ids)
        rows["topk_logprobs"].append(lps)
    return rows


def train_flops(model, batch_size: int, seq: int, out_tokens: int) -> tuple[float, float]:
    """``(6·N·tokens, model FLOPs)`` of one training step. The model count: 6 per non-embedding
    weight per token, the LM head only at the output positions, causal attention at
    6·L²·d per layer per sequence (half of QKᵀ and AV, forward and twice backward)."""
    from torch import nn

    params = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight.numel()
    body = sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and m is not model.get_output_embeddings())
    tokens = batch_size * seq
    layers, d = model.config.num_hidden_layers, model.config.hidden_size
    model_flops = 6 * body * tokens + 6 * head * out_tokens + 6 * layers * d * seq * seq * batch_size
    return 6.0 * params * tokens, float(model_flops)


def section_train(run: Run) -> dict:
    import torch

    from lantern_batch.classifier import autocast_context, bf16_supported
    from lantern_batch.distill.decoder import DecoderForKD, collate_lm, count_parameters
    from lantern_batch.distill.losses import explainer_loss

    s = run.sizes
    deadline = run.deadline("train")
    bf16 = bf16_supported(run.device)
    out: dict[str, Any] = {"batch": s.train_batch, "prompt_tokens": s.prompt_len, "target_tokens": s.target_len,
                           "topk": s.topk, "loss": "explainer_loss: SFT + TVD (bucket rest), lambda 1/1",
                           "dtype": "bf16 autocast, fp32 weights, AdamW" if bf16 else "fp32, AdamW",
                           "weights": "random", "models": {}}
    run.results["train"] = out
    for name, shape in s.train_configs.items():
        if time.perf_counter() > deadline:
            out["models"][name] = {"skipped": "time cap"}
            continue
        keep_every = s.train_keep_every if "pruned" in name else None
        model, keep = decoder_model(shape, run.device, keep_every)
        wrapper = DecoderForKD(model).train()
        opt = torch.optim.AdamW(wrapper.parameters(), lr=1e-4)
        b = collate_lm(kd_batch(s, shape["vocab_size"]), pad=0, k=s.topk)
        b = {k: v.to(run.device) for k, v in b.items()}
        seq = int(b["input_ids"].shape[1])
        out_tokens = int((b["labels"] != -100).sum())
        six_n, model_flops = train_flops(model, s.train_batch, seq, out_tokens)
        m: dict[str, Any] = {"parameters": count_parameters(model), "layers_kept": len(keep), "config": shape}
        out["models"][name] = m
        if run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times: list[float] = []
        parts: dict[str, float] = {}
        try:
            step = 0
            while step < s.train_warmup + s.train_max_steps:
                t = time.perf_counter()
                with autocast_context(run.device, bf16):
                    logits, sel = wrapper(b["input_ids"], b["attention_mask"], b["labels"])  # [n, vocab]
                labels = b["labels"][sel]
                loss, parts = explainer_loss(logits, labels, b["topk_ids"][sel], b["topk_logprobs"][sel],
                                             b["kd_mask"][sel], lambda_sft=1.0, lambda_kd=1.0,
                                             divergence="tvd", rest="bucket")
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                run.sync()
                step += 1
                if step > s.train_warmup:
                    times.append(time.perf_counter() - t)
                enough = len(times) >= s.train_min_steps and sum(times) >= s.train_min_s
                if len(times) >= 1 and (enough or time.perf_counter() > deadline):
                    break
        except torch.cuda.OutOfMemoryError as e:
            m["error"] = f"out of memory: {str(e)[:200]}"
        if times:
            step_s = sorted(times)[len(times) // 2]
            tokens = s.train_batch * seq
            m.update({
                "steps_timed": len(times), "step_s_median": step_s, "tokens_per_step": tokens,
                "output_tokens_per_step": out_tokens, "tokens_per_s": tokens / step_s,
                "mfu_6n": six_n / step_s / peak(run, bf16), "mfu_model": model_flops / step_s / peak(run, bf16),
                "loss_parts": {k: round(v, 4) for k, v in parts.items()},
            })
            if run.device.type == "cuda":
                m["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            log(f"train {name}: {m['parameters'] / 1e6:.1f}M parameters, {m['tokens_per_s']:,.0f} tokens/s, "
                f"MFU 6N {m['mfu_6n']:.1%} (model count {m['mfu_model']:.1%}), step {step_s * 1000:.0f} ms")
        del wrapper, model, opt, b
        free(run.device)
        run.save()
    return out


# ---------------------------------------------------------------------------------------------
# 4. Generation


def gen_prompts(s: Sizes, vocab: int) -> list[list[int]]:
    rng = random.Random(1)
    return [[rng.randrange(3, vocab) for _ in range(s.gen_prompt_len)] for _ in range(s.gen_prompts)]


def section_generate(run: Run) -> dict:
    import torch

    from lantern_batch.classifier import bf16_supported

    s = run.sizes
    deadline = run.deadline("generate")
    name = next(k for k in s.train_configs if "pruned" in k)
    shape = s.train_configs[name]
    dtype = torch.bfloat16 if bf16_supported(run.device) else torch.float32
    prompts = gen_prompts(s, shape["vocab_size"])
    out: dict[str, Any] = {"model": name, "weights": "random", "dtype": str(dtype).replace("torch.", ""),
                           "prompts": len(prompts), "prompt_tokens": s.gen_prompt_len,
                           "new_tokens": s.gen_new_tokens, "decoding": "greedy, exactly new_tokens each",
                           "transformers": {}}
    model, _ = decoder_model(shape, run.device, s.train_keep_every, dtype=dtype)
    model.eval()
    ids_all = torch.tensor(prompts, dtype=torch.long)
    with torch.inference_mode():
        model.generate(input_ids=ids_all[:2].to(run.device), attention_mask=torch.ones_like(ids_all[:2]).to(run.device),
                       max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)  # warm-up
        for bs in s.gen_batches:
            if time.perf_counter() > deadline:
                out["transformers"][str(bs)] = {"skipped": "time cap"}
                continue
            new, t0 = 0, time.perf_counter()
            for i in range(0, len(prompts), bs):
                ids = ids_all[i: i + bs].to(run.device)
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=s.gen_new_tokens,
                                     min_new_tokens=s.gen_new_tokens, do_sample=False, pad_token_id=0)
                new += int(gen.shape[0] * (gen.shape[1] - ids.shape[1]))
                if time.perf_counter() > deadline:
                    break
            run.sync()
            sec = time.perf_counter() - t0
            out["transformers"][str(bs)] = {"output_tokens_per_s": new / sec, "output_tokens": new, "seconds": sec}
            log(f"generate transformers bs{bs}: {new / sec:,.0f} output tokens/s")
    out["vllm"] = vllm_generate(run, model, prompts, deadline)
    del model
    free(run.device)
    return out


def vllm_generate(run: Run, model, prompts: list[list[int]], deadline: float) -> dict:
    """``vllm.LLM.generate`` on the same prompts in a child process (the engine's start and any
    hang stay under the section's cap); a skip with its reason where it cannot run."""
    s = run.sizes
    if run.tiny:
        return {"skipped": "--tiny: a vLLM engine takes minutes to start on a CPU, more than the dry run's budget"}
    if run.device.type != "cuda":
        return {"skipped": "no GPU: the CPU numbers for vLLM are bench/dtype.py's and bench/precompute.py's"}
    if not available("vllm"):
        return {"skipped": "vllm does not import here (the GPU image has none and its ~300 MB wheel is not carried)"}
    budget = deadline - time.perf_counter()
    if budget < 60:
        return {"skipped": f"time cap: {budget:.0f} s left of the section, under the 60 s an engine needs"}
    work = Path(tempfile.mkdtemp(prefix="lantern-gpu-kit-vllm-"))
    try:
        model.save_pretrained(str(work / "model"))
        (work / "prompts.json").write_text(json.dumps(prompts))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--vllm-child", str(work), str(s.gen_new_tokens)]
        # Its own process group (same session): on a timeout the engine's worker processes go too.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0)
        try:
            stdout, stderr = proc.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"timed out after {budget:.0f} s (engine start included)"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {(stderr or stdout)[-600:]}"}
    res = json.loads(lines[-1])
    log(f"generate vllm: {res['output_tokens_per_s']:,.0f} output tokens/s (engine start {res['engine_start_s']:.0f} s)")
    return res


def vllm_child(work: str, new_tokens: int) -> int:
    """Child process: one vLLM engine on ``work/model``, all prompts in one ``generate`` call."""
    from vllm import LLM, SamplingParams

    prompts = json.loads((Path(work) / "prompts.json").read_text())
    t0 = time.perf_counter()
    llm = LLM(model=str(Path(work) / "model"), skip_tokenizer_init=True, dtype="bfloat16", seed=0,
              max_model_len=len(prompts[0]) + new_tokens + 16, gpu_memory_utilization=0.6)
    start = time.perf_counter() - t0
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True, detokenize=False)
    llm.generate([{"prompt_token_ids": p} for p in prompts[:8]], params, use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    sec = time.perf_counter() - t
    new = sum(len(o.outputs[0].token_ids) for o in outs)
    import vllm

    print(json.dumps({"output_tokens_per_s": new / sec, "output_tokens": new, "seconds": sec,
                      "engine_start_s": start, "vllm": vllm.__version__}), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Table and main


def table(res: dict) -> str:
    """The short summary printed last."""
    rows: list[tuple[str, str, str]] = []

    def f(x, spec=",.0f"):
        return format(x, spec) if isinstance(x, (int, float)) else "-"

    c = res.get("ceilings", {})
    if "matmul_tflops_bf16" in c:
        rows.append(("ceiling", f"matmul bf16 {c['matmul_n']}³", f"{c['matmul_tflops_bf16']:.2f} TFLOP/s"))
        rows.append(("ceiling", f"matmul fp32 {c['matmul_n']}³", f"{c['matmul_tflops_fp32']:.2f} TFLOP/s"))
        rows.append(("ceiling", "copy, read + write", f"{c['copy_gbps_read_plus_write']:,.1f} GB/s"))
    for name, m in res.get("classifier", {}).get("models", {}).items():
        if "max_lengths" not in m:
            rows.append(("classifier", name, m.get("skipped") or m.get("error") or "-"))
        for ml, p in m.get("max_lengths", {}).items():
            if "best_batch" not in p:
                rows.append(("classifier", f"{name} L{ml}", p.get("skipped") or p.get("error") or "-"))
                continue
            b = p["batches"][str(p["best_batch"])]
            rows.append(("classifier", f"{name} L{ml} stage bs{p['best_batch']}",
                         f"{f(b['stage_pairs_per_s'])} pairs/s = {b['speedup_vs_naive']:.1f}x naive "
                         f"{f(p['naive_pairs_per_s'], ',.1f')}; fwd MFU {b['mfu_forward']:.0%}"))
    for name, m in res.get("train", {}).get("models", {}).items():
        if "tokens_per_s" in m:
            rows.append(("train", f"{name} ({m['parameters'] / 1e6:.0f}M)",
                         f"{f(m['tokens_per_s'])} tokens/s; MFU 6N {m['mfu_6n']:.0%}, model {m['mfu_model']:.0%}"))
        else:
            rows.append(("train", name, m.get("skipped") or m.get("error") or "-"))
    g = res.get("generate", {})
    for bs, p in g.get("transformers", {}).items():
        rows.append(("generate", f"transformers bs{bs}", f"{f(p['output_tokens_per_s'])} output tokens/s"
                     if "output_tokens_per_s" in p else p.get("skipped", "-")))
    if "vllm" in g:
        v = g["vllm"]
        rows.append(("generate", "vllm", f"{f(v['output_tokens_per_s'])} output tokens/s"
                     if "output_tokens_per_s" in v else (v.get("skipped") or v.get("error", "-"))[:90]))
    for sec in ("ceilings", "classifier", "train", "generate"):
        v = res.get(sec)
        if isinstance(v, dict) and ("error" in v or "skipped" in v):
            rows.append((sec, "section", (v.get("error") or v.get("skipped"))[:90]))
    w1 = max([len(r[0]) for r in rows] + [7])
    w2 = max([len(r[1]) for r in rows] + [4])
    head = (f"GPU kit: {res.get('mode')} on {res.get('device')} ({res.get('elapsed_s', 0):.0f} s); "
            "random weights except a bundled MiniLM (throughput does not depend on weight values)")
    lines = [head, f"{'section':<{w1}}  {'what':<{w2}}  value", f"{'-' * w1}  {'-' * w2}  -----"]
    lines += [f"{a:<{w1}}  {b:<{w2}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


SECTIONS = {"ceilings": section_ceilings, "classifier": section_classifier, "train": section_train,
            "generate": section_generate}


def out_path(arg: str | None, tiny: bool, cpu: bool) -> Path:
    """``--out``, else ``$OUT``, else ``bench/results``; the file is ``gpu.json`` for a full GPU
    run, ``gpu-dryrun.json`` otherwise (a dry run never overwrites a GPU run's numbers)."""
    name = "gpu-dryrun.json" if (tiny or cpu) else "gpu.json"
    base = arg or os.environ.get("OUT") or str(ROOT / "bench" / "results")
    return Path(base) / name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is available")
    p.add_argument("--tiny", action="store_true", help="tiny models and sizes (the dry run)")
    p.add_argument("--out", help="directory for the JSON (default $OUT, else bench/results)")
    p.add_argument("--only", help="comma-separated sections to run after the ceilings: "
                                  "classifier,train,generate")
    p.add_argument("--budget-s", type=float, help="seconds for the whole run (default 450; tiny 150)")
    p.add_argument("--vllm-child", nargs=2, metavar=("WORK", "NEW_TOKENS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.vllm_child:
        return vllm_child(args.vllm_child[0], int(args.vllm_child[1]))

    import torch
    import transformers

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    if args.tiny and not cuda:
        # Tiny ops on a shared CPU: one thread avoids OpenMP's spinning against other processes
        # (a loaded 2-core host ran the dry run 3x slower with two).
        torch.set_num_threads(1)
    sizes = TINY if args.tiny else FULL
    if args.budget_s:
        sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
    run = Run(sizes=sizes, device=device, tiny=args.tiny, out_path=out_path(args.out, args.tiny, args.cpu))
    run.results.update({
        "kit_version": KIT_VERSION, "mode": f"{'gpu' if cuda else 'cpu'}{'-tiny' if args.tiny else ''}",
        "device": torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine()),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "environment": {name: available(name) for name in ABSENT_ON_IMAGE},
        "image_simulated": os.environ.get("LANTERN_IMAGE_SIMULATED") == "1",
        "budget_s": sizes.budget_s, "caps_s": sizes.caps,
        "notes": {
            "ceilings": "matmul: n³ product, 2·n³ FLOP each, mean of the timed reps after warm-up (CUDA "
                        "events on a GPU); fp32 without TF32. copy: bytes read plus bytes written.",
            "mfu": "model FLOPs/s over the matmul rate measured in this run, in the dtype the path computes in "
                   "(bf16 where autocast is on, else fp32)",
            "classifier": "ClassifierActor.__call__ per rows_per_call pairs (tokenise, sort, pad, forward, "
                          "with_scores); forward MFU: 2·linear weights·tokens + 4·L²·d per layer, over the time "
                          "inside forward; naive: one pair per forward, fp32",
            "train": "one optimizer step of collate_lm + DecoderForKD + explainer_loss (SFT + TVD, sparse "
                     "top-k) + backward + AdamW; tokens/s counts every token; mfu_6n = 6·N·tokens/s (N all "
                     "parameters); mfu_model counts the LM head at output positions only and causal attention",
            "generate": "greedy, every prompt the same length, exactly new_tokens each; output tokens/s",
            "weights": "random unless stated: throughput does not depend on weight values",
        },
    })
    log(f"{run.results['mode']} on {run.results['device']}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}; results to {run.out_path}")
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    for name, fn in SECTIONS.items():
        if name != "ceilings" and name not in only:
            continue
        if name != "ceilings" and run.left() <= 0:
            run.results[name] = {"skipped": "the run's budget is spent"}
            continue
        t0 = time.perf_counter()
        try:
            run.results[name] = fn(run)
            run.results[name]["section_s"] = round(time.perf_counter() - t0, 1)
        except Exception as e:  # noqa: BLE001 - one failed section must not lose the others
            if name == "ceilings":
                raise
            run.errors.append(f"{name}: {type(e).__name__}: {e}")
            run.results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            traceback.print_exc()
            free(device)
        run.save()
    run.save()
    print(table(run.results), flush=True)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
