"""Tombstones in the real precompute job (local Ray, a tiny fitted classifier, no explainer):
a member tombstoned after ds 1 never comes back on ds 2, not even through incremental reuse of a
previous partition forget has not cleaned yet; after ``forget`` the previous partition has no row
of theirs either, and everyone else's pairs are still reused unchanged.

    .venv/bin/python -m pytest -q tests/integration/test_forget_precompute.py
"""

from __future__ import annotations

import collections

import pyarrow.compute as pc
import pytest

from lantern_batch import io
from lantern_batch.forget import tombstones as tb
from lantern_batch.forget.config import ForgetConfig
from lantern_batch.forget.job import run as forget
from lantern_batch.precompute.config import PrecomputeConfig
from lantern_batch.precompute.job import run as precompute
from tests.fixtures.forget import KEY
from tests.integration.test_precompute_pipeline import fit_classifier

pytestmark = pytest.mark.integration


def _cfg(world, out, classifier, ds: str) -> PrecomputeConfig:
    return PrecomputeConfig.model_validate({
        "inputs": {"members": str(world / "members"), "jobs": str(world / "jobs"), "pairs": str(world / "pairs")},
        "out": str(out), "ds": ds, "incremental": True,
        "classifier": {"ref": str(classifier), "batch_size": 16, "rows_per_call": 64, "torch_threads": 2},
        "explainer": {"enabled": False},
        "ray": {"num_cpus": 8, "object_store_memory": 500_000_000, "log_to_driver": False},
    })


def _partition(out, kind: str, ds: str):
    return io.read_published(str(out / kind / f"ds={ds}"))


def test_a_forgotten_member_never_comes_back(ray_local, tiny_world, tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(tb.KEY_ENV, KEY)
    classifier = fit_classifier(tiny_bert_dir, tiny_world, tmp_path / "classifier")
    out = tmp_path / "pre"
    assert precompute(_cfg(tiny_world, out, classifier, "2026-11-24")) == 0
    first = _partition(out, "scores", "2026-11-24")
    member, n = collections.Counter(first.column("member_id").to_pylist()).most_common(1)[0]

    # Tombstoned but not yet cleaned (a forget that stopped after its first step): the next day
    # must not bring the member back, neither scored nor reused from the previous partition.
    key = KEY.encode()
    tb.write_tombstone(str(out / tb.TOMBSTONE_DIR), [tb.member_hash(key, member)], tb.key_id(key), "manual")
    assert precompute(_cfg(tiny_world, out, classifier, "2026-11-25")) == 0
    second = _partition(out, "scores", "2026-11-25")
    errors = _partition(out, "errors", "2026-11-25")
    assert member not in second.column("member_id").to_pylist()
    assert member not in errors.column("member_id").to_pylist()
    forgotten = errors.filter(pc.equal(errors.column("reason"), tb.FORGOTTEN))
    assert forgotten.num_rows == n
    assert forgotten.column("member_id").null_count == forgotten.column("job_id").null_count == n
    man, _ = io.published_files(str(out / "scores" / "ds=2026-11-25"))
    c = man["counts"]
    assert c["rows_scored"] == 0 and c["rows_reused"] == first.num_rows - n  # everyone else reused
    assert c["errors_by_reason"]["pairs/forget/forgotten"] == n and c["conservation_ok"]
    assert member in _partition(out, "scores", "2026-11-24").column("member_id").to_pylist()

    # forget cleans the earlier partition; a later day reuses the cleaned one unchanged.
    request = tmp_path / "request.txt"
    request.write_text(member + "\n")
    cfg = ForgetConfig(members=str(request), out=str(tmp_path / "forget"), precompute=[str(out)],
                       synthesize=[], distill=[], curation=[], tables=[], reports=[], gc_grace_s=0)
    assert forget(cfg) == 0
    for ds in ("2026-11-24", "2026-11-25"):
        assert member not in _partition(out, "scores", ds).column("member_id").to_pylist()
    cleaned = _partition(out, "scores", "2026-11-24")
    keep = first.filter(pc.invert(pc.equal(first.column("member_id"), member)))
    assert sorted(cleaned.to_pylist(), key=str) == sorted(keep.to_pylist(), key=str)
    assert precompute(_cfg(tiny_world, out, classifier, "2026-11-26")) == 0
    third = _partition(out, "scores", "2026-11-26")
    assert member not in third.column("member_id").to_pylist() and third.num_rows == first.num_rows - n
