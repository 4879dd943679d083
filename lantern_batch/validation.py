"""``lantern-batch validate``: check an input table against its contract and count the outcome.

    lantern-batch validate --table members runs/demo/data/members

A missing required column or an incompatible type fails at once (exit 2) with the table, the
column and the expected type, read from the Parquet footers before any row. Otherwise every row
is good or becomes an error row with a reason; the command prints counts by reason and exits 0.
Values are never printed (profile text may be hostile or private): only counts and codes.

The table streams: it is read in batches (:func:`lantern_batch.io.iter_input_batches`), each
batch's row checks run on their own (:func:`~lantern_batch.schema.row_reasons`) and its error
rows are appended to the errors file as they come (:class:`lantern_batch.io.ParquetSink`).
Duplicates (a key seen earlier in the table, in file and row order) need the keys seen so far:
they are found in shards, ceil(rows / ``shard_rows``) passes over the table (one up to 2M rows by
default), each pass holding only the keys of its own hash bucket (:func:`key_shards`; rows with
a null key, which are errors anyway, are spread by position). What a process
holds is one batch and one bucket's keys, whatever the table's size; with several shards the
error rows come out grouped by shard, each in table order. The counts are those of
:func:`lantern_batch.schema.validate_table` over the whole table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from lantern_batch import io
from lantern_batch.schema import (
    ERRORS_SCHEMA,
    KEY_COLUMNS,
    RowLimits,
    check_columns,
    error_rows,
    row_reasons,
)

SHARD_ROWS = 2_000_000
"""Rows per duplicate-detection shard (see the module doc)."""

BATCH_ROWS = 65_536
"""Rows read and checked at a time."""


@dataclass
class ValidationCounts:
    """The outcome of :func:`validate_path`: rows by outcome (the rows themselves were streamed)."""

    table_name: str
    by_outcome: dict[str, int] = field(default_factory=dict)
    shards: int = 1
    held_keys: int = 0
    """The most keys one shard held at once (bounded by its bucket)."""

    @property
    def counts(self) -> dict[str, int]:
        """Rows by outcome: ``good`` plus one entry per reason code (a fresh dict)."""
        return {"good": self.by_outcome.get("good", 0),
                **{k: v for k, v in self.by_outcome.items() if k != "good"}}


def key_shards(batch: pa.Table, key_columns: tuple[str, ...], first_row: int, shards: int) -> np.ndarray:
    """The duplicate-detection shard of each row of ``batch``: a hash of its key (pandas'
    ``hash_array``, vectorised and the same in every process), or its position in the table
    (``first_row`` + its index) when a key column is null."""
    n = batch.num_rows
    if shards <= 1:
        return np.zeros(n, dtype=np.int64)
    import pandas as pd

    h = np.zeros(n, dtype=np.uint64)
    null = np.zeros(n, dtype=bool)
    for name in key_columns:
        col = batch.column(name)
        null |= np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        h = h * np.uint64(1_000_003) + pd.util.hash_array(col.to_numpy(zero_copy_only=False), categorize=False)
    out = (h % np.uint64(shards)).astype(np.int64)
    out[null] = (first_row + np.nonzero(null)[0]) % shards
    return out


def validate_path(
    table_name: str,
    path: str,
    *,
    errors_out: str | None = None,
    max_text_chars: int = 20_000,
    echo: Callable[[str], None] | None = None,
    shard_rows: int = SHARD_ROWS,
    batch_rows: int = BATCH_ROWS,
) -> ValidationCounts:
    """Validate the Parquet table at ``path`` (local or s3), streaming (see the module doc).

    Error rows go to ``errors_out/part-00000.parquet`` (written only when there are some).

    Raises:
        SchemaError: a missing required column or an unsafe type (before reading rows).
        InputError: no Parquet files at ``path``.
    """
    check_columns(table_name, io.dataset_schema(path, table_name))
    rows = sum(f.num_rows for f in io.file_footers(path, table_name))
    shards = max(1, -(-rows // max(1, shard_rows)))
    limits = RowLimits(max_text_chars=max_text_chars)
    key_cols = KEY_COLUMNS[table_name]
    dup_code = "duplicate_pair" if table_name == "pairs" else "duplicate_id"
    outcome: Counter[str] = Counter()
    held = 0
    sink = io.ParquetSink(errors_out, "part-00000.parquet", ERRORS_SCHEMA) if errors_out else None
    try:
        for shard in range(shards):
            seen: set[tuple[str, ...]] = set()
            row = 0  # position in the table of the batch's first row
            for batch in io.iter_input_batches(path, table_name, batch_rows=batch_rows):
                if shards > 1:
                    mine = np.nonzero(key_shards(batch, key_cols, row, shards) == shard)[0]
                    row += batch.num_rows
                    if not len(mine):
                        continue
                    batch = batch.take(pa.array(mine, pa.int64()))
                keys = list(zip(*(batch.column(c).to_pylist() for c in key_cols), strict=True))
                reasons = row_reasons(batch, table_name, limits)
                for i, k in enumerate(keys):  # the first of each key in table order wins
                    if any(v is None for v in k):
                        continue
                    if k in seen:
                        if reasons[i] is None:
                            reasons[i] = dup_code
                    else:
                        seen.add(k)
                bad = reasons != None  # noqa: E711 (object array comparison)
                outcome["good"] += int((~bad).sum())
                outcome.update(reasons[bad].tolist())
                if sink is not None and bad.any():
                    sink.write(error_rows(batch.filter(pa.array(bad)), reasons[bad].tolist(),
                                          table=table_name, stage="validate"))
            held = max(held, len(seen))
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    if sink is not None:
        sink.close()
    result = ValidationCounts(table_name, dict(outcome), shards=shards, held_keys=held)
    if echo is not None:
        echo(format_counts(result))
    return result


def format_counts(result: ValidationCounts) -> str:
    """Human summary: good rows, bad rows, and bad rows by reason (most frequent first)."""
    counts = result.counts
    good = counts.pop("good")
    bad = sum(counts.values())
    lines = [f"table '{result.table_name}': {good + bad} rows, {good} good, {bad} bad"]
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason}: {n}")
    return "\n".join(lines)
