"""Content fingerprints that decide what the nightly precompute may reuse.

``input_fingerprint`` of a pair = hash(member content hash, job content hash, query, the
model-and-prompt fingerprint of the run). Two runs give a pair the same fingerprint exactly when
its inputs and the code that scores it are unchanged, so the previous partition's row can be
reused as is.

The run fingerprint (:func:`precompute_fingerprint`) covers every thing besides the pair that
changes a scores row: both models' content hashes (:func:`lantern_batch.models.model_version`),
the classifier's text version, length limits, calibration temperature and dtype, the explainer's
prompt version and budgets, the engine settings that change outputs (:data:`ENGINE_OUTPUT_KEYS`,
the dtype as ``auto`` resolves on this host: :func:`resolved_engine_settings`), the
sampling and regeneration settings, the explain policy and the validator's version. Settings
that only change speed or memory (batch sizes, threads, ``enforce_eager``, KV-cache size) are
not in it, so changing them reuses everything.

Content hashes cover every contract column except ``updated_at`` (a touched-but-unchanged
profile is not a change). Rows are serialised canonically (JSON, sorted keys, floats by
``repr``), so a hash does not depend on column order, Parquet encoding, chunking or library
versions.

    run_fp = precompute_fingerprint(cfg, classifier_settings, explainer_settings).run
    member_hashes = content_hashes(members_table, "members")     # one hex digest per row
    fps = pair_fingerprints(member_hashes, job_hashes, queries, run_fp)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lantern_batch.schema import INPUT_SCHEMAS

if TYPE_CHECKING:
    from lantern_batch.precompute.classifier_stage import ClassifierSettings
    from lantern_batch.precompute.config import PrecomputeConfig
    from lantern_batch.precompute.explainer_stage import ExplainerSettings

DIGEST_BYTES = 16
"""128-bit digests: a collision among even 10^12 rows is far below one in a million."""

#: Columns that never take part in a content hash.
EXCLUDED_COLUMNS = frozenset({"updated_at"})

ENGINE_OUTPUT_KEYS = ("dtype", "max_model_len", "quantization", "kv_cache_dtype", "seed", "tokenizer",
                      "revision", "tokenizer_revision", "max_logprobs")
"""vLLM engine arguments that change what an engine generates (precision, context, weights
read, sampling seed). The others (``enforce_eager``, KV-cache size, prefix caching, parallelism)
change speed and memory only."""


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest()


def _canonical(value: Any) -> Any:
    """A JSON-encodable, unambiguous form of an Arrow-derived Python value."""
    if isinstance(value, float):
        # NaN/inf are not JSON; repr keeps every float's exact value.
        return {"f": repr(value)} if not math.isfinite(value) else value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def content_columns(table_name: str) -> list[str]:
    """Contract columns of ``table_name`` that take part in its content hash."""
    return [f.name for f in INPUT_SCHEMAS[table_name] if f.name not in EXCLUDED_COLUMNS]


def content_hashes(table: pa.Table, table_name: str) -> list[str]:
    """One content digest per row of a conformed ``members`` or ``jobs`` table.

    Args:
        table: rows conformed to the contract (:func:`lantern_batch.schema.conform`).
        table_name: ``members`` or ``jobs``.
    """
    return [row_digest(r, table_name) for r in table.select(content_columns(table_name)).to_pylist()]


def row_digest(row: Mapping[str, Any], table_name: str) -> str:
    """The content digest of one row given as a dict (a struct value, a ``to_pylist`` row): the
    same digest :func:`content_hashes` gives that row; columns it lacks count as null."""
    content = {c: row.get(c) for c in content_columns(table_name)}
    return _digest(json.dumps(_canonical(content), sort_keys=True, ensure_ascii=False,
                              separators=(",", ":")).encode("utf-8"))


def run_fingerprint(model_versions: Mapping[str, str | None], settings: Mapping[str, Any]) -> str:
    """Digest of everything besides the pair's own inputs that shapes a scores row.

    Args:
        model_versions: e.g. ``{"classifier": ..., "explainer": ...}`` (None for a disabled one).
        settings: prompt versions and the settings that change outputs (max length, dtype,
            explain policy, sampling params).
    """
    blob = json.dumps({"models": dict(model_versions), "settings": _canonical(dict(settings))},
                      sort_keys=True, separators=(",", ":"), default=str)
    return _digest(blob.encode("utf-8"))


def engine_output_settings(engine_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`ENGINE_OUTPUT_KEYS` of vLLM engine kwargs, as given (a ``dtype`` of ``auto``
    stays ``auto``: see :func:`resolved_engine_settings` for what precompute fingerprints)."""
    return {k: engine_kwargs[k] for k in ENGINE_OUTPUT_KEYS if k in engine_kwargs}


