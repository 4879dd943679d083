"""Seniority from real-world wording (lantern_batch.titles): the field outside the enum, the
title when the field is missing or unreadable, unknown kept unknown; and the synthetic world,
whose rows always hold an enum value, reads exactly as before in every output."""

from __future__ import annotations

import hashlib
import json

import pytest

from lantern_batch import policy, prompts, quality
from lantern_batch.io import read_table
from lantern_batch.schema import SENIORITY_LEVELS, WORKPLACE_TYPES

# ---------------------------------------------------------------------------------------------
# Real-world strings


@pytest.mark.parametrize("title, level", [
    ("Junior Data Analyst", "entry"),
    ("Jr. Developer", "entry"),
    ("Graduate Software Engineer", "entry"),
    ("Entry-Level Accountant", "entry"),
    ("Staff Accountant", "entry"),  # accounting's first rung, as the taxonomy writes it
    ("Mid-level Backend Developer", "mid"),
    ("Sr. Software Engineer", "senior"),
    ("Sr Engineer", "senior"),
    ("Senior", "senior"),
    ("Senior Product Manager", "senior"),  # a product manager manages no one: "Senior" decides
    ("Staff Engineer", "lead"),
    ("Senior Staff Software Engineer", "lead"),
    ("Principal Engineer", "lead"),
    ("Lead Data Scientist", "lead"),
    ("Tech Lead, Payments", "lead"),
    ("Team Leader - Warehouse", "lead"),
    ("Engineering Manager", "manager"),
    ("Senior Engineering Manager", "manager"),
    ("Shift Supervisor", "manager"),
    ("Associate Director, Clinical Operations", "manager"),
    ("Assistant Principal", "manager"),
    ("Head of Data", "director"),
    ("Head of People & Culture", "director"),
    ("Director of Engineering", "director"),
    ("Senior Director, Product", "director"),
    ("Principal", "director"),  # a school's head, as the taxonomy writes it
    ("Elementary School Principal", "director"),
    ("Headteacher", "director"),
    ("VP Engineering", "executive"),
    ("VP of Design", "executive"),
    ("Vice President, Sales", "executive"),
    ("SVP Marketing", "executive"),
    ("Chief Technology Officer", "executive"),
    ("CTO", "executive"),
    ("Co-Founder & CEO", "executive"),
    ("Managing Director", "executive"),
    ("Software Engineering Intern", "intern"),
    ("Summer Intern - Marketing", "intern"),
    ("Senior Member of Technical Staff", "senior"),
    ("Principal Member of Technical Staff", "lead"),
])
def test_levels_from_titles(title, level):
    from lantern_batch.titles import seniority_from_title

    assert seniority_from_title(title) == level


@pytest.mark.parametrize("title", [
    "Member of Technical Staff",  # a flat title: its "Staff" names no level
    "Software Engineer", "Data Engineer", "Registered Nurse", "Teacher",  # bare titles
    "Account Executive", "Executive Assistant",  # "Executive" here is no rank
    "Product Manager", "Account Manager", "Project Manager",  # individual contributors
    "Lead Generation Specialist", "Chief of Staff", "Staff Nurse", "Head Nurse",
    "Associate", "Associate Software Engineer", "Software Engineer II", "L6 Engineer",
    "Internal Auditor", "Internship Coordinator",
    "Werkstudent", "Werkstudent Data Science", "", "   ", None,
])
def test_titles_that_name_no_level_stay_unknown(title):
    from lantern_batch.titles import seniority_from_title

    assert seniority_from_title(title) is None


@pytest.mark.parametrize("value, level", [
    ("Sr", "senior"), ("Sr.", "senior"), ("SENIOR", "senior"), ("Senior ", "senior"),
    ("Mid-level", "mid"), ("Mid Level", "mid"), ("Intermediate", "mid"),
    ("Entry Level", "entry"), ("entry-level", "entry"), ("Junior", "entry"), ("Graduate", "entry"),
    ("Internship", "intern"),
    ("Mid-Senior level", "senior"), ("mid-senior level", "senior"),  # LinkedIn's scale
    ("Senior Staff", "lead"), ("Staff", "lead"), ("Principal", "lead"), ("Lead", "lead"),
    ("Manager", "manager"), ("Director", "director"), ("Director level", "director"),
    ("Exec", "executive"), ("Executive", "executive"), ("C-level", "executive"), ("VP", "executive"),
    ("Vice President", "executive"),
])
def test_free_text_seniority_fields(value, level):
    from lantern_batch.titles import seniority_from_field

    assert seniority_from_field(value) == level


@pytest.mark.parametrize("value", ["Associate", "L7", "E5", "wizard", "grand master", "Werkstudent", "N/A",
                                   "Not Applicable", "other", "", "  ", None])
def test_unreadable_seniority_fields_stay_unknown(value):
    from lantern_batch.titles import seniority_from_field

    assert seniority_from_field(value) is None


def test_field_first_then_title_then_unknown():
    from lantern_batch.titles import job_seniority, member_seniority, normalise_seniority

    assert normalise_seniority("Sr", "Junior Analyst") == "senior"  # a readable field wins
    assert normalise_seniority(None, "Head of Data") == "director"  # missing: the title
    assert normalise_seniority("L7", "Staff Engineer") == "lead"  # unreadable: the title
    assert normalise_seniority("Werkstudent", "Werkstudent") is None  # neither: unknown
    assert normalise_seniority(None, None) is None
    assert member_seniority({"seniority": None, "current_title": "VP Engineering"}) == "executive"
    assert job_seniority({"seniority": "", "title": "Sr. Software Engineer"}) == "senior"
    assert job_seniority({}) is None


