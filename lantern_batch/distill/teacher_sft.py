"""Teacher SFT: fine-tune the in-house teacher T2 on D_seed (LANTERN's in-house teacher step).

    lantern-batch distill teacher-sft --config configs/demo_distill_teacher_sft.yaml

Each seed pair becomes the teacher prompt (:func:`lantern_batch.prompts.teacher_messages`, the
same prompt synthesis sends, at ``prompt_version``) and its target, the full structured output
the synthesis schema asks for (:func:`lantern_batch.prompts.output_json_schema`), as compact
JSON the way synthesis decodes it::

    {"fit_label":"Medium","dimension_scores":{"skills":3,...},"explanation":"..."}

trained data-level only (token cross-entropy on the output tokens) with the same Ray Train
loop as the explainer (DDP or DeepSpeed ZeRO; optional LoRA merged on export).

Label agreement is measured before and after on held-out seed pairs the way synthesis reads
a label: after the prompt and the output's opening ``{"fit_label":"``, the next-token
probabilities of the three labels' first tokens, renormalised (one forward pass per pair).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pyarrow as pa

from lantern_batch.distill.config import TeacherSFTConfig
from lantern_batch.distill.decoder_train import DecoderTask, heldout_sample, train_decoder
from lantern_batch.logs import event, get_logger
from lantern_batch.schema import FIT_LABELS

log = get_logger(__name__)

LABEL_PREFIX = '{"fit_label":"'
"""How the output opens: compact JSON, as synthesis decodes it (``disable_any_whitespace``)."""

EXAMPLE_SCHEMA = pa.schema([
    pa.field("member_id", pa.string()),
    pa.field("job_id", pa.string()),
    pa.field("fit_label", pa.string()),
    pa.field("label", pa.int8()),
    pa.field("target_text", pa.string()),
    pa.field("prompt_ids", pa.list_(pa.int32())),
    pa.field("target_ids", pa.list_(pa.int32())),
    pa.field("source", pa.string()),
    pa.field("heldout", pa.bool_()),
])


def structured_output(fit_label: str, dimension_scores_json: str | None, explanation: str) -> str:
    """The teacher's target output, keys in the schema's order (fit_label first)."""
    from lantern_batch.distill.data import dimension_scores_json as to_ints

    return json.dumps({"fit_label": fit_label, "dimension_scores": to_ints(dimension_scores_json),
                       "explanation": explanation.strip()}, separators=(",", ":"))


class TeacherSFTExampleBuilder:
    """``map_batches`` callable class: joined seed rows → teacher prompt + JSON target ids."""

    def __init__(self, tokenizer_dir: str, prompt: dict[str, int], prompt_version: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.prompt = prompt
        self.version = prompt_version

    def __call__(self, table: pa.Table) -> pa.Table:
        from lantern_batch.distill.decoder import build_lm_example, chat_prompt_ids, eos_id
        from lantern_batch.prompts import teacher_messages

        tok = self.tokenizer
        eos = eos_id(tok)
        cols = {c: table.column(c).to_pylist() for c in (
            "member_id", "job_id", "fit_label", "dimension_scores", "explanation", "member", "job", "query",
            "source", "heldout")}
        out: dict[str, list] = {f.name: [] for f in EXAMPLE_SCHEMA}
        for i in range(table.num_rows):
            msgs = teacher_messages(cols["member"][i], cols["job"][i], cols["query"][i], self.version,
                                    member_tokens=self.prompt["member_tokens"], job_tokens=self.prompt["job_tokens"])
            target_text = structured_output(cols["fit_label"][i], cols["dimension_scores"][i], cols["explanation"][i])
            ex = build_lm_example(chat_prompt_ids(tok, msgs), tok(target_text, add_special_tokens=False)["input_ids"],
                                  eos, self.prompt["max_length"], self.prompt["max_target_tokens"])
            for key in ("member_id", "job_id", "fit_label", "source", "heldout"):
                out[key].append(cols[key][i])
            out["label"].append(FIT_LABELS.index(cols["fit_label"][i]))
            out["target_text"].append(target_text)
            out["prompt_ids"].append(ex["prompt_ids"])
            out["target_ids"].append(ex["target_ids"])
        return pa.Table.from_pydict(out, schema=EXAMPLE_SCHEMA)


def build_teacher(cfg: TeacherSFTConfig):
    """T2 as trained: the full model (LoRA-wrapped when enabled) inside DecoderForKD."""
    import torch
    from transformers import AutoModelForCausalLM

    from lantern_batch.classifier import resolve_model_dir
    from lantern_batch.distill.decoder import DecoderForKD, apply_lora

    model = AutoModelForCausalLM.from_pretrained(str(resolve_model_dir(cfg.model)), dtype=torch.float32)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    return DecoderForKD(model)


def label_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(prefix ids, first token id of each label)`` for reading the label after ``LABEL_PREFIX``.

    The labels are tokenised together with the prefix (BPE may merge the quote with the label);
    the shared prefix is what the model is given and the first differing token is each label's.
    """
    seqs = [tokenizer(LABEL_PREFIX + label, add_special_tokens=False)["input_ids"] for label in FIT_LABELS]
    common = 0
    while all(len(s) > common for s in seqs) and len({s[common] for s in seqs}) == 1:
        common += 1
    firsts = [s[common] for s in seqs]
    if len(set(firsts)) != len(firsts):
        raise ValueError("the labels' first tokens are not distinct for this tokenizer")
    return seqs[0][:common], firsts