def resolved_engine_settings(engine_kwargs: Mapping[str, Any], *, gpu: bool) -> dict[str, Any]:
    """:func:`engine_output_settings` with the ``dtype`` the engine runs in
    (:func:`lantern_batch.runtime.resolve_dtype`; unset is ``auto``): on a CPU, ``auto`` is
    ``bfloat16`` on a host with native bf16 and ``float32`` on one without, so the same config
    on the other kind of host fingerprints differently. ``gpu``: the engine runs on a GPU
    (``num_gpus > 0``), where ``auto`` stays vLLM's own ``auto`` (the model's dtype).

    Resolved in the driver, by the driver host's CPU: right for CPU engines on hosts of the
    driver's kind (one machine, or a cluster of one instance type); a CPU cluster whose workers
    differ from the head should set the dtype explicitly."""
    from lantern_batch.runtime import resolve_dtype

    return engine_output_settings({**engine_kwargs, "dtype": resolve_dtype(engine_kwargs.get("dtype"), gpu=gpu)})


@dataclass(frozen=True)
class RunFingerprint:
    """What a precompute run's outputs depend on besides the pairs."""

    run: str
    """:func:`run_fingerprint` of ``models`` and ``settings``: part of every ``input_fingerprint``."""
    models: dict[str, str | None]
    """Model versions (content hashes) by stage; None for a disabled explainer."""
    settings: dict[str, Any]
    """The settings covered, as recorded in the manifest's ``fingerprints``."""


def precompute_fingerprint(cfg: PrecomputeConfig, classifier: ClassifierSettings,
                           explainer: ExplainerSettings | None) -> RunFingerprint:
    """The run fingerprint of a precompute run (see the module doc for what it covers). Dtypes
    are recorded as they resolve on this host (:func:`lantern_batch.runtime.resolve_dtype`), never
    as the word ``auto`` for a CPU model.

    Args:
        cfg: the run's config (explain policy and prompt budgets).
        classifier: the resolved classifier stage (its ``version`` is the export's content hash).
        explainer: the resolved explainer stage, None when explanations are off.
    """
    from lantern_batch import prompts
    from lantern_batch.quality import QUALITY_VERSION
    from lantern_batch.runtime import resolve_dtype

    e = explainer
    settings = {
        "prompt_version": prompts.PROMPT_VERSION,
        "classifier_text_version": prompts.CLASSIFIER_TEXT_VERSION,
        "classifier_max_length": classifier.max_length,
        "classifier_max_chars": classifier.max_chars,
        "classifier_dtype": resolve_dtype(classifier.dtype, gpu=classifier.use_gpu),
        "calibration_temperature": classifier.temperature,
        "explainer_prompt_version": e.prompt_version if e else None,
        "explain_policy": cfg.explainer.policy.model_dump() if e else None,
        "explainer_prompt_budget": [cfg.explainer.member_tokens, cfg.explainer.job_tokens] if e else None,
        "explainer_engine": (resolved_engine_settings(e.engine_kwargs, gpu=cfg.explainer.num_gpus > 0)
                             if e else None),
        "sampling_params": dict(e.sampling_params) if e else None,
        "regenerations": e.regenerations if e else None,
        "retry_sampling_params": dict(e.retry_sampling_params) if e and e.regenerations else None,
        "max_explanation_chars": e.max_explanation_chars if e else None,
        "explanation_validator": QUALITY_VERSION if e else None,
    }
    models = {"classifier": classifier.version, "explainer": e.version if e else None}
    return RunFingerprint(run_fingerprint(models, settings), models, settings)


def pair_fingerprints(
    member_hashes: Sequence[str | None],
    job_hashes: Sequence[str | None],
    queries: Sequence[str | None],
    run_fp: str,
) -> list[str | None]:
    """``input_fingerprint`` per pair; None where the member or job hash is missing."""
    return [None if m is None or j is None else _pair_digest(run_fp, m, j, q)
            for m, j, q in zip(member_hashes, job_hashes, queries, strict=True)]


def _pair_digest(run_fp: str, member_hash: str, job_hash: str, query: str | None) -> str:
    # Field separators cannot occur in hex digests; the query is length-prefixed.
    qb = b"\x00" if query is None else b"\x01" + str(len(query)).encode() + b":" + query.encode("utf-8")
    return _digest(b"|".join((run_fp.encode(), member_hash.encode(), job_hash.encode())) + b"|" + qb)


def content_fingerprints(
    member_hashes: Sequence[str | None],
    job_hashes: Sequence[str | None],
    queries: Sequence[str | None],
) -> list[str | None]:
    """The fingerprint of each pair's content alone (member, job, query; no run): the teacher's
    ``input_fingerprint``, which its resume keys on (the teacher's own version is kept apart);
    None where the member or job hash is missing."""
    return pair_fingerprints(member_hashes, job_hashes, queries, run_fp="")


def content_fingerprint(member: Mapping[str, Any], job: Mapping[str, Any], query: str | None) -> str:
    """:func:`content_fingerprints` of one pair given as its member and job rows (dicts)."""
    return _pair_digest("", row_digest(member, "members"), row_digest(job, "jobs"), query)


def sample_hash(member_ids: Sequence[str], job_ids: Sequence[str], seed: int) -> list[float]:
    """A deterministic number in [0, 1) per pair (the explain policy's sampling)."""
    out = []
    prefix = str(seed).encode() + b"\x00"
    for m, j in zip(member_ids, job_ids, strict=True):
        h = hashlib.blake2b(prefix + m.encode("utf-8") + b"\x00" + j.encode("utf-8"), digest_size=8)
        out.append(int.from_bytes(h.digest(), "big") / 2**64)
    return out
