"""Decoder explainer distillation: SFT + token-level KD on Ray Train (DDP or DeepSpeed ZeRO).

    lantern-batch distill explainer --config configs/demo_distill_explainer.yaml

The student (default: every third layer of SmolLM2-135M, initialised from its weights; optional
LoRA) learns to write the teacher's explanation given a label-conditioned prompt
(:func:`lantern_batch.prompts.explainer_messages`: the prompt states the fit label, the output
explains it). Loss, on output tokens only:
``lambda_sft · CE + lambda_kd · D(teacher top-k ‖ student)`` with D one of forward KL, reverse
KL, JS or TVD over the stored sparse top-k plus a rest bucket
(:func:`lantern_batch.distill.losses.explainer_loss`). The stored top-k is used where the
table's ``explanation_token_ids`` decode to the explanation with the student's tokenizer;
other rows train with SFT only (counted as ``kd_unaligned``). With ``kd.teacher_model`` a
teacher model supplies the top-k online instead (chains).

After training (driver): greedy generations on held-out pairs → ROUGE-1/2/L against the
teacher's explanations, for the trained student, the untrained student (same architecture
and initialisation) and the unpruned source model; teacher-forced per-token NLL and top-1
accuracy of the held-out explanations for the trained and untrained student; export of the merged model (LoRA folded in)
as an HF directory vLLM loads, with ``metrics.json`` and ``lantern_batch.json``.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch.distill.config import ExplainerConfig
from lantern_batch.distill.decoder_train import DecoderTask, heldout_sample, train_decoder
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)

EXAMPLE_SCHEMA = pa.schema([
    pa.field("member_id", pa.string()),
    pa.field("job_id", pa.string()),
    pa.field("fit_label", pa.string()),
    pa.field("explanation", pa.string()),
    pa.field("prompt_ids", pa.list_(pa.int32())),
    pa.field("target_ids", pa.list_(pa.int32())),
    pa.field("topk_ids", pa.list_(pa.list_(pa.int32()))),
    pa.field("topk_logprobs", pa.list_(pa.list_(pa.float32()))),
    pa.field("kd_aligned", pa.bool_()),
    pa.field("source", pa.string()),
    pa.field("heldout", pa.bool_()),
])


def aligned_token_ids(tokenizer: Any, explanation: str, token_ids: list[int] | None) -> bool:
    """True when the stored explanation token ids are the student tokenizer's tokens of the
    explanation (same vocabulary), so the stored top-k lines up with the student's targets."""
    if not token_ids:
        return False
    if max(token_ids) >= len(tokenizer):
        return False
    return tokenizer.decode(token_ids, skip_special_tokens=False).strip() == (explanation or "").strip()


