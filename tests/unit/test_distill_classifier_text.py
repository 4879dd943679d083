"""The classifier's input text (:func:`lantern_batch.prompts.classifier_text`, shared by training
and precompute): every field the fit policy reads survives MiniLM's 160-token limit, synonyms
are folded in the skills-listed line, and no label or score appears in the text."""

import re

import pytest

from lantern_batch import io
from lantern_batch.prompts import classifier_text


def _member(**over):
    row = dict(member_id="m1", headline="Builder of things", summary="word " * 400,
               current_title="Data Engineer", seniority="senior", years_experience=9.0,
               skills=["JS", "Python", "SQL"],
               experience=[dict(title="Data Engineer", company="A", start_year=2019, end_year=None, description="x " * 200),
                           dict(title="Data Analyst", company="B", start_year=2015, end_year=2019, description="y " * 200),
                           dict(title="Nurse", company="C", start_year=2010, end_year=2015, description="z")],
               education=[dict(degree="BSc", field="Computer Science", school="S")],
               location="Austin, TX", updated_at=None)
    row.update(over)
    return row


def _job(**over):
    row = dict(job_id="j1", title="Data Engineer", company="Co", description="Requirements:\n- SQL\n" * 80,
               seniority="mid", required_skills=["JavaScript", "SQL", "Spark", "sql"], location="Toronto, ON",
               workplace_type="onsite", updated_at=None)
    row.update(over)
    return row


def test_evidence_comes_first_and_free_text_fills_the_rest():
    text = classifier_text(_member(), _job(), "data engineer", max_chars=900)
    assert len(text) <= 900 and text.startswith("Query: data engineer\n")
    evidence = text.split("\nJob description:")[0]
    for line in ("Job location: Toronto, ON, onsite", "Member location: Austin, TX", "Member seniority: senior, 9 years",
                 "Roles: Data Engineer; Data Analyst; Nurse", "Education: BSc Computer Science"):
        assert line in evidence
    # "JS" is "JavaScript"; "sql" repeats "SQL": 2 of 3 distinct required skills.
    assert "Required skills listed: 2 of 3 (JavaScript, SQL)" in evidence
    facts = next(line for line in evidence.splitlines() if line.startswith("Facts: "))
    for fact in ("level 1 above the job", "years 9 vs 2 usual for mid", "locations different countries",
                 "roles in the job's field 1 of 3"):
        assert fact in facts
    remote_same_city = classifier_text(_member(location="Toronto, ON"), _job(workplace_type="remote"))
    assert "locations same city" in remote_same_city and "Job location: Toronto, ON, remote" in remote_same_city
    assert "Job description:" in text  # the tail is filled up to the cap
    assert "Required skills listed" not in classifier_text(_member(), _job(required_skills=[]))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from lantern_batch.world import GenerateConfig, generate

    out = tmp_path_factory.mktemp("world")
    generate(GenerateConfig(out=str(out), num_members=120, num_jobs=40, num_pairs=400, num_seed=0, seed=3))
    members = {r["member_id"]: r for r in io.read_table(str(out / "members")).to_pylist()}
    jobs = {r["job_id"]: r for r in io.read_table(str(out / "jobs")).to_pylist()}
    return members, jobs, io.read_table(str(out / "pairs")).to_pylist()


def test_policy_evidence_survives_minilms_160_tokens_and_no_label_leaks(world):
    from transformers import AutoTokenizer

    from lantern_batch.models import resolve

    tok = AutoTokenizer.from_pretrained(str(resolve("bundled:minilm")))
    members, jobs, pairs = world
    for p in pairs:
        m, j = members[p["member_id"]], jobs[p["job_id"]]
        text = classifier_text(m, j, p.get("query"), max_chars=900)
        seen = tok.decode(tok(text, truncation=True, max_length=160)["input_ids"], skip_special_tokens=True)
        # What the policy reads: both locations, role titles, seniority, the skills overlap,
        # education (the member's own skill list comes last: the overlap line carries it).
        for needle in ("job location", "member location", "member seniority", "facts", "roles"):
            assert needle in seen, (needle, p)
        if j["required_skills"]:
            assert "required skills listed" in seen
        assert "education" in seen or not m["education"]
        assert not re.search(r"\b(high|medium|low) fit\b|\bfit label\b|\bscore", text, re.I)
