"""Content fingerprints that decide what the nightly precompute may reuse.

``input_fingerprint`` of a pair = hash(member content hash, job content hash, query, the
model-and-prompt fingerprint of the run). Two runs give a pair the same fingerprint exactly when
its inputs and the code that scores it are unchanged, so the previous partition's row can be
reused as is.

Content hashes cover every contract column except ``updated_at`` (a touched-but-unchanged
profile is not a change). Rows are serialised canonically (JSON, sorted keys, floats by
``repr``), so a hash does not depend on column order, Parquet encoding, chunking or library
versions.

    run_fp = run_fingerprint({"classifier": "cls-1a2b", "explainer": "exp-9f"}, {"prompt": "v1"})
    member_hashes = content_hashes(members_table, "members")     # one hex digest per row
    fps = pair_fingerprints(member_hashes, job_hashes, queries, run_fp)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from lantern_batch.schema import INPUT_SCHEMAS

DIGEST_BYTES = 16
"""128-bit digests: a collision among even 10^12 rows is far below one in a million."""

#: Columns that never take part in a content hash.
EXCLUDED_COLUMNS = frozenset({"updated_at"})


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
    cols = content_columns(table_name)
    rows = table.select(cols).to_pylist()
    return [
        _digest(json.dumps(_canonical(r), sort_keys=True, ensure_ascii=False,
                           separators=(",", ":")).encode("utf-8"))
        for r in rows
    ]


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


def pair_fingerprints(
    member_hashes: Sequence[str | None],
    job_hashes: Sequence[str | None],
    queries: Sequence[str | None],
    run_fp: str,
) -> list[str | None]:
    """``input_fingerprint`` per pair; None where the member or job hash is missing."""
    out: list[str | None] = []
    for m, j, q in zip(member_hashes, job_hashes, queries, strict=True):
        if m is None or j is None:
            out.append(None)
            continue
        # Field separators cannot occur in hex digests; the query is length-prefixed.
        qb = b"\x00" if q is None else b"\x01" + str(len(q)).encode() + b":" + q.encode("utf-8")
        out.append(_digest(b"|".join((run_fp.encode(), m.encode(), j.encode())) + b"|" + qb))
    return out


def sample_hash(member_ids: Sequence[str], job_ids: Sequence[str], seed: int) -> list[float]:
    """A deterministic number in [0, 1) per pair (the explain policy's sampling)."""
    out = []
    prefix = str(seed).encode() + b"\x00"
    for m, j in zip(member_ids, job_ids, strict=True):
        h = hashlib.blake2b(prefix + m.encode("utf-8") + b"\x00" + j.encode("utf-8"), digest_size=8)
        out.append(int.from_bytes(h.digest(), "big") / 2**64)
    return out
