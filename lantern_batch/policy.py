"""The written fit policy (docs/POLICY.md) as code: per-dimension scores, total, label, and a
reviewer-style explanation.

Pure Python (no numpy, no pyarrow), so any stage can call it per row. Inputs are rows as
``pyarrow.Table.to_pylist()`` yields them for :data:`lantern_batch.schema.MEMBERS_SCHEMA` /
:data:`~lantern_batch.schema.JOBS_SCHEMA`; missing or null fields are tolerated.

    result = score_pair(member, job)        # PolicyResult(dimension_scores, total, fit_label)
    text = explain(member, job, result, seed=7)
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from lantern_batch.schema import DIMENSIONS, FIT_LABELS, UNKNOWN_WORKPLACE, normalise_workplace
from lantern_batch.taxonomy import (
    DEGREE_LEVEL,
    FAMILY_BY_NAME,
    MIN_YEARS,
    SENIORITY_RANK,
    canonical_skill,
    city_of,
    families_related,
    family_of_title,
)
from lantern_batch.titles import job_seniority, member_seniority

#: Dimension weights (sum to 1); docs/POLICY.md.
WEIGHTS: dict[str, float] = {
    "skills": 0.30,
    "seniority": 0.20,
    "experience": 0.15,
    "domain": 0.20,
    "location": 0.10,
    "education": 0.05,
}
HIGH_THRESHOLD = 0.75
MEDIUM_THRESHOLD = 0.50
MAX_SCORE = 4.0

assert tuple(WEIGHTS) == DIMENSIONS and abs(sum(WEIGHTS.values()) - 1.0) < 1e-9


def pair_id(member_id: str, job_id: str) -> str:
    """Stable id of a (member, job) pair: the first 16 hex characters of sha1(member \\x1f job)."""
    return hashlib.sha1(f"{member_id}\x1f{job_id}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PolicyResult:
    """The policy's judgement of one pair."""

    dimension_scores: dict[str, float]
    """Score 0-4 per dimension, keys in :data:`DIMENSIONS` order."""
    total: float
    """Weighted total in [0, 1]."""
    fit_label: str
    """High, Medium or Low (after the hard rules)."""
    matched_skills: tuple[str, ...] = field(default=(), compare=False)
    """Required skills (job's wording) the member lists."""
    missing_skills: tuple[str, ...] = field(default=(), compare=False)
    """Required skills the member does not list."""


# ---------------------------------------------------------------------------------------------
# Helpers other stages use as features


def _canon_set(skills: Iterable[str | None] | None) -> set[str]:
    return {c for c in (canonical_skill(s) for s in (skills or ())) if c}


def skill_overlap(member_skills: Iterable[str | None] | None, job_skills: Iterable[str | None] | None) -> float:
    """Share of the job's (distinct, normalised) required skills that the member lists, in [0, 1].

    Returns 0.0 when the job lists no skills (the policy then scores skills 2, neutral).
    """
    required = _canon_set(job_skills)
    if not required:
        return 0.0
    return len(required & _canon_set(member_skills)) / len(required)


def seniority_gap(member: dict, job: dict) -> int:
    """Member rank minus job rank on :data:`~lantern_batch.schema.SENIORITY_LEVELS` (positive:
    the member is more senior). 0 when either level is missing or unknown. Levels are read by
    :mod:`lantern_batch.titles` ("Sr" is senior; a missing level is the one the title names)."""
    m = SENIORITY_RANK.get(member_seniority(member) or "")
    j = SENIORITY_RANK.get(job_seniority(job) or "")
    if m is None or j is None:
        return 0
    return m - j


def member_family(member: dict) -> str | None:
    """Role family of the member's current title; else the most frequent family of past titles."""
    fam = family_of_title(member.get("current_title"))
    if fam:
        return fam
    counts: dict[str, int] = {}
    for role in member.get("experience") or ():
        f = family_of_title((role or {}).get("title"))
        if f:
            counts[f] = counts.get(f, 0) + 1
    return max(counts, key=lambda k: (counts[k], k)) if counts else None


# ---------------------------------------------------------------------------------------------
# Dimensions


