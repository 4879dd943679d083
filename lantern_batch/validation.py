"""``lantern-batch validate``: check an input table against its contract and count the outcome.

    lantern-batch validate --table members runs/demo/data/members

A missing required column or an incompatible type fails at once (exit 2) with the table, the
column and the expected type, read from the Parquet footers before any row. Otherwise every row
is good or becomes an error row with a reason; the command prints counts by reason and exits 0.
Values are never printed (profile text may be hostile or private): only counts and codes.
"""

from __future__ import annotations

from collections.abc import Callable

from lantern_batch import io
from lantern_batch.schema import RowLimits, ValidationResult, check_columns, validate_table


def validate_path(
    table_name: str,
    path: str,
    *,
    errors_out: str | None = None,
    max_text_chars: int = 20_000,
    echo: Callable[[str], None] | None = None,
) -> ValidationResult:
    """Validate the Parquet table at ``path`` (local or s3).

    Raises:
        SchemaError: a missing required column or an unsafe type (before reading rows).
        InputError: no Parquet files at ``path``.
    """
    check_columns(table_name, io.dataset_schema(path, table_name))
    result = validate_table(io.read_table(path, table=table_name), table_name,
                            RowLimits(max_text_chars=max_text_chars))
    if errors_out and result.errors.num_rows:
        io.write_table(result.errors, errors_out, basename="part-00000.parquet")
    if echo is not None:
        echo(format_counts(result))
    return result


def format_counts(result: ValidationResult) -> str:
    """Human summary: good rows, bad rows, and bad rows by reason (most frequent first)."""
    counts = result.counts
    good = counts.pop("good")
    bad = sum(counts.values())
    lines = [f"table '{result.table_name}': {good + bad} rows, {good} good, {bad} bad"]
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason}: {n}")
    return "\n".join(lines)
