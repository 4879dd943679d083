"""A hand-written out-of-distribution set: members and postings in fields, places and wording the
synthetic world (:mod:`lantern_batch.world`) never writes — a marine biologist in Bergen, a
"Sr. SRE" in Bangalore, a "Member of Technical Staff", skills spelt "K8s" and "Kubernetes (EKS)",
locations such as "Greater Hartford" and "Remote - EU", free-text seniority ("Pleno", "Band 6").

Each member has three postings judged by a person in the spirit of docs/POLICY.md: one clearly
**High**, one **Medium** and one clearly **Low**, each label with a one-line reason. One YAML file
per member (``NN-<slug>.yaml`` in this folder)::

    member:    a members row (MEMBERS_SCHEMA columns; ``updated_at`` may be left out)
    query:     the search query of the member's three pairs (optional)
    postings:  three of {label: High | Medium | Low, reason: one line, job: a jobs row}

:func:`load_ood` turns the files into tables on the input contract's columns (not yet conformed:
``workplace_type`` and ``seniority`` are as written), plus the hand labels:

    ood = load_ood()
    ood.members, ood.jobs, ood.pairs   # pyarrow tables; conform with lantern_batch.schema.conform
    ood.labels                         # [HandLabel(member_id, job_id, label, reason, file)]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import yaml

from lantern_batch.schema import INPUT_SCHEMAS

OOD_DIR = Path(__file__).resolve().parent
UPDATED_AT = datetime(2026, 12, 1, tzinfo=timezone.utc)
"""``updated_at`` of every row that does not give its own."""


@dataclass(frozen=True)
class HandLabel:
    """A person's label for one (member, posting) pair."""

    member_id: str
    job_id: str
    label: str
    reason: str
    file: str


@dataclass(frozen=True)
class OodSet:
    members: pa.Table
    jobs: pa.Table
    pairs: pa.Table
    labels: list[HandLabel]
    files: list[str]


def ood_files(directory: Path = OOD_DIR) -> list[Path]:
    """The set's YAML files, in name order."""
    return sorted(directory.glob("*.yaml"))


def _row(raw: object, table: str, where: str) -> dict:
    """A row of ``table`` from a YAML mapping: unknown columns are an error (a typo would
    otherwise vanish); a missing ``updated_at`` is :data:`UPDATED_AT`."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping for a {table} row, got {type(raw).__name__}")
    columns = set(INPUT_SCHEMAS[table].names)
    unknown = sorted(set(raw) - columns)
    if unknown:
        raise ValueError(f"{where}: {table} row has unknown columns {unknown}")
    row = dict(raw)
    if "updated_at" in columns:
        row.setdefault("updated_at", UPDATED_AT)
    if row.get("years_experience") is not None:
        row["years_experience"] = float(row["years_experience"])
    return row


def load_ood(directory: Path = OOD_DIR) -> OodSet:
    """Read every file of the set into members, jobs and pairs tables and the hand labels.

    Raises:
        ValueError: a file is not shaped as the module doc says (names the file).
    """
    members, jobs, pairs, labels, names = [], [], [], [], []
    for path in ood_files(directory):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("postings"), list):
            raise ValueError(f"{path.name}: needs 'member' and a list of 'postings'")
        member = _row(doc.get("member"), "members", f"{path.name} member")
        members.append(member)
        names.append(path.name)
        for i, posting in enumerate(doc["postings"]):
            where = f"{path.name} posting {i + 1}"
            if not isinstance(posting, dict) or set(posting) != {"label", "reason", "job"}:
                raise ValueError(f"{where}: needs exactly 'label', 'reason' and 'job'")
            job = _row(posting["job"], "jobs", where)
            jobs.append(job)
            pairs.append({"member_id": member.get("member_id"), "job_id": job.get("job_id"),
                          "query": doc.get("query")})
            labels.append(HandLabel(str(member.get("member_id")), str(job.get("job_id")),
                                    str(posting["label"]), str(posting["reason"]), path.name))
    if not members:
        raise ValueError(f"no *.yaml files in {directory}")

    def table(rows: list[dict], name: str) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=INPUT_SCHEMAS[name])

    return OodSet(table(members, "members"), table(jobs, "jobs"), table(pairs, "pairs"), labels, names)