def _score_skills(member: dict, job: dict) -> tuple[float, tuple[str, ...], tuple[str, ...]]:
    member_set = _canon_set(member.get("skills"))
    seen: set[str] = set()
    matched, missing = [], []
    for raw in job.get("required_skills") or ():
        canon = canonical_skill(raw)
        if not canon or canon in seen:
            continue
        seen.add(canon)
        (matched if canon in member_set else missing).append(raw.strip())
    if not seen:
        return 2.0, (), ()
    share = len(matched) / len(seen)
    if share >= 0.8:
        score = 4.0
    elif share >= 0.6:
        score = 3.0
    elif share >= 0.4:
        score = 2.0
    elif matched:
        score = 1.0
    else:
        score = 0.0
    return score, tuple(matched), tuple(missing)


def _known_levels(member: dict, job: dict) -> bool:
    return member_seniority(member) is not None and job_seniority(job) is not None


def _score_seniority(member: dict, job: dict) -> float:
    if not _known_levels(member, job):
        return 2.0
    gap = seniority_gap(member, job)
    if gap == 0:
        return 4.0
    if abs(gap) == 1:
        return 3.0
    if gap == 2:
        return 2.0
    if gap == -2:
        return 1.0
    return 0.0


def _score_experience(member: dict, job: dict, job_family: str | None) -> float:
    years = member.get("years_experience")
    need = MIN_YEARS.get(job_seniority(job) or "", 0.0)
    if years is None:
        years_pts = 1
    elif years >= need:
        years_pts = 2
    elif years >= 0.6 * need:
        years_pts = 1
    else:
        years_pts = 0
    roles = [r for r in (member.get("experience") or ()) if r]
    relevant = sum(1 for r in roles if job_family and family_of_title(r.get("title")) == job_family)
    if roles and relevant * 2 >= len(roles):
        rel_pts = 2
    elif relevant:
        rel_pts = 1
    else:
        rel_pts = 0
    return float(years_pts + rel_pts)


def _score_domain(member: dict, job_family: str | None, m_family: str | None, skills_score: float) -> float:
    if m_family is None or job_family is None:
        return 1.0
    if m_family == job_family:
        return 4.0
    if any(family_of_title((r or {}).get("title")) == job_family for r in member.get("experience") or ()):
        return 3.0
    if families_related(m_family, job_family):
        return 2.0
    return 1.0 if skills_score > 0 else 0.0


def _workplace(job: dict) -> str | None:
    """The job's workplace type (:func:`~lantern_batch.schema.normalise_workplace`): an unknown or
    missing one is not remote, so location counts as for an onsite or hybrid role."""
    raw = job.get("workplace_type")
    return normalise_workplace(raw if isinstance(raw, str) else None)


def _score_location(member: dict, job: dict) -> float:
    mc, jc = city_of(member.get("location")), city_of(job.get("location"))
    workplace = _workplace(job)
    if mc is None or jc is None:
        return 2.0
    if workplace == "remote":
        return 4.0 if mc.country == jc.country else 2.0
    if mc.name == jc.name:
        return 4.0
    if mc.metro == jc.metro:
        return 3.0
    if mc.country == jc.country:
        return 1.0
    return 0.0


def _score_education(member: dict, job_family: str | None) -> float:
    fam = FAMILY_BY_NAME.get(job_family) if job_family else None
    entries = [e for e in (member.get("education") or ()) if e]
    if fam is None:
        return 2.0
    relevant = {f.lower() for f in fam.degree_fields}
    related = {f.lower() for r in fam.related for f in FAMILY_BY_NAME[r].degree_fields} - relevant
    best = 0.0
    for e in entries:
        fld = (e.get("field") or "").strip().lower()
        level = DEGREE_LEVEL.get((e.get("degree") or "").strip(), 3)
        if fld in relevant:
            best = max(best, 4.0 if level >= 3 else 3.0)
        elif fld in related:
            best = max(best, 2.0)
        else:
            best = max(best, 1.0)
    if best < 2.0 and not fam.degree_required:
        return 2.0
    return best


def score_pair(member: dict, job: dict) -> PolicyResult:
    """Score one pair by docs/POLICY.md.

    Args:
        member: a members row (``MEMBERS_SCHEMA`` columns).
        job: a jobs row (``JOBS_SCHEMA`` columns).

    Returns:
        Per-dimension scores (0-4), the weighted total in [0, 1] and the fit label.
    """
    job_family = family_of_title(job.get("title"))
    m_family = member_family(member)
    skills, matched, missing = _score_skills(member, job)
    scores = {
        "skills": skills,
        "seniority": _score_seniority(member, job),
        "experience": _score_experience(member, job, job_family),
        "domain": _score_domain(member, job_family, m_family, skills),
        "location": _score_location(member, job),
        "education": _score_education(member, job_family),
    }
    total = sum(WEIGHTS[d] * scores[d] / MAX_SCORE for d in DIMENSIONS)
    total = round(total, 6)
    label = label_for(scores, total)
    return PolicyResult(scores, total, label, matched, missing)


