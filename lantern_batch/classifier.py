"""The encoder fit classifier: any Hugging Face encoder + pooling + a 3-way head.

Shared by training (``lantern_batch.distill.classifier``) and precompute (which loads the
exported directory and calls :func:`predict_proba`). No Ray here.

An exported classifier is a plain HF directory::

    config.json, model.safetensors, tokenizer files   the encoder (AutoModel / AutoTokenizer)
    head.safetensors                                   pooling head: weight [3, hidden], bias [3]
    lantern_batch.json                                 labels, pooling, max_length,
                                                       calibration_temperature, text_version,
                                                       training_data_fingerprint, version

``version`` is the directory's content hash (:func:`lantern_batch.models.model_version`, with a
``cls-`` prefix). ``text_version`` is the :func:`lantern_batch.prompts.classifier_text` layout the
classifier was trained on; loading an export of another layout is an error
(:func:`check_text_version`), since its scores on this code's text would mean nothing.

    model = FitClassifier.from_encoder("bundled:minilm", pooling="mean")
    model.save("runs/demo/models/classifier", {"max_length": 160})
    model, tokenizer, meta = load_classifier("runs/demo/models/classifier")
    probs = predict_proba(model, tokenizer, texts, max_length=meta["max_length"])  # [n, 3]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lantern_batch.schema import FIT_LABELS

META_FILE = "lantern_batch.json"
HEAD_FILE = "head.safetensors"
POOLINGS = ("mean", "cls")
FORMAT_VERSION = 1


def resolve_model_dir(ref: str | Path) -> Path:
    """Local HF directory of a model reference (``bundled:minilm``, a path, ``s3://``...).

    Delegates to :func:`lantern_batch.models.resolve`; a plain existing directory is accepted
    directly so this module also works where that resolver is unavailable.
    """
    path = Path(str(ref))
    if path.is_dir():
        return path
    from lantern_batch import models  # noqa: PLC0415 (resolver imports optional packages)

    return Path(models.resolve(str(ref)))


class FitClassifier(nn.Module):
    """Encoder + pooling + linear head over :data:`lantern_batch.schema.FIT_LABELS`.

    Args:
        encoder: an HF ``AutoModel`` encoder whose output has ``last_hidden_state``.
        pooling: ``mean`` (masked mean over tokens) or ``cls`` (first token).
        dropout: dropout on the pooled vector during training.
    """

    def __init__(self, encoder: nn.Module, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if isinstance(getattr(encoder, "pooler", None), nn.Module):
            # BERT's own pooler (tanh over [CLS]) is unused by this head; dropping it saves its
            # compute and keeps DDP from waiting for gradients that never come.
            encoder.pooler = None
        self.encoder = encoder
        self.pooling = pooling
        hidden = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, len(FIT_LABELS))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_encoder(cls, ref_or_path: str | Path, pooling: str = "mean", dropout: float = 0.1) -> FitClassifier:
        """A classifier with a pretrained encoder and a freshly initialised head."""
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(str(resolve_model_dir(ref_or_path)), dtype=torch.float32)
        return cls(encoder, pooling=pooling, dropout=dropout)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pool token states ``[batch, seq, hidden]`` into ``[batch, hidden]``."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
        summed = (hidden * mask).sum(dim=1)  # [batch, hidden]
        return summed / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, 3]`` in FIT_LABELS order (High, Medium, Low)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # [batch, seq, hidden]
        pooled = self.pool(hidden, attention_mask)  # [batch, hidden]
        return self.head(self.dropout(pooled).to(self.head.weight.dtype))  # [batch, 3]

    def save(self, directory: str | Path, meta: dict[str, Any], tokenizer: Any | None = None) -> dict[str, Any]:
        """Export as an HF directory + ``head.safetensors`` + ``lantern_batch.json``.

        Args:
            directory: target directory (created).
            meta: at least ``max_length``; may carry ``calibration_temperature``,
                ``text_version`` (default: this code's
                :data:`~lantern_batch.prompts.CLASSIFIER_TEXT_VERSION`),
                ``training_data_fingerprint`` and anything else worth recording.
            tokenizer: the tokenizer to save with it (required to load the export later).

        Returns:
            The metadata written, including the computed ``version``.
        """
        from safetensors.torch import save_file

        from lantern_batch.prompts import CLASSIFIER_TEXT_VERSION

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Tied or shared tensors are handled by save_pretrained; contiguous copies avoid
        # safetensors' refusal of views.
        self.encoder.save_pretrained(str(directory))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
        head = {k: v.detach().float().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(head, str(directory / HEAD_FILE))
        full = {
            "labels": list(FIT_LABELS),
            "pooling": self.pooling,
            "max_length": int(meta.get("max_length", 256)),
            "calibration_temperature": float(meta.get("calibration_temperature", 1.0)),
            "text_version": str(meta.get("text_version") or CLASSIFIER_TEXT_VERSION),
            "training_data_fingerprint": meta.get("training_data_fingerprint"),
            "format_version": FORMAT_VERSION,
        }
        full.update({k: v for k, v in meta.items() if k not in full and k != "version"})
        (directory / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        full["version"] = classifier_version(directory)  # the file's own version key is not hashed
        (directory / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        return full


def classifier_version(directory: str | Path) -> str:
    """The version of an exported classifier: ``cls-`` + its content hash
    (:func:`lantern_batch.models.model_version`: weights, head, tokenizer, ``lantern_batch.json``)."""
    from lantern_batch.models import model_version

    return "cls-" + model_version(directory)


def check_text_version(meta: dict[str, Any], directory: str | Path) -> None:
    """Refuse an export trained on another :func:`~lantern_batch.prompts.classifier_text` layout.

    Raises:
        InputError: the export's ``text_version`` is not this code's
            :data:`~lantern_batch.prompts.CLASSIFIER_TEXT_VERSION`, or it records none; the
            message names both versions and the directory.
    """
    from lantern_batch.errors import InputError
    from lantern_batch.prompts import CLASSIFIER_TEXT_VERSION

    recorded = meta.get("text_version")
    if recorded is None:
        raise InputError(
            f"classifier {directory} records no text_version in {META_FILE}: it was trained on an unknown "
            f"classifier text layout, and this code builds '{CLASSIFIER_TEXT_VERSION}'; retrain it"
        )
    if str(recorded) != CLASSIFIER_TEXT_VERSION:
        raise InputError(
            f"classifier {directory} was trained on classifier text '{recorded}' but this code builds "
            f"'{CLASSIFIER_TEXT_VERSION}' (lantern_batch.prompts.CLASSIFIER_TEXT_VERSION); retrain it on "
            f"'{CLASSIFIER_TEXT_VERSION}' text or run the code that matches it"
        )


def load_classifier(directory: str | Path, dtype: torch.dtype = torch.float32) -> tuple[FitClassifier, Any, dict[str, Any]]:
    """Load an exported classifier (in eval mode).

    Returns:
        ``(model, tokenizer, meta)``; ``meta`` is the content of ``lantern_batch.json``.

    Raises:
        FileNotFoundError: no ``lantern_batch.json``; ValueError: other labels;
        InputError: another classifier text version (:func:`check_text_version`).
    """
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory} is not an exported classifier: {META_FILE} missing")
    meta = json.loads(meta_path.read_text())
    if list(meta.get("labels", [])) != list(FIT_LABELS):
        raise ValueError(f"{directory}: labels {meta.get('labels')} differ from {list(FIT_LABELS)}")
    check_text_version(meta, directory)
    encoder = AutoModel.from_pretrained(str(directory), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = FitClassifier(encoder, pooling=meta["pooling"], dropout=0.0)
    model.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
    model.head.to(dtype)
    model.eval()
    return model, tokenizer, meta


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """True where bf16 autocast is fast: CUDA with bf16, or a CPU with AVX-512 BF16 / AMX
    (MiniLM there runs ~3x faster in bf16 than fp32: 174 vs 47 pairs/s on 2 cores)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_context(device: torch.device | str, enabled: bool | None = None):
    """bf16 autocast on ``device`` where the hardware runs bf16 natively; ``enabled=False`` turns
    it off. Never on a CPU without native bf16: PyTorch's fallback bf16 matmul ran at 0.7
    GFLOP/s against 30 in fp32 on such a host, which made a teacher-SFT step take minutes."""
    device = torch.device(device)
    use = bf16_supported(device) and enabled is not False
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length (longest first), so dynamic padding wastes little."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_proba(
    model: FitClassifier,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = 256,
    batch_size: int = 32,
    temperature: float = 1.0,
    bf16: bool | None = None,
) -> np.ndarray:
    """Class probabilities ``[n, 3]`` (FIT_LABELS order, float32, rows sum to 1).

    Texts are tokenised once, sorted by token length and run in batches padded to the batch's
    longest text; ``temperature`` divides the logits (the export's calibration temperature).
    """
    n = len(texts)
    out = np.zeros((n, len(FIT_LABELS)), dtype=np.float32)
    if n == 0:
        return out
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    ids: list[list[int]] = enc["input_ids"]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast_context(device, bf16):
            for idx in length_sorted_batches([len(x) for x in ids], batch_size):
                batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
                logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                probs = torch.softmax(logits.float() / float(temperature), dim=-1)  # [b, 3]
                out[idx] = probs.cpu().numpy()
    finally:
        model.train(was_training)
    return out
