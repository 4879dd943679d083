"""Decoder (causal LM) pieces shared by the explainer and teacher-SFT trainers.

* :func:`layer_pruned` — a student made of every n-th decoder layer of the teacher, initialised
  from the teacher's weights (DistilBERT-style): SmolLM2-135M, 30 layers → 10 layers ≈ 63M
  parameters (28M of them the tied embeddings).
* :func:`apply_lora` / :func:`merge_lora` — optional peft LoRA, merged into plain weights on
  export so vLLM loads the result as an ordinary model.
* :func:`build_lm_example` / :func:`collate_lm` — prompt + output token sequences where only
  the output positions carry labels (loss on output tokens only), with the teacher's top-k
  aligned to the output tokens.
* :class:`DecoderForKD` — runs the decoder and applies the LM head only at output positions
  (``[n_output_tokens, vocab]`` instead of ``[batch, seq, vocab]``: ~8x less memory and head
  compute for a 600-token prompt and an 80-token explanation).
* :func:`teacher_topk` — a teacher's top-k log-probabilities over given output tokens (online KD
  in chains, and building D_t top-k for tests).
* :func:`generate` — batched greedy generation for held-out evaluation.
* :func:`teacher_forced_metrics` — held-out per-token NLL and top-1 accuracy of the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

IGNORE_INDEX = -100


def chat_prompt_ids(tokenizer: Any, messages: list[dict]) -> list[int]:
    """Token ids of a chat prompt, ending with the assistant turn's header."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = out["input_ids"] if hasattr(out, "keys") else out
    return [int(i) for i in ids]


def eos_id(tokenizer: Any) -> int:
    """End-of-turn token (``<|im_end|>`` for ChatML models such as SmolLM2)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token")
    return int(tokenizer.eos_token_id)


def pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


# ---------------------------------------------------------------------------------------------
# Students


def keep_indices(num_layers: int, keep_every: int | None, keep_layers: Sequence[int] | None) -> list[int]:
    """Layer indices a pruned student keeps: explicit ``keep_layers``, or every ``keep_every``-th
    layer with the last layer always kept (it feeds the final norm and LM head)."""
    if keep_layers:
        idx = sorted(set(int(i) for i in keep_layers))
        if idx[0] < 0 or idx[-1] >= num_layers:
            raise ValueError(f"keep_layers must lie in [0, {num_layers - 1}]")
        return idx
    if not keep_every or keep_every <= 1:
        return list(range(num_layers))
    idx = list(range(0, num_layers, keep_every))
    if idx[-1] != num_layers - 1:
        idx[-1] = num_layers - 1  # same count, last layer kept: 30/3 → 0,3,…,24,29
    return idx


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers of an HF causal LM (Llama, Qwen, Mistral, GPT-NeoX…)."""
    base = getattr(model, model.base_model_prefix, model)
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


def layer_pruned(model: nn.Module, keep: Sequence[int]) -> nn.Module:
    """Keep only the decoder layers in ``keep`` (in place); fix the config and layer indices."""
    layers = decoder_layers(model)
    kept = nn.ModuleList([layers[i] for i in keep])
    base = getattr(model, model.base_model_prefix, model)
    for name in ("layers", "h", "blocks"):
        if isinstance(getattr(base, name, None), nn.ModuleList):
            setattr(base, name, kept)
            break
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx  # KV-cache slots are indexed by layer
    model.config.num_hidden_layers = len(kept)
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        model.config.layer_types = [layer_types[i] for i in keep]
    return model