class ExplainerExampleBuilder:
    """``map_batches`` callable class: joined rows → token-id examples (loads the tokenizer once)."""

    def __init__(self, tokenizer_dir: str, prompt: dict[str, int], prompt_version: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.prompt = prompt
        self.version = prompt_version

    def __call__(self, table: pa.Table) -> pa.Table:
        from lantern_batch.distill.decoder import build_lm_example, chat_prompt_ids, eos_id
        from lantern_batch.prompts import explainer_messages

        tok = self.tokenizer
        eos = eos_id(tok)
        cols = {c: table.column(c).to_pylist() for c in (
            "member_id", "job_id", "fit_label", "explanation", "member", "job", "query",
            "explanation_token_ids", "topk_ids", "topk_logprobs", "source", "heldout")}
        out: dict[str, list] = {f.name: [] for f in EXAMPLE_SCHEMA}
        for i in range(table.num_rows):
            msgs = explainer_messages(cols["member"][i], cols["job"][i], cols["query"][i], cols["fit_label"][i],
                                      member_tokens=self.prompt["member_tokens"], job_tokens=self.prompt["job_tokens"],
                                      version=self.version)
            prompt_ids = chat_prompt_ids(tok, msgs)
            text = cols["explanation"][i]
            stored = cols["explanation_token_ids"][i]
            aligned = aligned_token_ids(tok, text, stored) and cols["topk_ids"][i] is not None
            target = list(stored) if aligned else tok(text, add_special_tokens=False)["input_ids"]
            ex = build_lm_example(prompt_ids, target, eos, self.prompt["max_length"], self.prompt["max_target_tokens"],
                                  cols["topk_ids"][i] if aligned else None,
                                  cols["topk_logprobs"][i] if aligned else None)
            for key in ("member_id", "job_id", "fit_label", "explanation", "source", "heldout"):
                out[key].append(cols[key][i])
            out["prompt_ids"].append(ex["prompt_ids"])
            out["target_ids"].append(ex["target_ids"])
            out["topk_ids"].append(ex["topk_ids"])
            out["topk_logprobs"].append(ex["topk_logprobs"])
            out["kd_aligned"].append(bool(aligned))
        return pa.Table.from_pydict(out, schema=EXAMPLE_SCHEMA)


def build_student(cfg: ExplainerConfig, source_dir: str):
    """The student as trained: pruned (and LoRA-wrapped when enabled) inside :class:`DecoderForKD`."""
    from lantern_batch.distill.decoder import DecoderForKD, apply_lora, load_student

    student, keep, n_layers = load_student(source_dir, cfg.student.keep_every, cfg.student.keep_layers)
    if cfg.student.lora.enabled:
        student = apply_lora(student, cfg.student.lora)
    return DecoderForKD(student), keep, n_layers


def _kd(cfg: ExplainerConfig) -> Any:
    return cfg.kd


def _build(cfg: ExplainerConfig) -> tuple[Any, bool]:
    from lantern_batch.classifier import resolve_model_dir

    wrapper, _, _ = build_student(cfg, str(resolve_model_dir(cfg.student.source)))
    return wrapper, cfg.student.lora.enabled


# ---------------------------------------------------------------------------------------------
# Driver: evaluation and export


def load_trained(cfg: ExplainerConfig, checkpoint_dir: str):
    """The trained student (merged, plain HF model) from a final checkpoint."""
    import torch

    from lantern_batch.classifier import resolve_model_dir
    from lantern_batch.distill.decoder import merge_lora
    from lantern_batch.distill.trainer import MODEL_FILE

    wrapper, keep, n = build_student(cfg, str(resolve_model_dir(cfg.student.source)))
    state = torch.load(os.path.join(checkpoint_dir, MODEL_FILE), map_location="cpu", weights_only=True)
    missing, unexpected = wrapper.load_state_dict(state, strict=not cfg.student.lora.enabled)
    if unexpected:
        raise RuntimeError(f"checkpoint has unexpected keys: {unexpected[:3]}")
    model = merge_lora(wrapper.lm).float().eval()
    return model, keep, n


def rouge_of(model: Any, tokenizer: Any, sample: pa.Table, cfg: Any) -> tuple[dict[str, float], list[str]]:
    from lantern_batch.distill.decoder import generate
    from lantern_batch.metrics import rouge_scores

    prompts = sample.column("prompt_ids").to_pylist()
    preds = generate(model, tokenizer, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size, bf16=cfg.train.bf16)
    return rouge_scores(preds, sample.column("explanation").to_pylist()), preds


def teacher_forced(model: Any, tokenizer: Any, sample: pa.Table, cfg: Any) -> dict[str, float]:
    from lantern_batch.distill.decoder import pad_id, teacher_forced_metrics

    return teacher_forced_metrics(model, sample.column("prompt_ids").to_pylist(), sample.column("target_ids").to_pylist(),
                                  pad_id(tokenizer), cfg.eval.batch_size, bf16=cfg.train.bf16)


def finalize(cfg: ExplainerConfig, checkpoint: Any, prepared: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the trained and untrained students and the source model; export the student
    (runs in :func:`~lantern_batch.distill.trainer.on_eval_worker`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lantern_batch.classifier import resolve_model_dir
    from lantern_batch.distill.decoder import count_parameters, load_student
    from lantern_batch.distill.export import export_model
    from lantern_batch.distill.trainer import eval_device, read_trainer_state

    device = eval_device(cfg.train.scaling)
    source = str(resolve_model_dir(cfg.student.source))
    tokenizer = AutoTokenizer.from_pretrained(source)
    with checkpoint.as_directory() as d:
        model, keep, n_layers = load_trained(cfg, d)
        train_info = {**plan, **read_trainer_state(d), "workers": cfg.train.scaling.num_workers,
                      "deepspeed": cfg.deepspeed.enabled, "zero_stage": cfg.deepspeed.zero_stage}
    model.to(device)
    sample = heldout_sample(prepared.examples, cfg.eval.num_pairs)
    metrics: dict[str, Any] = {"n": sample.num_rows}
    if sample.num_rows:
        scores, _ = rouge_of(model, tokenizer, sample, cfg)
        metrics.update(scores)
        models = [("", model)]
        if cfg.eval.compare_untrained:
            models.append(("base_", load_student(source, cfg.student.keep_every, cfg.student.keep_layers)[0]
                           .to(device).eval()))
            base_scores, _ = rouge_of(models[-1][1], tokenizer, sample, cfg)
            metrics.update({f"base_{k}": v for k, v in base_scores.items()})
        if cfg.eval.loss_pairs:
            loss_sample = heldout_sample(prepared.examples, cfg.eval.loss_pairs)
            for prefix, m in models:
                tf = teacher_forced(m, tokenizer, loss_sample, cfg)
                metrics.update({f"{prefix}heldout_nll": tf["nll"], f"{prefix}heldout_token_accuracy": tf["token_accuracy"]})
            metrics["heldout_loss_pairs"] = loss_sample.num_rows
            metrics["heldout_loss_tokens"] = tf["tokens"]
        del models
        if len(keep) != n_layers:
            src = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device).eval()
            src_scores, _ = rouge_of(src, tokenizer, sample, cfg)
            metrics.update({f"source_{k}": v for k, v in src_scores.items()})
            del src
    metrics.update({
        "student_layers": keep, "source_layers": n_layers, "parameters": count_parameters(model),
        "source": cfg.student.source, "lora": cfg.student.lora.enabled, "divergence": cfg.kd.divergence,
        "rest": cfg.kd.rest, "lambda_sft": cfg.kd.lambda_sft, "lambda_kd": cfg.kd.lambda_kd,
        "teacher_model": cfg.kd.teacher_model, "data": prepared.to_json(), "train": train_info,
    })
    meta = {"kind": "explainer", "prompt_version": cfg.prompt_version,
            "member_tokens": cfg.prompt.member_tokens, "job_tokens": cfg.prompt.job_tokens,
            "max_new_tokens": cfg.eval.max_new_tokens, "training_data_fingerprint": prepared.fingerprint,
            "source": cfg.student.source, "layers": keep}

    def write_model(directory: str) -> None:
        model.to("cpu", torch.bfloat16).save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    export_model(cfg.out, cfg, metrics, write_model, meta)
    event(log, "explainer.exported", out=cfg.out, params_m=round(metrics["parameters"] / 1e6, 1),
          **{k: None if metrics.get(k) is None else round(metrics[k], 4)
             for k in ("rougeL", "base_rougeL", "source_rougeL")})
    return metrics


def run(cfg: ExplainerConfig) -> int:
    """The ``distill explainer`` job: prepare → train (Ray Train) → evaluate → export."""
    from lantern_batch.classifier import resolve_model_dir
    from lantern_batch.config import write_resolved_config
    from lantern_batch.distill.data import check_sources, prepare_examples
    from lantern_batch.runtime import init_ray

    # Every input's footers first: bad input fails (exit 2) before Ray starts or a model loads.
    checked = check_sources(task="explainer", inputs=cfg.inputs, data=cfg.data)
    init_ray(cfg.ray)
    work = cfg.resolved_work_dir()
    write_resolved_config(cfg, work)
    source = str(resolve_model_dir(cfg.student.source))
    prompt = cfg.prompt.model_dump()
    prepared = prepare_examples(
        task="explainer", inputs=cfg.inputs, data=cfg.data, work_dir=work,
        builder=ExplainerExampleBuilder, builder_kwargs={"tokenizer_dir": source, "prompt": prompt,
                                                       "prompt_version": cfg.prompt_version},
        schema=EXAMPLE_SCHEMA,
        hash_fields=("member_id", "job_id", "fit_label", "explanation", "kd_aligned"),
        settings_for_fingerprint={"prompt": prompt, "prompt_version": cfg.prompt_version,
                                  "source": cfg.student.source},
        checked=checked,
    )
    aligned = _count_aligned(prepared.examples)
    prepared.counts["kd_aligned"] = aligned
    prepared.counts["kd_unaligned"] = prepared.num_train + prepared.num_heldout - aligned
    if cfg.kd.lambda_kd > 0 and not cfg.kd.teacher_model and aligned == 0:
        event(log, "explainer.kd_unavailable", reason="no rows with top-k aligned to the student tokenizer")
    train_decoder(TASK, cfg, prepared, source)
    return 0


def _count_aligned(examples_dir: str) -> int:
    from lantern_batch.distill.data import read_examples

    col = read_examples(examples_dir, columns=["kd_aligned"]).column("kd_aligned")
    return int(pc.sum(col.cast(pa.int64())).as_py() or 0)


TASK = DecoderTask(kind="explainer", config_type=ExplainerConfig, build=_build, finalize=finalize, kd=_kd)
