"""Encoder classifier distillation: data-level + logit-level KD on Ray Train.

    lantern-batch distill classifier --config configs/demo_distill_classifier.yaml

Examples are teacher-labelled pairs (soft labels p_high/p_medium/p_low; hard label = the
teacher's fit_label) plus D_seed (one-hot, weight ``data.seed_weight``). The input text is
:func:`lantern_batch.prompts.classifier_text` — the same compression precompute uses. The loss is
``alpha · T² · KL(p_t^T ‖ p_s^T) + (1 − alpha) · CE`` (:func:`~lantern_batch.distill.losses.classifier_loss`),
or with ``kd.teacher_model`` the soft targets come from an exported classifier run online.

After training (driver): predictions on the held-out split → accuracy, macro-F1, confusion,
ECE, NLL against the teacher's labels (and separately against seed labels), a ranking check
(AUC of p_high − p_low between held-out High and Low pairs), a softmax temperature fitted on
the held-out split, and the export (:meth:`lantern_batch.classifier.FitClassifier.save`) with
``metrics.json`` and the resolved config next to ``lantern_batch.json``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from lantern_batch.distill.config import ClassifierConfig
from lantern_batch.logs import event, get_logger
from lantern_batch.schema import FIT_LABELS

log = get_logger(__name__)

EXAMPLE_SCHEMA = pa.schema([
    pa.field("member_id", pa.string()),
    pa.field("job_id", pa.string()),
    pa.field("text", pa.string()),
    pa.field("label", pa.int8()),
    pa.field("p_high", pa.float32()),
    pa.field("p_medium", pa.float32()),
    pa.field("p_low", pa.float32()),
    pa.field("weight", pa.float32()),
    pa.field("source", pa.string()),
    pa.field("heldout", pa.bool_()),
])
EXAMPLE_COLUMNS = tuple(EXAMPLE_SCHEMA.names)


def classifier_examples(table: pa.Table, text_max_chars: int) -> pa.Table:
    """Joined rows (label rows + ``member``/``job`` structs + ``query``) → classifier examples."""
    from lantern_batch.prompts import classifier_text

    members = table.column("member").to_pylist()
    jobs = table.column("job").to_pylist()
    queries = table.column("query").to_pylist() if "query" in table.column_names else [None] * table.num_rows
    texts = [classifier_text(m, j, q, max_chars=text_max_chars) for m, j, q in zip(members, jobs, queries, strict=True)]
    labels = [FIT_LABELS.index(x) for x in table.column("fit_label").to_pylist()]
    return pa.table({
        "member_id": table.column("member_id"),
        "job_id": table.column("job_id"),
        "text": pa.array(texts, pa.string()),
        "label": pa.array(labels, pa.int8()),
        "p_high": table.column("p_high"),
        "p_medium": table.column("p_medium"),
        "p_low": table.column("p_low"),
        "weight": table.column("weight"),
        "source": table.column("source"),
        "heldout": table.column("heldout"),
    })


class ClassifierExampleBuilder:
    """Builder for :func:`lantern_batch.distill.data.prepare_examples` (no model needed)."""

    def __init__(self, text_max_chars: int = 900):
        self.text_max_chars = text_max_chars

    def __call__(self, table: pa.Table) -> pa.Table:
        return classifier_examples(table, self.text_max_chars)


def collate(batch: dict[str, np.ndarray], tokenizer: Any, max_length: int) -> dict[str, Any]:
    """A numpy batch of examples → tensors (dynamic padding to the batch's longest text)."""
    import torch

    enc = tokenizer([str(t) for t in batch["text"]], truncation=True, max_length=max_length,
                    padding=True, return_tensors="pt")
    probs = np.stack([batch["p_high"], batch["p_medium"], batch["p_low"]], axis=1).astype(np.float32)
    return {
        "input_ids": enc["input_ids"],  # [batch, seq]
        "attention_mask": enc["attention_mask"],  # [batch, seq]
        "labels": torch.tensor(np.array(batch["label"], dtype=np.int64)),  # [batch]
        "teacher_probs": torch.as_tensor(probs),  # [batch, 3]
        "weight": torch.tensor(np.array(batch["weight"], dtype=np.float32)),  # [batch]
    }


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop of the classifier."""
    import ray.train
    import torch
    from transformers import AutoTokenizer

    from lantern_batch.classifier import (
        FitClassifier,
        autocast_context,
        load_classifier,
        resolve_model_dir,
    )
    from lantern_batch.distill.losses import classifier_loss
    from lantern_batch.distill.trainer import StepLoop, build_engine, worker_setup

    cfg = ClassifierConfig.model_validate(config["cfg"])
    plan = config["plan"]
    ctx = worker_setup(cfg.train)
    encoder_dir = resolve_model_dir(cfg.model.encoder)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = FitClassifier.from_encoder(encoder_dir, pooling=cfg.model.pooling, dropout=cfg.model.dropout)
    model.to(ctx.device)
    teacher = None
    if cfg.kd.teacher_model:
        teacher, teacher_tok, teacher_meta = load_classifier(resolve_model_dir(cfg.kd.teacher_model))
        teacher.to(ctx.device)
    engine = build_engine(model, cfg.train, plan["total_steps"], ctx)
    loop = StepLoop.resumed(engine=engine, train=cfg.train, plan=plan, ctx=ctx, config=config, what="classifier")
    for batch in loop.shard_batches(ray.train.get_dataset_shard("train"), "numpy", min_shuffle_buffer=256):
        b = collate(batch, tokenizer, cfg.model.max_length)
        b = {k: v.to(ctx.device) for k, v in b.items()}
        targets = b["teacher_probs"]
        if teacher is not None:
            with torch.no_grad(), autocast_context(ctx.device, cfg.train.bf16):
                targets = torch.softmax(teacher(b["input_ids"], b["attention_mask"]).float(), dim=-1)
        with autocast_context(ctx.device, cfg.train.bf16):
            logits = engine.module(b["input_ids"], b["attention_mask"])  # [batch, 3]
        loss, parts = classifier_loss(logits.float(), b["labels"], targets, alpha=cfg.kd.alpha,
                                      temperature=cfg.kd.temperature, weight=b["weight"])
        engine.backward(loss, cfg.train.grad_accum)
        loop.after_backward(len(b["labels"]), {"total": float(loss.detach()), **parts})
    loop.finish()
    if ctx.rank == 0:
        event(log, "classifier.train_throughput", samples_per_s=round(loop.throughput(), 2))


# ---------------------------------------------------------------------------------------------
# Driver: evaluation, calibration, export


def ranking_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """P(score of a random High pair > score of a random Low pair) (ties count half)."""
    high = scores[labels == FIT_LABELS.index("High")]
    low = scores[labels == FIT_LABELS.index("Low")]
    if len(high) == 0 or len(low) == 0:
        return None
    diff = high[:, None] - low[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def evaluate_heldout(probs: np.ndarray, table: pa.Table, temperature: float = 1.0) -> dict[str, Any]:
    """Metrics on held-out examples, against teacher labels and (separately) seed labels
    (:func:`lantern_batch.metrics.classification_metrics`: the report's numbers for the same
    probabilities and labels; None scores when there are no held-out examples)."""
    from lantern_batch.metrics import classification_metrics, softmax

    labels = np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
    sources = np.asarray(table.column("source").to_pylist(), dtype=object)
    if temperature != 1.0:
        probs = softmax(np.log(np.clip(probs, 1e-12, 1.0)), temperature)
    out: dict[str, Any] = {}
    teacher_rows = sources != "seed"
    seed_rows = sources == "seed"
    main = teacher_rows if teacher_rows.any() else seed_rows
    out.update(classification_metrics(probs[main], labels[main]))
    out["against"] = "teacher" if teacher_rows.any() else "seed"
    if seed_rows.any() and teacher_rows.any():
        out["seed"] = classification_metrics(probs[seed_rows], labels[seed_rows])
    out["ranking_auc_high_vs_low"] = ranking_auc(probs[:, 0] - probs[:, 2], labels)
    return out


def calibration_rows(heldout: pa.Table, calibrate_on: str) -> tuple[np.ndarray, str]:
    """Mask of the held-out rows the temperature is fitted on (``ClassifierConfig.calibrate_on``)
    and which they are (``seed`` or ``all``)."""
    from lantern_batch.distill.config import MIN_CALIBRATION_ROWS

    seed = np.asarray(heldout.column("source").to_pylist(), dtype=object) == "seed"
    if calibrate_on == "seed" and seed.sum() >= MIN_CALIBRATION_ROWS:
        return seed, "seed"
    return np.ones(heldout.num_rows, dtype=bool), "all"


def finalize(cfg: ClassifierConfig, checkpoint: Any, prepared: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Load the final weights, evaluate and calibrate on the held-out split, export to ``cfg.out``
    (runs in :func:`~lantern_batch.distill.trainer.on_eval_worker`)."""
    import torch
    from transformers import AutoTokenizer

    from lantern_batch.classifier import FitClassifier, predict_proba, resolve_model_dir
    from lantern_batch.distill.data import read_examples
    from lantern_batch.distill.export import export_model
    from lantern_batch.distill.trainer import MODEL_FILE, eval_device, read_trainer_state
    from lantern_batch.metrics import fit_temperature
    from lantern_batch.prompts import CLASSIFIER_TEXT_VERSION

    device = eval_device(cfg.train.scaling)
    encoder_dir = resolve_model_dir(cfg.model.encoder)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = FitClassifier.from_encoder(encoder_dir, pooling=cfg.model.pooling, dropout=0.0)
    with checkpoint.as_directory() as d:
        model.load_state_dict(torch.load(os.path.join(d, MODEL_FILE), map_location="cpu", weights_only=True))
        train_info = {**plan, **read_trainer_state(d), "workers": cfg.train.scaling.num_workers}
    model.to(device).eval()
    heldout = read_examples(prepared.examples, heldout=True, columns=list(EXAMPLE_COLUMNS))
    texts = heldout.column("text").to_pylist()
    probs = predict_proba(model, tokenizer, texts, max_length=cfg.model.max_length, batch_size=64)
    metrics: dict[str, Any] = {"uncalibrated": evaluate_heldout(probs, heldout)}
    temperature = 1.0
    rows, fitted_on = calibration_rows(heldout, cfg.calibrate_on)
    if cfg.calibrate and rows.sum() >= 10:
        labels = np.asarray(heldout.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
        temperature = fit_temperature(np.log(np.clip(probs[rows], 1e-12, 1.0)), labels[rows])
    metrics["calibrated_on"] = {"rows": int(rows.sum()), "labels": fitted_on}
    calibrated = evaluate_heldout(probs, heldout, temperature)
    metrics.update({k: calibrated[k] for k in ("n", "accuracy", "macro_f1", "per_class", "ece", "nll", "confusion",
                                              "labels", "against", "ranking_auc_high_vs_low")})
    if "seed" in calibrated:
        metrics["seed"] = calibrated["seed"]
    metrics["calibration_temperature"] = temperature
    metrics["data"] = prepared.to_json()
    metrics["train"] = train_info
    def write_model(directory: str) -> str:
        meta = model.save(directory, {
            "max_length": cfg.model.max_length,
            "text_max_chars": cfg.model.text_max_chars,
            "text_version": CLASSIFIER_TEXT_VERSION,
            "calibration_temperature": temperature,
            "training_data_fingerprint": prepared.fingerprint,
            "encoder": cfg.model.encoder,
        }, tokenizer=tokenizer)
        return meta["version"]

    export_model(cfg.out, cfg, metrics, write_model)
    scores = {k: (round(metrics[k], 4) if metrics[k] is not None else None) for k in ("accuracy", "macro_f1", "ece")}
    event(log, "classifier.exported", out=cfg.out, version=metrics["version"], heldout=metrics["n"],
          **scores, temperature=round(temperature, 3))
    return metrics


def run(cfg: ClassifierConfig) -> int:
    """The ``distill classifier`` job: prepare → train (Ray Train) → evaluate → export."""
    from lantern_batch.config import write_resolved_config
    from lantern_batch.distill.data import check_sources, prepare_examples, train_dataset
    from lantern_batch.distill.trainer import fit, on_eval_worker, require_heldout, steps_plan
    from lantern_batch.prompts import CLASSIFIER_TEXT_VERSION
    from lantern_batch.runtime import init_ray

    # Every input's footers first: bad input fails (exit 2) before Ray starts.
    checked = check_sources(task="classifier", inputs=cfg.inputs, data=cfg.data)
    init_ray(cfg.ray)
    work = cfg.resolved_work_dir()
    write_resolved_config(cfg, work)
    prepared = prepare_examples(
        task="classifier", inputs=cfg.inputs, data=cfg.data, work_dir=work,
        builder=ClassifierExampleBuilder, builder_kwargs={"text_max_chars": cfg.model.text_max_chars},
        schema=EXAMPLE_SCHEMA,
        hash_fields=("member_id", "job_id", "label", "p_high", "p_medium", "p_low", "weight", "text"),
        settings_for_fingerprint={"text_max_chars": cfg.model.text_max_chars, "text_version": CLASSIFIER_TEXT_VERSION},
        checked=checked,
    )
    plan = steps_plan(prepared.num_train, cfg.train, cfg.train.scaling.num_workers)
    event(log, "classifier.plan", **plan)
    result = fit(train_loop=train_loop, loop_config={"cfg": cfg.model_dump(mode="json"), "plan": plan},
                 train_dataset=train_dataset(prepared), train=cfg.train,
                 run_name=cfg.training_run_name("classifier", prepared.fingerprint),
                 data_fingerprint=prepared.fingerprint)
    metrics = on_eval_worker(finalize, cfg.train.scaling, cfg, result.checkpoint, prepared, plan)
    require_heldout("classifier", metrics, "accuracy", cfg.min_accuracy)
    return 0