def load_student(source_dir: str, keep_every: int | None = None, keep_layers: Sequence[int] | None = None,
                 dtype: torch.dtype = torch.float32) -> tuple[nn.Module, list[int], int]:
    """Load a causal LM and prune it; returns ``(model, kept layer indices, original layer count)``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source_dir, dtype=dtype)
    n = len(decoder_layers(model))
    keep = keep_indices(n, keep_every, keep_layers)
    if len(keep) != n:
        layer_pruned(model, keep)
    return model, keep, n


def apply_lora(model: nn.Module, lora: Any) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters (only the adapters train)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in lora.target_modules if t in present]
    if not targets:
        raise ValueError(f"none of the LoRA target modules {lora.target_modules} exist in the model")
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights and return the plain model."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    seen = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# ---------------------------------------------------------------------------------------------
# Examples and batches


def build_lm_example(
    prompt_ids: Sequence[int],
    target_ids: Sequence[int],
    eos: int,
    max_length: int,
    max_target_tokens: int,
    topk_ids: Sequence[Sequence[int]] | None = None,
    topk_logprobs: Sequence[Sequence[float]] | None = None,
    keep_prompt_head: int = 32,
) -> dict[str, Any]:
    """One training sequence: prompt + target (+ eos); the teacher's top-k per target token.

    The target is truncated to ``max_target_tokens`` (eos is appended only when the target was
    complete). A prompt too long for ``max_length`` loses tokens from its middle: the first
    ``keep_prompt_head`` tokens (the system turn's start) and the end (the label instruction
    and the assistant header) are kept.
    """
    target = list(target_ids)[:max_target_tokens]
    complete = len(target) == len(target_ids)
    k_ids = list(topk_ids)[: len(target)] if topk_ids is not None else None
    k_lps = list(topk_logprobs)[: len(target)] if topk_logprobs is not None else None
    if complete:
        target = target + [eos]
    room = max_length - len(target)
    prompt = list(prompt_ids)
    if len(prompt) > room:
        head = min(keep_prompt_head, room // 2)
        prompt = prompt[:head] + prompt[len(prompt) - (room - head):]
    return {"prompt_ids": prompt, "target_ids": target, "topk_ids": k_ids, "topk_logprobs": k_lps,
            "truncated_prompt": len(prompt) < len(prompt_ids), "truncated_target": not complete}


def collate_lm(rows: dict[str, Any], pad: int, k: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded tensors from a columnar batch (``prompt_ids``, ``target_ids`` and optionally
    ``topk_ids``/``topk_logprobs`` per target token).

    Returns:
        ``input_ids``/``attention_mask``/``labels`` ``[batch, seq]`` (labels = the token at
        output positions, -100 elsewhere) and, when top-k is present, ``topk_ids`` /
        ``topk_logprobs`` ``[batch, seq, k]`` aligned with ``labels`` plus ``kd_mask``
        ``[batch, seq]`` (output positions that have teacher data; eos has none).
    """
    prompts = [list(p) for p in rows["prompt_ids"]]
    targets = [list(t) for t in rows["target_ids"]]
    lengths = [len(p) + len(t) for p, t in zip(prompts, targets, strict=True)]
    batch, seq = len(prompts), max(lengths)
    input_ids = torch.full((batch, seq), pad, dtype=torch.long)
    attention = torch.zeros((batch, seq), dtype=torch.long)
    labels = torch.full((batch, seq), IGNORE_INDEX, dtype=torch.long)
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        ids = p + t
        input_ids[i, : len(ids)] = torch.as_tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, len(p): len(ids)] = torch.as_tensor(t)
    out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    topk_col = rows.get("topk_ids")
    if topk_col is None:
        return out
    if k is None:
        k = max((len(pos) for r in topk_col if r is not None for pos in r), default=0)
    if not k:
        return out
    t_ids = torch.full((batch, seq, k), -1, dtype=torch.long)
    t_lps = torch.zeros((batch, seq, k), dtype=torch.float32)
    kd_mask = torch.zeros((batch, seq), dtype=torch.bool)
    for i, (p, ids_i, lps_i) in enumerate(zip(prompts, topk_col, rows["topk_logprobs"], strict=True)):
        if ids_i is None or lps_i is None:
            continue
        for j, (pos_ids, pos_lps) in enumerate(zip(ids_i, lps_i, strict=True)):
            n = min(len(pos_ids), k)
            t_ids[i, len(p) + j, :n] = torch.as_tensor(list(pos_ids)[:n])
            t_lps[i, len(p) + j, :n] = torch.as_tensor(list(pos_lps)[:n], dtype=torch.float32)
            kd_mask[i, len(p) + j] = n > 0
    out.update(topk_ids=t_ids, topk_logprobs=t_lps, kd_mask=kd_mask)
    return out


