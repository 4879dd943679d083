"""Config of ``lantern-batch forget`` (a light module: pydantic only).

    lantern-batch forget --config configs/demo_forget.yaml --members runs/demo/forget/request.txt
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from lantern_batch.config import ConfigModel, LockConfig


class ForgetConfig(ConfigModel):
    """``lantern-batch forget``: remove every row of the listed members from the outputs, record
    a tombstone so later runs never bring them back, and write a deletion report."""

    members: str | None = None
    """The request: a Parquet file or directory with a ``member_id`` column, or a text file with
    one member id per line (blank lines ignored). Required. Never copied anywhere; delete it
    once the report says ``complete``."""
    out: str = "runs/demo/forget"
    """Deletion reports (``report-<forget_id>.json``: counts per table, no ids) and a copy of
    the tombstone (``_tombstones/``)."""
    tombstones: str | None = None
    """A central tombstone directory, also written; set the same value as ``tombstones`` in the
    precompute and synthesize configs so that new output directories honour it too."""
    precompute: list[str] = Field(default_factory=lambda: ["runs/demo"])
    """precompute OUTPUT roots: every ``scores/ds=…`` and ``errors/ds=…`` under each is
    republished without the members (a new generation, atomically)."""
    synthesize: list[str] = Field(default_factory=lambda: ["runs/demo/synth"])
    """synthesize output directories: ``labels/teacher=*/``, ``fused/``, ``errors/``, the commit
    markers (``_commits/``) and the black-box response cache (``cache/``)."""
    distill: list[str] = Field(default_factory=lambda: ["runs/demo/train/data"])
    """Distillation work dirs, or directories holding them (``examples/``, ``errors/``): every
    Parquet file with a ``member_id`` column under them."""
    curation: list[str] = Field(default_factory=lambda: ["runs/demo/curation"])
    """curate export/import output directories: ``review.csv`` (rows removed, every other byte
    kept), ``review.parquet`` and any other Parquet with ``member_id`` (``seed/``, ``rejected/``)."""
    tables: list[str] = Field(default_factory=lambda: ["runs/demo/validation"])
    """Other Parquet tables (files or directories) with a ``member_id`` column to clean, e.g.
    D_seed (``seed/current``) or ``validate --errors-out`` directories. Never a published
    precompute partition (those are under ``precompute``)."""
    reports: list[str] = Field(default_factory=lambda: ["runs/demo/report"])
    """Evaluation report directories (``evaluate --out``): a report lists example pairs by
    member id, so every file under them that names one of the members (``index.html``,
    ``metrics.json``) is deleted (rerun evaluate for it); Parquet files lose the rows."""
    gc_grace_s: float = Field(30.0, ge=0)
    """Seconds between publishing the cleaned generations and deleting the replaced ones (which
    still hold the members): readers that started before the switch can finish meanwhile. The
    deletion happens in this run either way."""
    lock: LockConfig = Field(default_factory=LockConfig)
    """The locks forget takes: precompute's ``scores/_locks/ds=<ds>.lock`` per partition and
    synthesize's ``_locks/synthesize.lock`` per output (a held one is skipped and reported;
    rerun forget after that run)."""

    SHORTCUTS: ClassVar[dict[str, str]] = {"--members": "members", "--out": "out"}

    def plan(self) -> list[str]:
        return [
            f"read the member ids of {self.members or '(--members FILE: required)'}; "
            "hash them with the key in $LANTERN_FORGET_KEY",
            "write the tombstone first: " + ", ".join(
                [f"{self.out}/_tombstones"] + ([self.tombstones] if self.tombstones else [])
                + [f"{r}/_tombstones" for r in [*self.precompute, *self.synthesize]]),
            *[f"precompute {r}: republish every scores/ds=… and errors/ds=… holding the members "
              "(locked per ds), then delete the replaced generations" for r in self.precompute],
            *[f"synthesize {r}: labels, fused, errors, commit markers, black-box cache (locked)"
              for r in self.synthesize],
            *[f"distill work dirs under {r}" for r in self.distill],
            *[f"curation sheets under {r}" for r in self.curation],
            *[f"table {r}" for r in self.tables],
            *[f"evaluation reports under {r}: delete files naming the members" for r in self.reports],
            f"write the deletion report under {self.out} (counts per table, no ids)",
        ]
