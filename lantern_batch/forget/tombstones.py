"""Tombstones: the record that members were forgotten, and the filters that keep them out.

``lantern-batch forget`` writes one tombstone per request into ``<root>/_tombstones/`` of every
precompute and synthesize output it cleans (and into ``forget.out`` and, when set, the central
``tombstones`` directory)::

    _tombstones/members-<forget_id>.parquet     member_hash, key_id, forget_id, created_at

**What is kept, and why.** Not the ids: a list of people who asked to be forgotten, kept next to
the data, would itself be the personal data they asked to have removed. Each id is stored as
``HMAC-SHA256(key, member_id)`` (hex) with a secret key from the environment
(:data:`KEY_ENV`, e.g. from a secret store into the job's ``runtime_env``), which never lands
in the data store. Without the key a tombstone cannot be tested against a guessed id (member ids
are often enumerable, so a plain or publicly salted hash could be reversed by trying every id);
with it, a job can still recognise a forgotten member's rows in new input. ``key_id`` (a hash of
the key, not the key) tells a job with another key that it cannot read the tombstones.

**Fail closed.** A job that finds tombstones and has no key, or a key with another ``key_id``,
stops with exit code 2 before doing any work: silently ignoring tombstones would bring forgotten
members back. Where there are no tombstones nothing is needed and nothing changes.

**How later runs exclude them.**

* precompute (:func:`mark_forgotten`, applied to every pairs batch after validation): a pair of
  a forgotten member becomes an *error row* with table ``pairs``, stage ``forget``, reason
  ``forgotten`` and *every id nulled* (member_id, job_id, query). It is counted in the manifest
  (``errors_by_reason["pairs/forget/forgotten"]``) and the conservation law
  ``rows_in = rows_scored + rows_reused + rows_error`` still holds, while no row names the
  member. Rows of the previous ds are dropped before routing (:func:`drop_forgotten`), so
  incremental reuse can never copy one forward.
* synthesize (:func:`drop_forgotten_pairs`, right after the pairs are read): the pair is
  *skipped and counted* (``forgotten`` in the pass counts and in the conservation law). It cannot
  be an error row there: synthesis keys every row it writes (labels, errors, commit markers) by
  a pair id derived from the member id, which would itself identify the member.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch import io
from lantern_batch.errors import InputError
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)

KEY_ENV = "LANTERN_FORGET_KEY"
"""Environment variable holding the secret tombstone key (at least :data:`MIN_KEY_CHARS` characters)."""
MIN_KEY_CHARS = 16
TOMBSTONE_DIR = "_tombstones"
FORGET_STAGE = "forget"
FORGOTTEN = "forgotten"
"""Reason code of a precompute error row standing for a forgotten member's pair."""