def label_token_rows(labels: Any, prefix_len: int) -> Any:
    """Rows of :class:`~lantern_batch.distill.decoder.DecoderForKD`'s ``[n, vocab]`` logits (the
    output positions, ``labels != -100`` in row-major order) that predict each sequence's
    fit-label token: its ``prefix_len``-th output token, right after ``{"fit_label":"``.

    Args:
        labels: ``[batch, seq]`` with -100 on prompt and padding.
        prefix_len: tokens of :data:`LABEL_PREFIX` (:func:`label_token_ids`).

    Returns:
        ``[m]`` long indices, one per sequence with more than ``prefix_len`` output tokens.
    """
    import torch

    from lantern_batch.distill.decoder import IGNORE_INDEX

    counts = (labels != IGNORE_INDEX).sum(dim=1)  # [batch]
    starts = torch.cumsum(counts, 0) - counts  # [batch] first output row of each sequence
    return (starts + prefix_len)[counts > prefix_len]


def label_probabilities(model: Any, tokenizer: Any, prompts: list[list[int]], batch_size: int = 4,
                        bf16: bool = True) -> np.ndarray:
    """``[n, 3]`` label probabilities (FIT_LABELS order) read after the output's opening."""
    import torch

    from lantern_batch.classifier import autocast_context
    from lantern_batch.distill.decoder import pad_id

    prefix, firsts = label_token_ids(tokenizer)
    pad = pad_id(tokenizer)
    out = np.zeros((len(prompts), 3), dtype=np.float32)
    model.eval()
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        seqs = [list(prompts[i]) + prefix for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):  # left padding: the last position is the label position
            ids[r, width - len(s):] = torch.as_tensor(s)
            mask[r, width - len(s):] = 1
        with torch.inference_mode(), autocast_context("cpu" if not torch.cuda.is_available() else "cuda", bf16):
            device = next(model.parameters()).device
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=1).logits
        lp = torch.log_softmax(logits[:, -1].float(), dim=-1)[:, firsts]  # [b, 3]
        out[idx] = torch.softmax(lp, dim=-1).cpu().numpy()
    return out


