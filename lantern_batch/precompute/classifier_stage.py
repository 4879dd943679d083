"""Classifier stage: the exported encoder classifier over every pair that needs scoring.

Reads ``__text`` (the classifier input built by the feature join) and writes ``fit_label``,
``p_high``, ``p_medium``, ``p_low`` (float32, sum to 1), ``classifier_version`` and
``scored_at``; ``__text`` is dropped. One Ray Data actor loads the model once; each call gets
``rows_per_call`` pairs, tokenises them, sorts them by token length and runs forward batches
of ``batch_size`` padded only to their own longest text (dynamic padding), under
``torch.inference_mode`` and bf16 autocast where the hardware has it
(:func:`lantern_batch.classifier.predict_proba` does the batching).

    settings = ClassifierSettings.from_config(cfg.classifier, model_dir, meta)
    scored = classify_table(rows, model, tokenizer, settings)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lantern_batch.schema import FIT_LABELS, TS

DEFAULT_TEXT_MAX_CHARS = 1500
"""The prompts module's default classifier text length, used when the export names none."""


@dataclass(frozen=True)
class ClassifierSettings:
    """Everything a classifier actor needs (plain values: sent to Ray workers)."""

    model_dir: str
    """Where the driver resolved the model (a path on the driver's node)."""
    version: str
    max_length: int
    max_chars: int
    batch_size: int
    temperature: float
    dtype: str  # auto | bfloat16 | float32
    torch_threads: int | None
    use_gpu: bool
    ref: str = ""
    """The model reference each node resolves itself where ``model_dir`` is not on it."""

    def local_dir(self) -> str:
        """The model's directory on this node, checked to be ``version``."""
        from lantern_batch.classifier import classifier_version
        from lantern_batch.models import on_this_node

        return on_this_node(self.ref or self.model_dir, self.model_dir, self.version, classifier_version)

    @classmethod
    def from_config(cls, stage: Any, model_dir: str | Path, meta: dict[str, Any]) -> ClassifierSettings:
        """Settings from a :class:`~lantern_batch.precompute.config.ClassifierStageConfig` and
        the export's ``lantern_batch.json``; the version is the export's content hash
        (:func:`lantern_batch.classifier.classifier_version`), whatever the file records."""
        from lantern_batch.classifier import classifier_version

        return cls(
            model_dir=str(model_dir),
            version=classifier_version(model_dir),
            max_length=int(stage.max_length or meta.get("max_length") or 256),
            max_chars=int(stage.max_chars or meta.get("text_max_chars") or DEFAULT_TEXT_MAX_CHARS),
            batch_size=int(stage.batch_size),
            temperature=float(meta.get("calibration_temperature") or 1.0),
            dtype=stage.dtype,
            torch_threads=stage.torch_threads,
            use_gpu=stage.num_gpus > 0,
            ref=str(stage.ref),
        )


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """The export's ``lantern_batch.json`` (labels, max_length, calibration, version), checked:
    an export of another classifier text version is refused here, before any work
    (:func:`lantern_batch.classifier.check_text_version`, an InputError naming both)."""
    import json

    from lantern_batch.classifier import META_FILE, check_text_version

    path = Path(model_dir) / META_FILE
    if not path.is_file():
        from lantern_batch.errors import InputError

        raise InputError(f"classifier {model_dir} is not an exported classifier: {META_FILE} is missing")
    meta = json.loads(path.read_text())
    check_text_version(meta, model_dir)
    return meta


def load(settings: ClassifierSettings):
    """``(model, tokenizer, device, bf16)`` for ``settings`` (fp32 weights; bf16 via autocast)."""
    import torch

    from lantern_batch.classifier import bf16_supported, load_classifier

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = torch.device("cuda" if settings.use_gpu and torch.cuda.is_available() else "cpu")
    model, tokenizer, _ = load_classifier(settings.local_dir())
    model.to(device)
    if settings.dtype == "auto":
        bf16 = bf16_supported(device)
    else:
        bf16 = settings.dtype == "bfloat16"
    return model, tokenizer, device, bf16


def probabilities(model, tokenizer, texts: list[str], settings: ClassifierSettings, bf16: bool) -> np.ndarray:
    """``[n, 3]`` float32 probabilities in FIT_LABELS order."""
    from lantern_batch.classifier import predict_proba

    return predict_proba(model, tokenizer, texts, max_length=settings.max_length,
                         batch_size=settings.batch_size, temperature=settings.temperature, bf16=bf16)


def with_scores(rows: pa.Table, probs: np.ndarray, version: str, now: datetime | None = None) -> pa.Table:
    """``rows`` with the score columns set from ``probs`` ([n, 3]) and ``__text`` dropped."""
    now = now or datetime.now(timezone.utc)
    n = rows.num_rows
    probs = probs.astype(np.float32)
    probs = probs / probs.sum(axis=1, keepdims=True)  # exact renormalisation after float32 cast
    labels = np.asarray(FIT_LABELS, dtype=object)[probs.argmax(axis=1)] if n else np.array([], dtype=object)
    values = {
        "fit_label": pa.array(labels.tolist(), pa.string()),
        "p_high": pa.array(probs[:, 0]),
        "p_medium": pa.array(probs[:, 1]),
        "p_low": pa.array(probs[:, 2]),
        "classifier_version": pa.array([version] * n, pa.string()),
        "scored_at": pa.array([now] * n, TS),
    }
    for name, arr in values.items():
        i = rows.schema.get_field_index(name)
        rows = rows.set_column(i, rows.schema.field(i), arr)
    if "__text" in rows.column_names:
        rows = rows.drop_columns(["__text"])
    return rows


class ClassifierActor:
    """Ray Data callable class: loads the classifier once, scores each batch of pairs."""

    def __init__(self, settings: ClassifierSettings, meter: Any = None):
        self.settings = settings
        self.meter = meter
        self.model, self.tokenizer, self.device, self.bf16 = load(settings)

    def __call__(self, rows: pa.Table) -> pa.Table:
        start = time.perf_counter()
        texts = rows.column("__text").to_pylist()
        # A row the content join failed has no text and is an error row: not scored (the
        # tokenizer refuses None), its placeholder scores are never written.
        keep = [i for i, t in enumerate(texts) if t is not None]
        probs = np.full((len(texts), len(FIT_LABELS)), 1.0 / len(FIT_LABELS), dtype=np.float32)
        if keep:
            probs[keep] = probabilities(self.model, self.tokenizer, [texts[i] for i in keep], self.settings, self.bf16)
        out = with_scores(rows, probs, self.settings.version)
        if self.meter is not None:
            self.meter.add.remote("classify", rows.num_rows, time.perf_counter() - start)
        return out