TOMBSTONE_SCHEMA = pa.schema([
    pa.field("member_hash", pa.string(), nullable=False),
    pa.field("key_id", pa.string(), nullable=False),
    pa.field("forget_id", pa.string(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
])


# --------------------------------------------------------------------------- key and hashes


def forget_key(required: bool = True) -> bytes | None:
    """The tombstone key from :data:`KEY_ENV`.

    Raises:
        InputError: unset (when ``required``) or shorter than :data:`MIN_KEY_CHARS`.
    """
    raw = os.environ.get(KEY_ENV, "")
    if not raw:
        if required:
            raise InputError(f"the tombstone key is not set: put a secret of at least {MIN_KEY_CHARS} "
                             f"characters in the environment variable {KEY_ENV} (the same one for "
                             "forget, precompute and synthesize; keep it outside the data store)")
        return None
    if len(raw) < MIN_KEY_CHARS:
        raise InputError(f"{KEY_ENV} is shorter than {MIN_KEY_CHARS} characters")
    return raw.encode()


def key_id(key: bytes) -> str:
    """A public fingerprint of the key (which key wrote a tombstone), not the key."""
    return hashlib.sha256(b"lantern-forget-key-id\x00" + key).hexdigest()[:16]


def member_hash(key: bytes, member_id: str) -> str:
    """``HMAC-SHA256(key, member_id)`` as hex: what a tombstone stores for a member."""
    return hmac.new(key, member_id.encode("utf-8"), hashlib.sha256).hexdigest()


def tombstone_dirs(out: str, extra: str | None = None) -> list[str]:
    """The tombstone directories a job with output ``out`` reads: ``out/_tombstones`` and the
    central directory ``extra`` (a config's ``tombstones``) when set."""
    dirs = [io.join(out, TOMBSTONE_DIR)]
    if extra and extra.rstrip("/") not in (d.rstrip("/") for d in dirs):
        dirs.append(extra)
    return dirs


def new_forget_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def write_tombstone(directory: str, hashes: Sequence[str], kid: str, forget_id: str,
                    created_at: datetime | None = None) -> str:
    """Write ``directory/members-<forget_id>.parquet``; returns its path (atomic, one file)."""
    created_at = created_at or datetime.now(timezone.utc)
    n = len(hashes)
    table = pa.Table.from_arrays([
        pa.array(sorted(hashes), pa.string()),
        pa.array([kid] * n, pa.string()),
        pa.array([forget_id] * n, pa.string()),
        pa.array([created_at] * n, pa.timestamp("us", tz="UTC")),
    ], schema=TOMBSTONE_SCHEMA)
    return io.write_table(table, directory, basename=f"members-{forget_id}.parquet")


def read_tombstones(dirs: Iterable[str]) -> tuple[set[str], set[str], int]:
    """(member hashes, key ids, tombstone files) of every ``members-*.parquet`` in ``dirs``."""
    import pyarrow.parquet as pq

    hashes: set[str] = set()
    kids: set[str] = set()
    n_files = 0
    for d in dirs:
        for f in io.list_parquet_files(d):
            if not io.basename(f).startswith("members-"):
                continue
            fs, p = io.filesystem(f)
            t = pq.read_table(p, filesystem=fs, columns=["member_hash", "key_id"])
            hashes.update(h for h in t.column("member_hash").to_pylist() if h)
            kids.update(k for k in t.column("key_id").to_pylist() if k)
            n_files += 1
    return hashes, kids, n_files


def check_key(kids: set[str], key: bytes | None, where: str) -> None:
    """Fail (exit 2) unless ``key`` is the key every tombstone in ``where`` was written with."""
    if not kids:
        return
    if key is None:
        raise InputError(f"tombstones of forgotten members exist under {where} but {KEY_ENV} is not "
                         "set: without the key they cannot be applied, and running on would bring "
                         "the members back; set it to the key forget used")
    other = kids - {key_id(key)}
    if other:
        raise InputError(f"tombstones under {where} were written with another key (key id "
                         f"{sorted(other)[0]}, this key's is {key_id(key)}): set {KEY_ENV} to the key "
                         "forget used")


# --------------------------------------------------------------------------- the filter


@dataclass(frozen=True)
class ForgetFilter:
    """Recognises forgotten members by their keyed hash; empty (falsy) when nothing is forgotten.

    Picklable: the jobs put it in Ray's object store and every worker applies it.
    """

    key: bytes | None = None
    hashes: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def __len__(self) -> int:
        return len(self.hashes)

    def mask(self, member_ids: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> np.ndarray:
        """True for each value that is a forgotten member's id (nulls: False)."""
        arr = member_ids if isinstance(member_ids, (pa.Array, pa.ChunkedArray)) else pa.array(
            list(member_ids), pa.string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        n = len(arr)
        out = np.zeros(n, dtype=bool)
        if not self.hashes or n == 0:
            return out
        if not pa.types.is_string(arr.type):
            arr = arr.cast(pa.string())
        enc = pc.dictionary_encode(arr)
        values = enc.dictionary.to_pylist()
        hit = np.fromiter((v is not None and member_hash(self.key, v) in self.hashes for v in values),  # type: ignore[arg-type]
                          dtype=bool, count=len(values))
        idx = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        valid = idx >= 0
        out[valid] = hit[idx[valid]]
        return out


EMPTY = ForgetFilter()


def load_filter(out: str, extra: str | None = None) -> ForgetFilter:
    """The filter of every tombstone a job with output ``out`` must honour.

    Raises:
        InputError: tombstones exist and :data:`KEY_ENV` is unset, too short, or another key.
    """
    dirs = tombstone_dirs(out, extra)
    hashes, kids, n_files = read_tombstones(dirs)
    if not n_files:
        return EMPTY
    key = forget_key(required=False)
    check_key(kids, key, " and ".join(dirs))
    event(log, "forget.tombstones_loaded", files=n_files, members=len(hashes))
    return ForgetFilter(key, frozenset(hashes))


def _resolve(value: Any) -> Any:
    if value is None or isinstance(value, ForgetFilter):
        return value
    import ray

    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], ray.ObjectRef):
        value = value[0]
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


# --------------------------------------------------------------------------- job filters


def drop_forgotten(table: pa.Table, forgotten: ForgetFilter | None, column: str = "member_id") -> pa.Table:
    """``table`` without the rows of forgotten members (rows of the previous ds in precompute)."""
    if not forgotten or table.num_rows == 0 or column not in table.column_names:
        return table
    mask = forgotten.mask(table.column(column))
    return table.filter(pa.array(~mask)) if mask.any() else table


def mark_forgotten(work: pa.Table, forgotten: ForgetFilter | None) -> pa.Table:
    """Precompute: pairs of forgotten members become error rows ``pairs/forget/forgotten`` with
    no ids (see the module doc). ``work`` has :data:`~lantern_batch.precompute.route.WORK_SCHEMA`."""
    if not forgotten or work.num_rows == 0:
        return work
    mask = forgotten.mask(work.column("member_id"))
    if not mask.any():
        return work
    sel = pa.array(mask)
    values = {"__err_table": "pairs", "__err_stage": FORGET_STAGE, "__err_reason": FORGOTTEN}
    for name in work.column_names:
        i = work.schema.get_field_index(name)
        field = work.schema.field(i)
        if name in values:
            col = pc.if_else(sel, pa.scalar(values[name], field.type), work.column(name))
        elif name in ("member_id", "job_id", "query", "input_fingerprint", "__err_detail",
                      "__m_order", "__j_order"):
            col = pc.if_else(sel, pa.scalar(None, field.type), work.column(name))
        else:
            continue
        work = work.set_column(i, field, col)
    return work


def drop_forgotten_pairs(batch: pa.Table, forgotten: Any) -> pa.Table:
    """Synthesize (Ray Data UDF after the pairs are read): skip pairs of forgotten members."""
    return drop_forgotten(batch, _resolve(forgotten))