def label_for(scores: dict[str, float], total: float) -> str:
    """Thresholds, then the hard rules of docs/POLICY.md."""
    if total >= HIGH_THRESHOLD:
        label = "High"
    elif total >= MEDIUM_THRESHOLD:
        label = "Medium"
    else:
        label = "Low"
    if scores["skills"] == 0 or scores["domain"] == 0:
        return "Low"
    if label == "High" and (scores["skills"] < 3 or scores["seniority"] < 3):
        label = "Medium"
    if label == "High" and scores["location"] == 0:
        label = "Medium"
    assert label in FIT_LABELS
    return label


# ---------------------------------------------------------------------------------------------
# Explanation


def _join(items: Iterable[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


_FAMILY_DISPLAY = {"operations_logistics": "operations and logistics"}
_COUNTRY_NAME = {"US": "the United States", "UK": "the United Kingdom", "CA": "Canada"}
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}


def _family_label(name: str | None) -> str:
    if name is None:
        return "an unrelated field"
    return _FAMILY_DISPLAY.get(name, name.replace("_", " "))


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_OPENINGS = {
    "High": (
        "High fit: the profile lines up well with this {job_title} role at {company}.",
        "This is a High fit for the {job_title} opening at {company}.",
        "I would rate this a High fit; the {job_title} role at {company} matches the profile closely.",
        "Strong candidate for the {job_title} position, so a High fit.",
    ),
    "Medium": (
        "Medium fit: there is real overlap with the {job_title} role at {company}, with some gaps.",
        "This is a Medium fit for the {job_title} opening at {company}.",
        "A partial match for the {job_title} position, so I rate it Medium fit.",
        "Medium fit overall; the profile covers part of what {company} asks for in this {job_title} role.",
    ),
    "Low": (
        "Low fit: the profile does not match what this {job_title} role at {company} needs.",
        "This is a Low fit for the {job_title} opening at {company}.",
        "I would rate this a Low fit for the {job_title} position.",
        "Weak match for the {job_title} role at {company}, so Low fit.",
    ),
}


def _skills_sentence(rng: random.Random, result: PolicyResult) -> str:
    matched, missing = list(result.matched_skills[:4]), list(result.missing_skills[:3])
    if not matched and not missing:
        return rng.choice((
            "The posting names no specific required skills, so skills neither help nor hurt.",
            "No required skills are listed in the posting, so skills count as neutral.",
        ))
    if matched and not missing:
        return rng.choice((
            "They list every required skill, including {m}.",
            "All the required skills are on the profile ({m}).",
        )).format(m=_join(matched))
    if not matched:
        return rng.choice((
            "None of the required skills ({x}) appear on the profile.",
            "The profile shows none of the required skills, such as {x}.",
        )).format(x=_join(missing))
    return rng.choice((
        "They bring {m} but do not list {x}.",
        "On skills, {m} {match} the requirements, while {x} {are} missing.",
        "The profile covers {m}; {x} {are} not mentioned.",
    )).format(m=_join(matched), x=_join(missing), are="is" if len(missing) == 1 else "are",
              match="matches" if len(matched) == 1 else "match")


def _seniority_sentence(rng: random.Random, member: dict, job: dict) -> str | None:
    m_level, j_level = member_seniority(member), job_seniority(job)
    if m_level is None or j_level is None:
        return None
    gap = seniority_gap(member, job)
    years = member.get("years_experience")
    need = MIN_YEARS[j_level]
    years_note = ""
    if years is not None and years < need:
        years_note = f", with {years:.0f} years against the {need:.0f} the role expects"
    if gap == 0:
        return rng.choice((
            "Their {m} level matches the {j} level of the role{y}.",
            "Seniority is right: {am} {m} profile for {aj} {j} role{y}.",
        )).format(m=m_level, j=j_level, y=years_note, am=_article(m_level), aj=_article(j_level))
    steps = f"{_NUMBER_WORDS.get(abs(gap), abs(gap))} level{'s' if abs(gap) > 1 else ''}"
    if gap < 0:
        return rng.choice((
            "At {m} level they are {s} below the {j} level asked for{y}.",
            "The role is {j}, {s} above their current {m} level{y}.",
        )).format(m=m_level, j=j_level, s=steps, y=years_note)
    return rng.choice((
        "At {m} level they are {s} above this {j} role and may find it a step back.",
        "The role is {j}, {s} below their {m} level.",
    )).format(m=m_level, j=j_level, s=steps)


def _location_sentence(rng: random.Random, member: dict, job: dict, score: float) -> str | None:
    mc, jc = city_of(member.get("location")), city_of(job.get("location"))
    workplace = _workplace(job) or "onsite"
    # "the onsite role"; an unknown workplace type is not named ("the role").
    role = "role" if workplace == UNKNOWN_WORKPLACE else f"{workplace} role"
    if mc is None or jc is None:
        return "The location of the member or the job is unclear, so location is neutral."
    if workplace == "remote":
        if score >= 4:
            return rng.choice((
                "The role is remote, so being based in {mc} is no barrier.",
                "Location is not an issue: the role is remote and they are in {mc}.",
            )).format(mc=mc.name)
        return f"The role is remote but hires in {_COUNTRY_NAME.get(jc.country, jc.country)}, and they are based in {mc.name}."
    if mc.name == jc.name:
        return rng.choice((
            "They are based in {mc}, where this {r} is.",
            "Location works: the {r} is in {mc}, their city.",
        )).format(mc=mc.name, r=role)
    if mc.metro == jc.metro:
        return f"{mc.name} is within commuting distance of the {role} in {jc.name}."
    if mc.country == jc.country:
        return rng.choice((
            "The {r} is in {jc}, so they would need to relocate from {mc}.",
            "They live in {mc}, far from this {r} in {jc}.",
        )).format(mc=mc.name, r=role, jc=jc.name)
    return f"The {role} is in {jc.name}, a different country from their base in {mc.name}."


def _domain_sentence(rng: random.Random, member: dict, job: dict, score: float) -> str | None:
    jf, mf = family_of_title(job.get("title")), member_family(member)
    if score >= 4:
        return None
    if score == 3:
        return f"They have worked in {_family_label(jf)} before, though their current role is in {_family_label(mf)}."
    if score == 2:
        return f"Their background in {_family_label(mf)} is related to, but not the same as, {_family_label(jf)}."
    return rng.choice((
        "Their background is in {mf}, not {jf}.",
        "Their career so far is in {mf}, which does not carry over to {jf}.",
    )).format(mf=_family_label(mf), jf=_family_label(jf))


def explain(member: dict, job: dict, result: PolicyResult, seed: int = 0) -> str:
    """A 2-4 sentence explanation of ``result`` in a reviewer's voice.

    Names the matching and missing required skills, the seniority gap, and location or domain
    when they matter. The wording varies between pairs and is fixed by ``seed`` and the pair.
    Never quotes the member's free text.
    """
    digest = hashlib.sha1(f"{seed}|{member.get('member_id')}|{job.get('job_id')}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    job_title = (job.get("title") or "this").strip()
    company = (job.get("company") or "the employer").strip()
    sentences = [rng.choice(_OPENINGS[result.fit_label]).format(job_title=job_title, company=company)]
    sentences.append(_skills_sentence(rng, result))
    s = result.dimension_scores
    extras: list[tuple[float, str]] = []
    sen = _seniority_sentence(rng, member, job)
    if sen:
        extras.append((s["seniority"] + rng.random() * 0.5, sen))
    loc = _location_sentence(rng, member, job, s["location"])
    if loc:
        extras.append((s["location"] + 0.5 + rng.random() * 0.5, loc))
    dom = _domain_sentence(rng, member, job, s["domain"])
    if dom:
        extras.append((s["domain"] - 0.5, dom))
    # The weakest dimensions are the ones worth a sentence; keep 0-2 of them (2-4 sentences).
    extras.sort(key=lambda t: t[0])
    n_extra = min(len(extras), 2 if rng.random() < 0.6 else 1)
    sentences.extend(text for _, text in extras[:n_extra])
    return " ".join(sentences)
