"""Seniority levels from the words real tables use: a seniority field written outside the enum
("Sr", "Mid-Senior level", "Entry Level", "Exec") and, when the field is missing or unreadable,
the job title ("Sr. Software Engineer", "Head of Data", "VP Engineering").

Every reader of a level — the policy, the teacher and explainer prompts, the classifier text and
the explanation validator — goes through :func:`member_seniority` / :func:`job_seniority`, so
they all see the same level. The result is one of
:data:`~lantern_batch.schema.SENIORITY_LEVELS` or None (unknown): a value or title without a clear
cue stays unknown, never a guess.

* An enum value (any case, surrounding space) is itself, whatever the title says, so the
  synthetic world's rows (always an enum value) read exactly as before.
* A field value outside the enum: the phrase table :data:`FIELD_ALIASES` (LinkedIn's scale
  included: "Internship", "Entry level", "Mid-Senior level", "Director", "Executive"), then the
  title rules below applied to the value ("Senior Staff" -> lead, "VP" -> executive).
* The title: an exact title of the taxonomy that names a level ("Staff Accountant" -> entry,
  "Charge Nurse" -> lead, "Principal" -> director, as the generator writes them; its bare titles
  such as "Software Engineer" name none), then word cues in this order (the first that matches
  decides):

  ========== =================================================================================
  intern     "Intern", "Extern"
  executive  "Chief … Officer", CEO/CTO/CFO/…, "VP", "Vice President", SVP/EVP, "President",
             "Founder", "Managing Director", "Executive Director"
  director   "Director" (also "Senior Director"), "Head of …", "Headteacher", "… Principal" (a
             school's; "Principal" before a noun is lead)
  manager    "Manager" (not the individual-contributor kinds: product, project, program,
             account, community, brand, case …), "Supervisor", "Associate/Assistant/Deputy
             Director", "Assistant/Deputy/Vice Principal"
  lead       "Lead" (not "Lead Generation"), "Team/Tech Lead", "Leader", "Staff" before an
             engineering, science or design noun ("Staff Engineer", "Senior Staff Data
             Scientist"), "Principal" before a noun ("Principal Engineer")
  senior     "Senior", "Sr", "Snr"
  mid        "Mid-level", "Intermediate", "Medior"
  entry      "Junior", "Jr", "Entry level", "Graduate", "New Grad", "Trainee", "Apprentice",
             "Staff Accountant"
  ========== =================================================================================

  Chosen readings: "Member of Technical Staff" names no level (a flat title at some employers,
  a mid one at others; "Senior/Principal Member of Technical Staff" read by their prefix);
  "Head of X" is director; "VP"/"Vice President" is executive; "Staff"/"Principal" before an
  engineering noun are lead (the top individual-contributor level of the enum); "Associate",
  roman numerals ("Engineer II"), company level codes ("L7", "E5") and words in other
  languages ("Werkstudent") name none.

Workplace types are the input contract's: :func:`lantern_batch.schema.normalise_workplace`.
Pure Python and cached: safe to call per row in every stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from lantern_batch.schema import SENIORITY_LEVELS
from lantern_batch.taxonomy import TITLE_INDEX, normalise_title

_ENUM = frozenset(SENIORITY_LEVELS)

#: Seniority field phrases (lower case, punctuation as spaces, a trailing "level" dropped) ->
#: level. Values the table does not hold go through the title rules.
FIELD_ALIASES: dict[str, str] = {
    # intern
    "internship": "intern", "interns": "intern", "extern": "intern", "externship": "intern",
    "summer intern": "intern",
    # entry
    "entry": "entry", "entry lvl": "entry", "junior": "entry", "jr": "entry", "graduate": "entry",
    "new grad": "entry", "new graduate": "entry", "grad": "entry", "trainee": "entry",
    "apprentice": "entry", "apprenticeship": "entry", "beginner": "entry", "early career": "entry",
    # mid
    "mid": "mid", "middle": "mid", "intermediate": "mid", "medior": "mid", "mid career": "mid",
    "midlevel": "mid",
    # senior; LinkedIn's "Mid-Senior level" is its band of experienced individual contributors
    "senior": "senior", "sr": "senior", "snr": "senior", "mid senior": "senior", "midsenior": "senior",
    # lead (the enum's top individual-contributor level)
    "lead": "lead", "staff": "lead", "senior staff": "lead", "principal": "lead", "team lead": "lead",
    "tech lead": "lead", "technical lead": "lead", "team leader": "lead",
    # manager
    "management": "manager", "manager": "manager", "mgr": "manager", "supervisor": "manager",
    "people manager": "manager", "senior manager": "manager",
    # director
    "director": "director", "senior director": "director", "head": "director",
    # executive
    "exec": "executive", "executive": "executive", "c level": "executive", "c suite": "executive",
    "cxo": "executive", "vp": "executive", "vice president": "executive", "svp": "executive",
    "evp": "executive", "senior executive": "executive",
}

_C_SUITE = ("ceo", "cto", "cfo", "coo", "cio", "cmo", "cro", "chro", "cpo", "cdo", "cso", "ciso",
            "cco", "cao", "cno")
_IC_MANAGER = ("product", "project", "program", "programme", "account", "accounts", "relationship",
               "community", "case", "content", "social media", "campaign", "brand", "category",
               "property", "release", "delivery", "territory")
_TECH_NOUN = (r"(?:software |data |machine learning |ml |ai |research |security |site reliability |"
              r"backend |frontend |full stack |platform |infrastructure |systems |cloud |devops |"
              r"product |ux |ui |applied |quality |test |hardware |firmware |network |mobile |web |"
              r"analytics |database )*"
              r"(?:engineer|engineering|developer|scientist|designer|architect|researcher|sre|swe|"
              r"programmer)")

#: (level, cue) in the order they are tried: the first level with a matching cue wins.
_CUES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((lvl, re.compile(p)) for lvl, p in (
    ("intern", r"\b(?:intern|interns|extern)\b"),
    ("executive", r"\bchief (?!of staff\b)(?:[a-z&]+ ){0,3}officer\b|\b(?:" + "|".join(_C_SUITE) + r")\b"
                  r"|\b(?:vp|svp|evp|vice president|president|co founder|cofounder|founder)\b"
                  r"|\bmanaging director\b|\bexecutive director\b"),
    ("manager", r"\b(?:associate|assistant|deputy) director\b|\b(?:assistant|deputy|vice) principal\b"),
    ("director", r"\bdirector\b|\bhead of\b|\bhead ?teacher\b|\bhead(?:master|mistress)\b|\bprincipal$"),
    ("manager", r"\b(?<!" + r" )(?<!".join(f"{w}" for w in _IC_MANAGER) + r" )manager\b"
                r"|\bsupervisor\b|\bmgr\b"),
    ("lead", r"\blead\b(?! generation)|\bleader\b|\bstaff " + _TECH_NOUN + r"\b|\bprincipal (?=[a-z])"),
    ("senior", r"\b(?:senior|sr|snr)\b"),
    ("mid", r"\bmid(?: |-)?level\b|\bintermediate\b|\bmedior\b"),
    ("entry", r"\b(?:junior|jr|graduate|grad|trainee|apprentice)\b|\bentry(?: |-)?level\b"
              r"|\bnew grad\b|\bstaff accountant\b"),
))
#: "Member of Technical Staff" is a flat title (its "Staff" names no level): read as "engineer",
#: so only a prefix names one ("Principal Member of Technical Staff" -> "principal engineer").
_NO_LEVEL = re.compile(r"\bmembers? of (?:the )?technical staff\b|\bmts\b")


def _key(text: str) -> str:
    """Lower case, every run of punctuation and space one space ("Sr.", "Mid-Senior" -> "sr",
    "mid senior")."""
    return re.sub(r"[^a-z0-9&]+", " ", text.lower()).strip()


_MAX_CHARS = 200
"""Only this many leading characters of a field or title are read (a level is named up front;
the caches stay small whatever a table holds)."""


def seniority_from_title(title: str | None) -> str | None:
    """The level a title names ("Sr. Software Engineer" -> senior, "Head of Data" -> director),
    or None when it names none ("Software Engineer", "Member of Technical Staff")."""
    if not title or not title.strip():
        return None
    return _title_level(title.strip()[:_MAX_CHARS])


@lru_cache(maxsize=16_384)
def _title_level(title: str) -> str | None:
    exact = TITLE_INDEX.get(normalise_title(title))
    if exact is not None and exact[1] != "mid":  # the taxonomy's bare titles name no level
        return exact[1]
    key = _NO_LEVEL.sub("engineer", _key(title))
    for level, cue in _CUES:
        if cue.search(key):
            return level
    return None


def seniority_from_field(value: str | None) -> str | None:
    """A seniority field value on the enum: the value itself when it is an enum value (any case,
    surrounding space), else :data:`FIELD_ALIASES`, else the title rules; None when nothing
    matches ("L7", "Werkstudent", "N/A")."""
    if value is None:
        return None
    return _field_level(value.strip()[:_MAX_CHARS])


@lru_cache(maxsize=4_096)
def _field_level(value: str) -> str | None:
    plain = value.strip().lower()
    if plain in _ENUM:
        return plain
    key = _key(value)
    if not key:
        return None
    for k in (key, re.sub(r"\s*\blevels?$", "", key).strip()):
        if k in _ENUM:
            return k
        if k in FIELD_ALIASES:
            return FIELD_ALIASES[k]
    return seniority_from_title(value)


def normalise_seniority(value: Any, title: Any = None) -> str | None:
    """The level of a row: its seniority field on the enum, else the level its title names,
    else None. An enum value is returned as it is (the title is not read)."""
    if isinstance(value, str):
        if value in _ENUM:  # the common case, and every row the generator writes
            return value
        level = seniority_from_field(value)
        if level is not None:
            return level
    return seniority_from_title(title) if isinstance(title, str) else None


def member_seniority(member: Mapping[str, Any]) -> str | None:
    """A members row's level: ``seniority``, else ``current_title`` (see the module doc)."""
    return normalise_seniority(member.get("seniority"), member.get("current_title"))


def job_seniority(job: Mapping[str, Any]) -> str | None:
    """A jobs row's level: ``seniority``, else ``title`` (see the module doc)."""
    return normalise_seniority(job.get("seniority"), job.get("title"))