def agreement(model: Any, tokenizer: Any, sample: pa.Table, cfg: TeacherSFTConfig) -> dict[str, Any]:
    """Label agreement (accuracy, macro-F1, confusion) with the seed labels of ``sample``."""
    from lantern_batch.metrics import classification_metrics

    probs = label_probabilities(model, tokenizer, sample.column("prompt_ids").to_pylist(),
                                batch_size=cfg.eval.batch_size, bf16=cfg.train.bf16)
    labels = np.asarray(sample.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
    m = classification_metrics(probs, labels)
    return {k: m[k] for k in ("n", "accuracy", "macro_f1", "ece", "confusion")}


def finalize(cfg: TeacherSFTConfig, checkpoint: Any, prepared: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Label agreement before and after SFT on held-out seed pairs; export the merged teacher
    (runs in :func:`~lantern_batch.distill.trainer.on_eval_worker`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lantern_batch.classifier import resolve_model_dir
    from lantern_batch.distill.decoder import merge_lora
    from lantern_batch.distill.export import export_model
    from lantern_batch.distill.trainer import MODEL_FILE, eval_device, read_trainer_state

    device = eval_device(cfg.train.scaling)
    source = str(resolve_model_dir(cfg.model))
    tokenizer = AutoTokenizer.from_pretrained(source)
    sample = heldout_sample(prepared.examples, cfg.eval.num_pairs)
    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device)
    before = agreement(base, tokenizer, sample, cfg) if sample.num_rows else {}
    del base
    event(log, "teacher_sft.before", heldout=sample.num_rows, accuracy=before.get("accuracy"))
    wrapper = build_teacher(cfg)
    with checkpoint.as_directory() as d:
        weights = torch.load(os.path.join(d, MODEL_FILE), map_location="cpu", weights_only=True)
        wrapper.load_state_dict(weights, strict=not cfg.lora.enabled)
        state = read_trainer_state(d)
    model = merge_lora(wrapper.lm).float().to(device).eval()
    after = agreement(model, tokenizer, sample, cfg) if sample.num_rows else {}
    metrics = {"label_agreement_before": before, "label_agreement_after": after,
               "heldout_pairs": sample.num_rows, "prompt_version": cfg.prompt_version,
               "data": prepared.to_json(),
               "train": {**plan, **state, "workers": cfg.train.scaling.num_workers,
                         "deepspeed": cfg.deepspeed.enabled, "lora": cfg.lora.enabled}}
    meta = {"kind": "teacher", "source": cfg.model, "prompt_version": cfg.prompt_version,
            "training_data_fingerprint": prepared.fingerprint}

    def write_model(directory: str) -> None:
        model.to("cpu", torch.bfloat16).save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    export_model(cfg.out, cfg, metrics, write_model, meta)
    event(log, "teacher_sft.exported", out=cfg.out, agreement_before=before.get("accuracy"),
          agreement_after=after.get("accuracy"))
    return metrics


def run(cfg: TeacherSFTConfig) -> int:
    """The ``distill teacher-sft`` job: prepare → SFT (Ray Train) → agreement before/after → export."""
    from lantern_batch.classifier import resolve_model_dir
    from lantern_batch.config import write_resolved_config
    from lantern_batch.distill.data import check_sources, prepare_examples
    from lantern_batch.distill.trainer import require_heldout
    from lantern_batch.runtime import init_ray

    # Every input's footers first: bad input fails (exit 2) before Ray starts or a model loads.
    checked = check_sources(task="teacher_sft", inputs=cfg.inputs, data=cfg.data)
    init_ray(cfg.ray)
    work = cfg.resolved_work_dir()
    write_resolved_config(cfg, work)
    source = str(resolve_model_dir(cfg.model))
    prompt = cfg.prompt.model_dump()
    prepared = prepare_examples(
        task="teacher_sft", inputs=cfg.inputs, data=cfg.data, work_dir=work,
        builder=TeacherSFTExampleBuilder,
        builder_kwargs={"tokenizer_dir": source, "prompt": prompt, "prompt_version": cfg.prompt_version},
        schema=EXAMPLE_SCHEMA,
        hash_fields=("member_id", "job_id", "target_text"),
        settings_for_fingerprint={"prompt": prompt, "version": cfg.prompt_version},
        checked=checked,
    )
    metrics = train_decoder(TASK, cfg, prepared, source)
    require_heldout("teacher T2 after SFT", metrics["label_agreement_after"], "macro_f1", cfg.min_macro_f1)
    return 0


def _build(cfg: TeacherSFTConfig) -> tuple[Any, bool]:
    return build_teacher(cfg), cfg.lora.enabled


def _label_prefix_len(cfg: TeacherSFTConfig, tokenizer: Any) -> int | None:
    """The label term's token offset, when ``train.label_loss_weight`` asks for the term."""
    return len(label_token_ids(tokenizer)[0]) if cfg.train.label_loss_weight > 0 else None


TASK = DecoderTask(kind="teacher_sft", config_type=TeacherSFTConfig, build=_build, finalize=finalize,
                   label_prefix_len=_label_prefix_len, label_rows=label_token_rows)
