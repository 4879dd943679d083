"""The one training path for decoders: the explainer and teacher SFT share it.

A task differs from the other in three places only, which its :class:`DecoderTask` names:
how the trainable model is built, whether token-level KD applies (the explainer's ``kd``
settings; teacher SFT has none) and whether a fit-label cross-entropy term is added (teacher
SFT's ``train.label_loss_weight``). Everything else — the Ray Train wiring, resume, the
micro-batch loop, the loss on output tokens, evaluation on an evaluation worker and the
export — is here or in :mod:`lantern_batch.distill.trainer` / :mod:`lantern_batch.distill.export`.

    train_explainer.run ─┐                        ┌─ decoder_train_loop (Ray Train workers)
                         ├─ train_decoder(TASK) ──┤
    teacher_sft.run ─────┘                        └─ TASK.finalize (evaluation worker)

The task modules import this one; this one imports neither.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lantern_batch.logs import event, get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class DecoderTask:
    """What one decoder task brings to the shared loop (module-level functions: they travel to
    the Ray Train workers by reference)."""

    kind: str
    """Event prefix and run-name part: ``explainer`` | ``teacher_sft``."""
    config_type: type
    """The task's config model (the loop receives it as JSON and validates it back)."""
    build: Callable[[Any], tuple[Any, bool]]
    """``cfg → (DecoderForKD wrapper, only_trainable)``: the model as trained (LoRA or not)."""
    finalize: Callable[[Any, Any, Any, dict[str, Any]], dict[str, Any]]
    """``(cfg, checkpoint, prepared, plan) → metrics``: evaluation and export."""
    kd: Callable[[Any], Any] | None = None
    """``cfg → KD settings`` when the task distils token distributions (the explainer)."""
    label_prefix_len: Callable[[Any, Any], int | None] | None = None
    """``(cfg, tokenizer) → offset of the fit-label token`` when a label CE term is trained."""
    label_rows: Callable[[Any, int], Any] | None = None
    """``(labels [b, t], prefix_len) → flat indices of the fit-label token rows``."""


def heldout_sample(examples_dir: str, n: int) -> pa.Table:
    """The first ``n`` held-out examples by (member_id, job_id): the same pairs every run."""
    from lantern_batch.distill.data import read_examples

    table = read_examples(examples_dir, heldout=True)
    table = table.sort_by([("member_id", "ascending"), ("job_id", "ascending")])
    return table.slice(0, n)


def train_decoder(task: DecoderTask, cfg: Any, prepared: Any, source: str) -> dict[str, Any]:
    """Ray Train :func:`decoder_train_loop` on ``prepared``'s training split, then
    ``task.finalize`` (evaluation and export) on an evaluation worker; returns its metrics."""
    from transformers import AutoTokenizer

    from lantern_batch.distill.data import train_dataset
    from lantern_batch.distill.decoder import pad_id
    from lantern_batch.distill.trainer import fit, on_eval_worker, steps_plan

    plan = steps_plan(prepared.num_train, cfg.train, cfg.train.scaling.num_workers)
    event(log, f"{task.kind}.plan", **plan)
    tok = AutoTokenizer.from_pretrained(source)
    loop_config: dict[str, Any] = {"cfg": cfg.model_dump(mode="json"), "plan": plan, "pad_id": pad_id(tok)}
    if task.label_prefix_len is not None:
        loop_config["label_prefix_len"] = task.label_prefix_len(cfg, tok)
    result = fit(train_loop=functools.partial(decoder_train_loop, task), loop_config=loop_config,
                 train_dataset=train_dataset(prepared), train=cfg.train,
                 run_name=cfg.training_run_name(task.kind, prepared.fingerprint),
                 data_fingerprint=prepared.fingerprint)
    return on_eval_worker(task.finalize, cfg.train.scaling, cfg, result.checkpoint, prepared, plan)


def decoder_train_loop(task: DecoderTask, config: dict[str, Any]) -> None:
    """Ray Train worker loop: CE (+ KD) on output tokens (+ the label term), resumable."""
    import ray.train
    import torch

    from lantern_batch.classifier import autocast_context, resolve_model_dir
    from lantern_batch.distill.decoder import collate_lm, online_topk
    from lantern_batch.distill.losses import explainer_loss
    from lantern_batch.distill.trainer import StepLoop, build_engine, worker_setup

    cfg: Any = task.config_type.model_validate(config["cfg"])
    wrapper, only_trainable = task.build(cfg)
    kd = task.kd(cfg) if task.kd is not None else None
    label_prefix_len = config.get("label_prefix_len")
    plan = config["plan"]
    pad = int(config["pad_id"])
    ctx = worker_setup(cfg.train)
    engine = build_engine(wrapper, cfg.train, plan["total_steps"], ctx, cfg.deepspeed, only_trainable=only_trainable)
    teacher = None
    if kd is not None and kd.teacher_model and kd.lambda_kd > 0:
        from transformers import AutoModelForCausalLM

        teacher = AutoModelForCausalLM.from_pretrained(str(resolve_model_dir(kd.teacher_model)), dtype=torch.float32)
        teacher.to(ctx.device).eval()
    loop = StepLoop.resumed(engine=engine, train=cfg.train, plan=plan, ctx=ctx, config=config, what=task.kind)
    columns = ["prompt_ids", "target_ids"] + (["topk_ids", "topk_logprobs"] if kd is not None else [])
    for table in loop.shard_batches(ray.train.get_dataset_shard("train"), "pyarrow", min_shuffle_buffer=64):
        rows = {c: table.column(c).to_pylist() for c in columns if c in table.column_names}
        b = collate_lm(rows, pad)
        b = {k: v.to(ctx.device) for k, v in b.items()}
        if teacher is not None:
            with autocast_context(ctx.device, cfg.train.bf16):
                b.update(online_topk(teacher, b, kd.topk))
        with autocast_context(ctx.device, cfg.train.bf16):
            logits, sel = engine.module(b["input_ids"], b["attention_mask"], b["labels"])  # [n, vocab]
        labels = b["labels"][sel]  # [n]
        if kd is not None and "topk_ids" in b and kd.lambda_kd > 0:
            loss, parts = explainer_loss(logits, labels, b["topk_ids"][sel], b["topk_logprobs"][sel],
                                         b["kd_mask"][sel], lambda_sft=kd.lambda_sft, lambda_kd=kd.lambda_kd,
                                         divergence=kd.divergence, rest=kd.rest)
        else:
            lam = kd.lambda_sft if kd is not None else 1.0
            loss, parts = explainer_loss(logits, labels, None, None, None, lambda_sft=lam, lambda_kd=0.0)
        if label_prefix_len is not None and task.label_rows is not None:
            label_rows = task.label_rows(b["labels"], label_prefix_len)  # [m]
            label_ce = torch.nn.functional.cross_entropy(logits[label_rows].float(), labels[label_rows])
            loss = loss + cfg.train.label_loss_weight * label_ce
            parts["label_ce"] = float(label_ce.detach())
        engine.backward(loss, cfg.train.grad_accum)
        loop.after_backward(int(b["input_ids"].shape[0]), {"total": float(loss.detach()), **parts})
    loop.finish()
    if ctx.rank == 0:
        event(log, f"{task.kind}.train_throughput", samples_per_s=round(loop.throughput(), 3))