class DecoderForKD(nn.Module):
    """Wraps a causal LM: logits only where a label is set (next-token positions).

    ``forward(input_ids, attention_mask, labels)`` returns ``(logits [n, vocab], sel [batch, seq])``
    where ``sel`` marks the label positions (``labels != -100``) and row r of ``logits``
    predicts the r-th selected label (hidden state of the previous position).
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def _hf(self) -> nn.Module:
        lm = self.lm
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        hf = self._hf()
        body = getattr(hf, hf.base_model_prefix)
        hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [b, s, h]
        sel = labels != IGNORE_INDEX  # [b, s]
        prev = torch.zeros_like(sel)
        prev[:, :-1] = sel[:, 1:]  # position t-1 predicts the token at t
        h = hidden[prev]  # [n, h]
        logits = hf.get_output_embeddings()(h)  # [n, vocab]
        return logits, sel


@torch.no_grad()
def teacher_topk(model: nn.Module, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                 k: int, pad_id: int = 0) -> tuple[list[list[list[int]]], list[list[list[float]]]]:
    """The model's top-k (ids, log-probabilities) at each target token, given the prompt and the
    preceding target tokens (teacher forcing)."""
    rows = {"prompt_ids": prompts, "target_ids": targets}
    b = collate_lm(rows, pad_id)
    wrapper = DecoderForKD(model)
    logits, sel = wrapper(b["input_ids"], b["attention_mask"], b["labels"])
    lps = torch.log_softmax(logits.float(), dim=-1)  # [n, vocab]
    vals, ids = lps.topk(k, dim=-1)  # [n, k]
    out_ids: list[list[list[int]]] = []
    out_lps: list[list[list[float]]] = []
    r = 0
    for t in targets:
        out_ids.append(ids[r: r + len(t)].tolist())
        out_lps.append(vals[r: r + len(t)].tolist())
        r += len(t)
    return out_ids, out_lps


def online_topk(teacher: nn.Module, batch: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Top-k of a teacher at a batch's label positions, in :func:`collate_lm`'s layout."""
    with torch.no_grad():
        logits, sel = DecoderForKD(teacher)(batch["input_ids"], batch["attention_mask"], batch["labels"])
        vals, ids = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)  # [n, k]
    shape = (*batch["labels"].shape, k)
    t_ids = torch.full(shape, -1, dtype=torch.long, device=ids.device)
    t_lps = torch.zeros(shape, dtype=torch.float32, device=ids.device)
    t_ids[sel] = ids
    t_lps[sel] = vals
    return {"topk_ids": t_ids, "topk_logprobs": t_lps, "kd_mask": sel.clone()}


@torch.no_grad()
def generate(model: nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             batch_size: int = 8, bf16: bool = True) -> list[str]:
    """Greedy continuations of token-id prompts (left-padded batches, longest first)."""
    from lantern_batch.classifier import autocast_context

    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    eos = eos_id(tokenizer)
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    out: list[str] = [""] * len(prompts)
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        batch = [list(prompts[i]) for i in idx]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, width - len(p):] = torch.as_tensor(p)
            mask[r, width - len(p):] = 1
        with autocast_context(device, bf16):
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                 eos_token_id=eos)
        for r, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[r, width:], skip_special_tokens=True).strip()
    return out


@torch.no_grad()
def teacher_forced_metrics(model: nn.Module, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                           pad: int, batch_size: int = 8, bf16: bool = True) -> dict[str, float]:
    """Mean negative log-likelihood and top-1 accuracy of the target tokens given the prompt
    and the preceding target tokens (teacher forcing), over all target tokens.

    A steadier measure of what a student learned than ROUGE of greedy generations on a few
    pairs: every held-out output token counts, and no decoding choice is involved.

    Returns:
        ``{"nll": nats per token, "token_accuracy": share of argmax hits, "tokens": count}``.
    """
    from lantern_batch.classifier import autocast_context

    device = next(model.parameters()).device
    wrapper = DecoderForKD(model)
    was_training = model.training
    model.eval()
    nll_sum, hits, n = 0.0, 0, 0
    try:
        for start in range(0, len(prompts), batch_size):
            rows = {"prompt_ids": prompts[start: start + batch_size], "target_ids": targets[start: start + batch_size]}
            b = collate_lm(rows, pad)
            with autocast_context(device, bf16):
                logits, sel = wrapper(b["input_ids"].to(device), b["attention_mask"].to(device),
                                      b["labels"].to(device))  # [n, vocab]
            labels = b["labels"].to(device)[sel]  # [n]
            lps = torch.log_softmax(logits.float(), dim=-1)  # [n, vocab]
            nll_sum += float(-lps.gather(1, labels[:, None]).sum())
            hits += int((lps.argmax(dim=-1) == labels).sum())
            n += int(labels.numel())
    finally:
        model.train(was_training)
    return {"nll": nll_sum / max(n, 1), "token_accuracy": hits / max(n, 1), "tokens": n}
