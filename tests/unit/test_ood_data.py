"""The hand-written out-of-distribution set (tests/data/ood): it loads, passes the input contract
with no error rows, holds at least 20 members each with exactly one High, one Medium and one Low
posting (each with a one-line reason), and shares no id, title or place with the synthetic world.
bench/quality.py (``--only ood``) measures the classifier and the policy on it."""

from __future__ import annotations

from collections import Counter

import pytest

from lantern_batch.io import read_table
from lantern_batch.schema import (
    FIT_LABELS,
    INPUT_SCHEMAS,
    SENIORITY_LEVELS,
    UNKNOWN_WORKPLACE,
    WORKPLACE_TYPES,
    conform,
    row_reasons,
    validate_table,
)
from lantern_batch.taxonomy import TITLE_INDEX, city_of
from lantern_batch.world import GENERIC_EARLY_ROLES
from tests.data.ood import load_ood, ood_files

MIN_MEMBERS = 20


@pytest.fixture(scope="module")
def ood():
    return load_ood()


def _titles(members, jobs) -> set[str]:
    """Every title in the tables, lower case: current, past roles and job titles."""
    out = {t for t in members.column("current_title").to_pylist() if t}
    out |= {t for t in jobs.column("title").to_pylist() if t}
    for roles in members.column("experience").to_pylist():
        out |= {r["title"] for r in roles or () if r and r.get("title")}
    return {t.strip().lower() for t in out}


def test_one_file_per_member(ood):
    assert len(ood.files) == len(ood_files()) == ood.members.num_rows >= MIN_MEMBERS


@pytest.mark.parametrize("table", ["members", "jobs", "pairs"])
def test_input_contract_has_no_error_rows(ood, table):
    raw = getattr(ood, table)
    assert set(raw.column_names) == set(INPUT_SCHEMAS[table].names)
    conformed = conform(raw, table)
    reasons = [r for r in row_reasons(conformed, table) if r is not None]
    assert reasons == []
    result = validate_table(raw, table)  # duplicates too
    assert result.counts == {"good": raw.num_rows}


def test_three_postings_per_member_one_of_each_label(ood):
    members = ood.members.column("member_id").to_pylist()
    assert len(members) >= MIN_MEMBERS
    by_member: dict[str, list[str]] = {m: [] for m in members}
    for hand in ood.labels:
        assert hand.label in FIT_LABELS, hand
        assert hand.reason.strip() and "\n" not in hand.reason.strip(), hand
        by_member[hand.member_id].append(hand.label)
    for member, labels in by_member.items():
        assert sorted(labels) == sorted(FIT_LABELS), member
    # Every label names a pair of the tables, and every pair has one label.
    pairs = list(zip(ood.pairs.column("member_id").to_pylist(), ood.pairs.column("job_id").to_pylist(),
                     strict=True))
    assert sorted(pairs) == sorted((h.member_id, h.job_id) for h in ood.labels)
    assert set(ood.jobs.column("job_id").to_pylist()) == {h.job_id for h in ood.labels}


def test_free_form_wording_is_kept(ood):
    """Seniority and workplace wording outside the enums, read by conform as the contract says."""
    seniority = [s for s in ood.members.column("seniority").to_pylist() + ood.jobs.column("seniority").to_pylist()
                 if s is not None]
    assert sum(s not in SENIORITY_LEVELS for s in seniority) >= 20
    raw = ood.jobs.column("workplace_type").to_pylist()
    conformed = conform(ood.jobs, "jobs").column("workplace_type").to_pylist()
    assert sum(w not in WORKPLACE_TYPES for w in raw) >= 20
    assert set(conformed) <= {*WORKPLACE_TYPES, UNKNOWN_WORKPLACE}
    assert UNKNOWN_WORKPLACE in conformed  # "FIFO (8 days on / 6 off)", "Presencial"


def test_no_place_of_the_generator(ood):
    """No member or job location is one of the taxonomy's cities as the generator writes them."""
    places = ood.members.column("location").to_pylist() + ood.jobs.column("location").to_pylist()
    assert all(p and city_of(p) is None for p in places), [p for p in places if city_of(p)]


def test_shares_no_ids_or_titles_with_a_generated_world(ood, tiny_world):
    members, jobs = read_table(str(tiny_world / "members")), read_table(str(tiny_world / "jobs"))
    world_ids = set(members.column("member_id").to_pylist()) | set(jobs.column("job_id").to_pylist())
    ours = ood.members.column("member_id").to_pylist() + ood.jobs.column("job_id").to_pylist()
    assert len(set(ours)) == len(ours)
    assert not world_ids & set(ours)
    # The generator's whole title vocabulary, not only this world's draw.
    world_titles = _titles(members, jobs) | set(TITLE_INDEX) | {t.lower() for t in GENERIC_EARLY_ROLES}
    assert not world_titles & _titles(ood.members, ood.jobs), sorted(world_titles & _titles(ood.members, ood.jobs))


def test_loader_refuses_unknown_columns(tmp_path):
    (tmp_path / "01-x.yaml").write_text(
        "member: {member_id: a, current_title: B, skils: [x]}\n"
        "postings: []\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown columns"):
        load_ood(tmp_path)


def test_a_label_per_member_is_balanced(ood):
    assert Counter(h.label for h in ood.labels) == {label: ood.members.num_rows for label in FIT_LABELS}
