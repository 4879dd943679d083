"""Content fingerprints: what changes a pair's input_fingerprint, and what does not."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from lantern_batch.precompute.fingerprints import (
    content_hashes,
    pair_fingerprints,
    run_fingerprint,
    sample_hash,
)
from lantern_batch.schema import MEMBERS_SCHEMA, conform


def _members(**overrides) -> pa.Table:
    row = {
        "member_id": "m1",
        "headline": "Data engineer",
        "summary": "Builds batch pipelines.",
        "current_title": "Data Engineer",
        "seniority": "mid",
        "years_experience": 5.0,
        "skills": ["python", "spark"],
        "experience": [{"title": "Engineer", "company": "Acme", "start_year": 2019, "end_year": None,
                        "description": "Pipelines"}],
        "education": [{"degree": "BSc", "field": "CS", "school": "State"}],
        "location": "Seattle",
        "updated_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    row.update(overrides)
    return conform(pa.Table.from_pylist([row], schema=MEMBERS_SCHEMA), "members")


def test_content_hash_is_stable_and_sensitive_to_content():
    base = content_hashes(_members(), "members")[0]
    assert base == content_hashes(_members(), "members")[0]
    assert len(base) == 32
    assert content_hashes(_members(summary="Builds streaming pipelines."), "members")[0] != base
    assert content_hashes(_members(skills=["spark", "python"]), "members")[0] != base  # order matters
    assert content_hashes(_members(years_experience=5.5), "members")[0] != base
    nested = [{"title": "Engineer", "company": "Acme", "start_year": 2019, "end_year": 2024, "description": "Pipelines"}]
    assert content_hashes(_members(experience=nested), "members")[0] != base


def test_content_hash_ignores_updated_at_and_column_order():
    base = content_hashes(_members(), "members")[0]
    touched = _members(updated_at=datetime(2026, 6, 1, tzinfo=timezone.utc))
    assert content_hashes(touched, "members")[0] == base
    t = _members()
    reordered = conform(t.select(list(reversed(t.column_names))), "members")
    assert content_hashes(reordered, "members")[0] == base


def test_pair_fingerprint_depends_on_member_job_query_and_run():
    run_a = run_fingerprint({"classifier": "c1", "explainer": "e1"}, {"prompt_version": "v1"})
    run_b = run_fingerprint({"classifier": "c2", "explainer": "e1"}, {"prompt_version": "v1"})
    run_c = run_fingerprint({"classifier": "c1", "explainer": "e1"}, {"prompt_version": "v2"})
    assert len({run_a, run_b, run_c}) == 3
    fps = pair_fingerprints(["m", "m", "m2", "m", "m", None], ["j", "j", "j", "j2", "j", "j"],
                            [None, "", None, None, "q", None], run_a)
    assert fps[5] is None  # unknown member: no fingerprint
    assert len(set(fps[:5])) == 5  # null query differs from the empty query
    assert pair_fingerprints(["m"], ["j"], [None], run_b)[0] != fps[0]
    assert pair_fingerprints(["m"], ["j"], [None], run_a)[0] == fps[0]


def test_sample_hash_is_deterministic_uniform_and_seeded():
    m = [f"m{i}" for i in range(2000)]
    j = [f"j{i % 37}" for i in range(2000)]
    a = sample_hash(m, j, seed=0)
    assert a == sample_hash(m, j, seed=0)
    assert a != sample_hash(m, j, seed=1)
    assert all(0.0 <= x < 1.0 for x in a)
    assert 0.4 < sum(x < 0.5 for x in a) / len(a) < 0.6