def test_an_enum_value_is_itself_whatever_the_title():
    from lantern_batch.titles import normalise_seniority, seniority_from_field

    for level in SENIORITY_LEVELS:
        assert seniority_from_field(level) == level
        for title in (None, "", "VP Engineering", "Software Engineering Intern", "Head of Data", "x" * 500):
            assert normalise_seniority(level, title) == level


def test_levels_in_prompts_policy_and_validator_follow_the_normaliser():
    member = {"member_id": "m", "current_title": "Sr. Data Scientist", "seniority": None, "years_experience": 7.0,
              "skills": ["Python"], "location": "Austin, TX"}
    job = {"job_id": "j", "title": "Head of Data", "seniority": "Director level", "required_skills": ["Python"],
           "location": "Austin, TX", "workplace_type": "flexible", "description": "d"}
    text = prompts.classifier_text(member, job)
    assert "Job seniority: director\n" in text and "Member seniority: senior, 7 years\n" in text
    assert "level 3 below the job" in text and "years 7 vs 10 usual for director" in text
    assert "Job location: Austin, TX\n" in text  # an unknown workplace type is left out
    assert policy.seniority_gap(member, job) == -3
    assert policy.score_pair(member, job).dimension_scores["seniority"] == 0
    ok = "A Low fit: their senior level is three levels below the director level of this role."
    assert quality.check_explanation(ok, "Low", member, job).ok
    wrong = "A Low fit: their mid level is two levels below the lead level of this role."
    assert "wrong_seniority" in quality.check_explanation(wrong, "Low", member, job).reasons
    for version in prompts.PROMPT_VERSIONS:
        user = prompts.teacher_messages(member, job, None, version)[-1]["content"]
        assert "director" in user and "flexible" not in user and "unknown" not in user
    explained = policy.explain(member, job, policy.score_pair(member, job))
    assert "unknown" not in explained


# ---------------------------------------------------------------------------------------------
# The synthetic world reads exactly as before

# SHA-256 of :func:`_world_outputs` over every fourth pair of the ``tiny_world`` fixture (100 pairs
# of 60 members and 30 jobs: members at every level, jobs at every level but executive, every
# workplace type), computed with the code before seniority and workplace types were normalised.
# The generator writes enum values only, so every output must stay the same; a change here means
# a released prompt or classifier-text version changed its output for the world the models were
# trained on.
# (Last changed by adding teacher v4 and explainer e3; with them left out the hash is the one
# before: d4607da3…)
WORLD_GOLDEN = "946cdae499e1310cfd40fa4d16fea2b390a844a011ac53dc33a612c5d4c75e58"

_LEVEL_TEXTS = ("A {label} fit: their {a} level meets the {b} level of the role, with 3 years.",
                "A {label} fit: at {a} level they are two levels below the {b} level asked for.")


def _world_outputs(root, step: int = 4) -> str:
    """Every output built from every ``step``-th pair of a world, hashed: classifier text (with and
    without free text, and the gazetteer facts), each teacher and explainer prompt version,
    the policy's scores, label and explanation, the validator on that explanation and on level
    statements for every level, and the engagement teacher's seniority gap."""
    members = {r["member_id"]: r for r in read_table(str(root / "members"), table="members").to_pylist()}
    jobs = {r["job_id"]: r for r in read_table(str(root / "jobs"), table="jobs").to_pylist()}
    digest = hashlib.sha256()
    for pair in read_table(str(root / "pairs"), table="pairs").to_pylist()[::step]:
        m, j, q = members[pair["member_id"]], jobs[pair["job_id"]], pair["query"]
        res = policy.score_pair(m, j)
        text = policy.explain(m, j, res, seed=0)
        out = {
            "classifier": prompts.classifier_text(m, j, q),
            "evidence": prompts.classifier_text(m, j, q, free_text=False),
            "facts": prompts._pair_facts(m, j, gazetteer=True),
            "teacher": {v: prompts.teacher_messages(m, j, q, v) for v in sorted(prompts.PROMPT_VERSIONS)},
            "explainer": {v: prompts.explainer_messages(m, j, q, res.fit_label, version=v)
                          for v in sorted(prompts.EXPLAINER_PROMPT_VERSIONS)},
            "policy": [res.dimension_scores, res.total, res.fit_label, res.matched_skills, res.missing_skills],
            "explanation": text,
            "gap": policy.seniority_gap(m, j),
            "checks": [quality.check_explanation(text, res.fit_label, m, j).reasons]
            + [quality.check_explanation(t.format(label=res.fit_label, a=a, b=b), res.fit_label, m, j).reasons
               for t in _LEVEL_TEXTS for a, b in zip(SENIORITY_LEVELS, SENIORITY_LEVELS[2:] + SENIORITY_LEVELS[:2],
                                                      strict=True)],
        }
        digest.update(json.dumps(out, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def test_every_world_value_is_its_own_normal_form(tiny_world):
    from lantern_batch.schema import normalise_workplace
    from lantern_batch.titles import job_seniority, member_seniority

    members = read_table(str(tiny_world / "members"), table="members").to_pylist()
    jobs = read_table(str(tiny_world / "jobs"), table="jobs").to_pylist()
    assert all(member_seniority(m) == m["seniority"] for m in members)
    assert all(job_seniority(j) == j["seniority"] for j in jobs)
    assert all(normalise_workplace(j["workplace_type"]) == j["workplace_type"] in WORKPLACE_TYPES for j in jobs)
    assert {m["seniority"] for m in members} | {j["seniority"] for j in jobs} <= set(SENIORITY_LEVELS)


def test_world_outputs_are_unchanged(tiny_world):
    assert _world_outputs(tiny_world) == WORLD_GOLDEN
