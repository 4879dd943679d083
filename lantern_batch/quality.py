"""The one explanation validator: is this text something a job seeker may read?

A pure function over the text, the row's fit label and the member and job rows (as
``pyarrow.Table.to_pylist()`` yields them). Synthesis runs it on every teacher output, distill on
every training row, precompute on every generated explanation before it is published, and
evaluate on every held-out explanation, so "valid" means the same thing everywhere.

    check = check_explanation(text, "High", member, job)
    check.ok, check.reasons          # False, ("too_short", "multiple_labels")

Reason codes (a text can have several; :data:`REASONS` lists them in this order):

* ``empty`` — nothing but whitespace.
* ``too_short`` / ``too_long`` — outside ``[min_words, max_words]`` words or over ``max_chars``.
* ``not_prose`` — a list of fragments, not sentences: under ``min_alpha_share`` of the tokens
  are words, or the comma/sentence fragments average under ``min_fragment_words`` words; or
  markup ("<br>", "<strong>") that a reader would see as tags.
* ``truncated`` — does not end a sentence (``.``, ``!``, ``?``): the generation was cut off.
* ``no_label`` / ``multiple_labels`` / ``wrong_label`` — the text must state exactly one fit
  label ("High fit", "rate it Medium", "fit: Low", "weak match", ...; negated statements such as
  "not a High fit" do not count) and it must be the row's label.
* ``repetition`` — a token or 2–4-gram repeated three or more times in a row ("fit fit fit"),
  under ``min_distinct_bigrams`` of the bigrams distinct (looping text), or one skill named
  twice in a sentence ("Prospecting, Closing and Prospecting").
* ``circular`` — describes a thing by itself: "the profile shows a profile of…", "their
  background is in teaching, not teaching", "cloud infrastructure, a different field from cloud
  infrastructure". Grammatical, grounded, and says nothing (or contradicts itself).
* ``ungrounded_skill`` — names a skill of the vocabulary that is neither among the job's
  required skills nor among the member's skills (synonyms folded: "K8s" is Kubernetes).
* ``wrong_years`` — states "N years" where N is neither the member's years of experience, a
  role's duration on the profile, the years the job's level expects, nor a number of years the
  posting states (within ``years_tolerance``).
* ``wrong_seniority`` — names a level ("senior level", "a mid profile") that is neither the
  member's nor the job's, or counts the levels between them wrong ("six levels below" for a mid
  member and a lead job: two), or puts one level above another the wrong way round ("mid, one
  level below their entry level"), or gives the member a level not theirs ("They are a mid
  level" for a senior member; "Their level is mid"). Levels are read by :mod:`lantern_batch.titles` ("Sr" is
  senior; a missing level is the one the title names).
* ``wrong_location`` — names a known city that is neither the member's nor the job's, or
  states how the two places relate against the facts ("a different country" for two cities of
  one country, "the same country" for two countries), or says the member would have to
  relocate for a remote job or one in their own city, or is "far from" the job's city when
  it is their own, or says the member is somewhere they are not ("They live in Newark" for a
  member in New York; "they would need to relocate from Atlanta" when Atlanta is the job's city).
* ``wrong_skill_claim`` — says the member has a required skill they do not list ("They bring
  Python" for a member without it) or lacks one they list ("do not list SQL", "none of the
  required skills, such as SQL", "SQL is not mentioned" for a member who lists SQL). Read per
  clause: a clause with a negation ("no", "not", "none", "missing", "lack", "without", "gap") says
  its skills are missing; one that says the member or the profile brings, lists, covers, has,
  offers or includes them says they are there. Clauses break at ``. ; :`` and at "but", "while",
  "whereas", "although", "though", "however", "yet". A clause about the required skills as a
  whole is judged too: "all the required skills are on the profile" when one is missing, "all
  the required skills are missing", "do not list any required skills" or "none of the required
  skills" / "no relevant skills" when the member lists one.
* ``wrong_domain`` — says the member's background is in another field, or not there, when their
  role family is the job's ("Their background in human resources is not mentioned" for an HR
  manager applying to an HR role; "a different area from what they're doing"; "Their career so
  far is in sales, which does not carry over to sales").
* ``first_person`` — speaks as "I", "me", "my" or "we" anywhere but the verdict ("I would rate
  this a High fit" is the verdict; "so I would find it a step back", "different from what I'm
  used to", "what I'm looking for" put the writer in the member's place).
* ``copied_text`` — copies ``copy_span_words`` or more consecutive words of the member's free
  text (headline, summary, role descriptions).
* ``contact_info`` — contains an e-mail address, a phone number or a URL, as
  :func:`lantern_batch.contact.has_contact` finds them (the black-box teacher's redaction):
  also ``name(at)host(dot)com``, ``jane.de/about``, ``5551234``, ``call5551234567``; not
  ``Python 3.11``, ``2019-2023``, ``ASP.NET``.

:func:`check_dimension_scores` is the teacher-output companion: dimension scores that
contradict the label (all zero with a non-Low label, or the label the policy would give those
scores two classes away) are ``scores_contradict_label``.

Pure Python (standard library, :mod:`lantern_batch.taxonomy`, :mod:`lantern_batch.contact` and,
for places the taxonomy does not know, :mod:`lantern_batch.locations`): cheap to call per row in
any Ray worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lantern_batch.contact import has_contact
from lantern_batch.schema import DIMENSIONS, FIT_LABELS, SENIORITY_LEVELS, normalise_workplace
from lantern_batch.taxonomy import (
    ALL_SKILLS,
    CITIES,
    MIN_YEARS,
    SKILL_SYNONYMS,
    canonical_skill,
    city_of,
)
from lantern_batch.titles import job_seniority, member_seniority

REASONS: tuple[str, ...] = (
    "empty", "too_short", "too_long", "not_prose", "truncated", "no_label", "multiple_labels",
    "wrong_label", "repetition", "circular", "ungrounded_skill", "wrong_years", "wrong_seniority",
    "wrong_location", "wrong_skill_claim", "wrong_domain", "first_person", "copied_text", "contact_info",
)
"""Every reason :func:`check_explanation` can give, in the order it reports them."""

SCORE_REASON = "scores_contradict_label"

QUALITY_VERSION = "q8"  # q8: "all the required skills" / "none of the required skills" must hold too
"""Version of these rules: part of precompute's reuse fingerprint, so a rule change re-checks
(regenerates) published explanations instead of carrying them over."""


@dataclass(frozen=True)
class ExplanationRules:
    """Thresholds of :func:`check_explanation` (defaults fit the policy's 2–4 sentence texts)."""

    min_words: int = 8
    max_words: int = 120
    max_chars: int = 800
    min_alpha_share: float = 0.6
    min_fragment_words: float = 3.0
    min_distinct_bigrams: float = 0.7
    years_tolerance: float = 1.0
    copy_span_words: int = 8


DEFAULT_RULES = ExplanationRules()


@dataclass(frozen=True)
class ExplanationCheck:
    """The verdict on one explanation: ``ok`` when ``reasons`` is empty."""

    reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str | None:
        """The reasons joined with ``+`` (one string for an error row), None when valid."""
        return "+".join(self.reasons) if self.reasons else None


# ---------------------------------------------------------------------------------------------
# Label statements

_LABEL_WORDS = {
    "high": "High", "medium": "Medium", "low": "Low",
    "strong": "High", "excellent": "High",
    "partial": "Medium", "moderate": "Medium", "mixed": "Medium",
    "weak": "Low", "poor": "Low",
}
_SYNONYMS = "strong|excellent|partial|moderate|mixed|weak|poor"
_STATEMENT = re.compile(
    # "High fit", "a medium match", "Strong candidate", "weak match"
    rf"\b(?P<a>high|medium|low|{_SYNONYMS})[\s-]+(?:fit|match|candidate)\b"
    # "rate it Medium", "rated this as a Low"
    r"|\b(?:rate|rated|rating|label|labelled|labeled|classify|classified)\s+(?:it|this|them|you)?\s*"
    r"(?:as\s+)?(?:an?\s+)?(?P<b>high|medium|low)\b"
    # "fit: High", "fit label is Low", "fit = Medium"
    r"|\bfit(?:\s+label)?\s*(?:is|:|=|-)\s*(?:an?\s+)?(?P<c>high|medium|low)\b"
    # a bare capitalised label word ("High, Medium, Low", "so I rate it High")
    r"|(?-i:\b(?P<d>High|Medium|Low)\b)",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"\b(?:not|isn't|is\s+not|no|never|hardly|rather\s+than)\s+(?:an?\s+|the\s+|really\s+)?$",
                      re.IGNORECASE)


def stated_labels(text: str | None) -> list[str]:
    """Fit labels the text states, in order of first statement, negated ones left out.

    >>> stated_labels("This is a High fit: they list every required skill.")
    ['High']
    >>> stated_labels("High, Medium, Low")
    ['High', 'Medium', 'Low']
    >>> stated_labels("Not a High fit; a partial match, so Medium.")
    ['Medium']
    """
    if not text:
        return []
    found: dict[str, None] = {}
    for m in _STATEMENT.finditer(text):
        if _NEGATED.search(text[max(0, m.start() - 24): m.start()]):
            continue
        word = next(g for g in m.group("a", "b", "c", "d") if g)
        found.setdefault(_LABEL_WORDS[word.lower()], None)
    return list(found)


def stated_label(text: str | None) -> str | None:
    """The one label the text states, or None when it states none or several."""
    labels = stated_labels(text)
    return labels[0] if len(labels) == 1 else None


# ---------------------------------------------------------------------------------------------
# Skills


def normalise_skill(skill: str) -> str:
    """Case- and space-insensitive form of a skill name."""
    return " ".join(skill.lower().split())


class SkillMatcher:
    """Finds vocabulary skills in text, longest names first, on word boundaries.

    One-word skills match in their own case ("Excel" the skill, not "excel" the verb; "Go" the
    language, not "go"), or in capitals ("PYTHON"); several-word skills match in any case.
    ``+``, ``#`` and ``.`` count as word characters at the edges, so "C" does not match inside
    "C++" or "C#".
    """

    def __init__(self, vocabulary: Iterable[str]):
        names = sorted({s.strip() for s in vocabulary if s and s.strip()}, key=len, reverse=True)
        self.canonical = {normalise_skill(s): s for s in names}
        single = [s for s in names if len(s.split()) == 1]
        multi = [s for s in names if len(s.split()) > 1]
        edge_l, edge_r = r"(?<![\w+#.])", r"(?![\w+#]|\.\w)"

        def alternation(items: list[str]) -> str:
            return "|".join(r"\s+".join(re.escape(part) for part in s.split()) for s in items)

        single += [s.upper() for s in single if len(s) > 2 and s.upper() != s]
        self._multi = re.compile(rf"{edge_l}(?:{alternation(multi)}){edge_r}", re.IGNORECASE) if multi else None
        self._single = re.compile(rf"{edge_l}(?:{alternation(single)}){edge_r}") if single else None

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """``(start, end, normalised skill)`` of every mention, in text order."""
        found: list[tuple[int, int, str]] = []
        for pattern in (self._multi, self._single):
            if pattern is None:
                continue
            for m in pattern.finditer(text):
                if any(a < m.end() and m.start() < b for a, b, _ in found):
                    continue  # inside a longer skill already found ("Go" in "Google Ads")
                found.append((m.start(), m.end(), normalise_skill(m.group(0))))
        return sorted(found)

    def find(self, text: str) -> list[str]:
        """Vocabulary skills mentioned in ``text``, normalised, in order of first mention."""
        seen: dict[str, None] = {}
        for _, _, name in self.spans(text):
            seen.setdefault(name, None)
        return list(seen)


@lru_cache(maxsize=1)
def taxonomy_skill_matcher() -> SkillMatcher:
    """A matcher over every skill the taxonomy knows, synonyms included (built once)."""
    forms = list(ALL_SKILLS) + [f for canon, fs in SKILL_SYNONYMS.items() for f in (canon, *fs)]
    return SkillMatcher(forms)


def _canon(skills: Iterable[str | None] | None) -> set[str]:
    return {c for c in (canonical_skill(s) for s in (skills or ())) if c}


# ---------------------------------------------------------------------------------------------
# Facts: years, levels, places

_YEARS = re.compile(r"(?<![\w.])(\d{1,2}(?:\.\d+)?)\s*\+?\s*(?:-\s*)?(?:years?|yrs?)\b", re.IGNORECASE)
_LEVELS = "|".join(SENIORITY_LEVELS)
_LEVEL_STATEMENT = re.compile(
    rf"\b(?P<a>{_LEVELS})[\s-]+level\b"
    rf"|\b(?:an?|their|the|your)\s+(?P<b>{_LEVELS})\s+(?:profile|role|position|opening|candidate|background)\b"
    rf"|\blevel\s+(?:is|of)\s+(?P<c>{_LEVELS})\b",
    re.IGNORECASE,
)
_CITY_BASE = {c.name.split(",")[0]: c for c in CITIES}
_OTHER_COUNTRY = re.compile(
    r"\b(?:a |an )?(?:different|another|other|foreign) countr(?:y|ies)\b|\bnot (?:in )?the same country\b"
    r"|\babroad\b|\boverseas\b", re.IGNORECASE)
_SAME_COUNTRY = re.compile(r"\bsame country\b", re.IGNORECASE)
_CITY_MENTION = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in sorted(_CITY_BASE, key=len, reverse=True)) + r")\b")


def _allowed_years(member: Mapping[str, Any], job: Mapping[str, Any]) -> list[float]:
    allowed: list[float] = []
    years = member.get("years_experience")
    if years is not None:
        allowed.append(float(years))
    level = job_seniority(job)
    if level in MIN_YEARS:
        allowed.append(float(MIN_YEARS[level]))
    for role in member.get("experience") or ():
        start, end = (role or {}).get("start_year"), (role or {}).get("end_year")
        if start is not None and end is not None:
            allowed.append(float(end - start))
    allowed += [float(y) for y in _YEARS.findall(job.get("description") or "")]
    return allowed


def _blank_names(text: str, names: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each name replaced by spaces (offsets kept)."""
    for name in sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True):
        text = re.sub(re.escape(name), lambda m: " " * len(m.group(0)), text, flags=re.IGNORECASE)
    return text


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:['’.+#-][a-z0-9]+)*", text.lower())


def _member_free_text(member: Mapping[str, Any]) -> list[str]:
    parts = [member.get("headline"), member.get("summary")]
    parts += [(role or {}).get("description") for role in member.get("experience") or ()]
    return [p for p in parts if p]


def _copied(text_words: Sequence[str], member: Mapping[str, Any], span: int) -> bool:
    if len(text_words) < span:
        return False
    shingles = {tuple(text_words[i:i + span]) for i in range(len(text_words) - span + 1)}
    for part in _member_free_text(member):
        w = _words(part)
        if any(tuple(w[i:i + span]) in shingles for i in range(len(w) - span + 1)):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Form

_TOKEN = re.compile(r"\w+(?:['’.+#/-]\w+)*|[^\w\s]")


_PHRASE = r"([^\W\d_][\w-]*(?: [\w-]+){0,3})"
_CIRCULAR = (
    # "the profile shows a profile of", "a profile on the profile"
    re.compile(r"\b(\w{4,}) (?:shows|of|with|has|on|covers|lists) (?:an?|the) \1\b", re.IGNORECASE),
    # "teaching, not teaching"
    re.compile(rf"\b{_PHRASE},? (?:and )?not (?:an? |the |in )?\1(?=[.,;:!?)]|$)", re.IGNORECASE),
    # "cloud infrastructure, which is a different field from cloud infrastructure"
    re.compile(rf"\b{_PHRASE},? (?:which |that )?(?:is )?(?:a |an )?(?:different|other) \w+ (?:from|than) \1(?=[.,;:!?)]|$)",
               re.IGNORECASE),
)
"""A phrase that describes itself (the ``circular`` reason)."""


def _skill_named_twice(text: str) -> bool:
    """One sentence names the same skill twice (synonyms folded)."""
    matcher = taxonomy_skill_matcher()
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        names = [canonical_skill(n) for _, _, n in matcher.spans(sentence)]
        if len(names) != len(set(names)):
            return True
    return False


_NUMBER_WORDS = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                              "nine", "ten"))}
_LEVEL_COUNT = re.compile(r"\b(\d+|" + "|".join(_NUMBER_WORDS) + r")\s+levels?\s+(?:above|below|apart|under|over)\b",
                          re.IGNORECASE)


def _wrong_level_count(text: str, member: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """States "N levels above/below" where N is not the distance between the member's and the
    job's levels on the seniority scale (only when both are on it)."""
    ranks = [SENIORITY_LEVELS.index(s) for s in (member_seniority(member), job_seniority(job))
             if s in SENIORITY_LEVELS]
    if len(ranks) != 2:
        return False
    distance = abs(ranks[0] - ranks[1])
    for m in _LEVEL_COUNT.finditer(text):
        said = m.group(1).lower()
        if (int(said) if said.isdigit() else _NUMBER_WORDS[said]) != distance:
            return True
    return False


_LEVEL_WORD = re.compile(r"\b(" + "|".join(SENIORITY_LEVELS) + r")\b", re.IGNORECASE)


def _wrong_level_direction(text: str) -> bool:
    """A sentence puts one named level "N levels above/below" another the wrong way round on the
    seniority scale ("The role is mid, one level below their entry level": mid is above entry).
    Judged on the scale alone, from the nearest level named before the count and the nearest
    after it in the same sentence, so it does not matter whose level each one is."""
    for sentence in re.split(r"(?<=[.!?;])\s+", text):
        for m in _LEVEL_COUNT.finditer(sentence):
            before = _LEVEL_WORD.findall(sentence[:m.start()])
            after = _LEVEL_WORD.findall(sentence[m.end():])
            if not before or not after:
                continue
            gap = SENIORITY_LEVELS.index(before[-1].lower()) - SENIORITY_LEVELS.index(after[0].lower())
            direction = m.group(0).lower().split()[-1]
            if (direction in ("above", "over") and gap <= 0) or (direction in ("below", "under") and gap >= 0):
                return True
    return False


def _looping(tokens: Sequence[str]) -> bool:
    """A token or n-gram (n <= 4) repeated three or more times in a row."""
    for n in (1, 2, 3, 4):
        for i in range(len(tokens) - 3 * n + 1):
            gram = tokens[i:i + n]
            if tokens[i + n:i + 2 * n] == gram and tokens[i + 2 * n:i + 3 * n] == gram:
                return True
    return False


_RELOCATE = re.compile(r"\brelocat\w*", re.IGNORECASE)
_WHO = r"(?:they|he|she|the member|the candidate)"
# A statement of where the member is: the place named right after it must be the member's
# ("They live in Newark" for a member in New York; "relocate from Atlanta" when Atlanta is
# the job's city). Relocating *to* a place and "the role is in" are about the job.
_HOME_CLAIM = re.compile(
    rf"\b{_WHO}\s+(?:live|lives|are based|is based|are located|is located|reside|resides|are|is)\s+(?:from|in)\s+"
    r"|\btheir\s+(?:current\s+|home\s+)?(?:base|home|city|location)\s+(?:is\s+)?(?:in\s+)?"
    r"|\b(?:relocat\w*|mov(?:e|es|ing))\s+(?:\w+\s+){0,2}?from\s+",
    re.IGNORECASE,
)
# "They are a mid level" / "Their level is mid": a level stated as the member's own.
_MEMBER_LEVEL_CLAIM = re.compile(
    rf"\b{_WHO}\s+(?:are|is)\s+(?:an?\s+)?(?P<a>{_LEVELS})\b(?!\s+(?:role|position|opening|job))"
    rf"|\btheir\s+(?:current\s+|own\s+)?level\s+is\s+(?P<b>{_LEVELS})\b",
    re.IGNORECASE,
)
_FAR = re.compile(r"\bfar (?:away )?from\b", re.IGNORECASE)
_MARKUP = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\s*/?>")
_HEDGED = re.compile(r"\b(?:no|not|never|without|nor|if|unless|whether|needn't|n't)\b|n't\b", re.IGNORECASE)


def _needless_relocation_claim(text: str, member: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """A sentence says the member would relocate ("so they would need to relocate from Boston")
    although the job is remote or in the member's own city, or that the job in their own city
    is "far from" them. Negated or conditional sentences ("no need to relocate", "if it were
    onsite") claim nothing."""
    workplace = job.get("workplace_type")
    remote = normalise_workplace(workplace if isinstance(workplace, str) else None) == "remote"
    mc, jc = city_of(member.get("location")), city_of(job.get("location"))
    same_city = mc is not None and jc is not None and mc.name == jc.name
    if not (remote or same_city):
        return False
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        claims = _RELOCATE.search(sentence) or (same_city and _FAR.search(sentence))
        if claims and not _HEDGED.search(sentence):
            return True
    return False


def _wrong_home_claim(text: str, member: Mapping[str, Any]) -> bool:
    """A known city stated as where the member is (:data:`_HOME_CLAIM`) that is not the city on
    the member's profile. A place the taxonomy does not know after the claim is not judged."""
    location = member.get("location")
    if not isinstance(location, str) or not location.strip():
        return False
    mc = city_of(location)
    home = mc.name.split(",")[0] if mc is not None else location.split(",")[0].strip()
    for m in _HOME_CLAIM.finditer(text):
        city = _CITY_MENTION.match(text, m.end())
        if city is not None and city.group(0) != home:
            return True
    return False


def _wrong_member_level(text: str, member: Mapping[str, Any]) -> bool:
    """A level stated as the member's own (:data:`_MEMBER_LEVEL_CLAIM`) that is not their level."""
    own = member_seniority(member)
    if own is None:
        return False
    return any(next(g for g in m.group("a", "b") if g).lower() != own for m in _MEMBER_LEVEL_CLAIM.finditer(text))


def _wrong_country_claim(text: str, member: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """The text says the two places are in different countries when they share one, or in the
    same country when they do not. Places the taxonomy does not know are judged by the offline
    gazetteer (:mod:`lantern_batch.locations`) when both resolve to known countries; else not."""
    mc, jc = city_of(member.get("location")), city_of(job.get("location"))
    if mc is not None and jc is not None:
        same = mc.country == jc.country
    else:
        where = _gazetteer_relation(member.get("location"), job.get("location"))
        if where == "unknown":
            return False
        same = where != "different countries"
    if same:
        return bool(_OTHER_COUNTRY.search(text))
    return bool(_SAME_COUNTRY.search(_OTHER_COUNTRY.sub(" ", text)))  # "not the same country" is no claim of one


def _gazetteer_relation(a: str | None, b: str | None) -> str:
    if not (a or "").strip() or not (b or "").strip():
        return "unknown"  # nothing to compare: the gazetteer is not loaded
    from lantern_batch import locations

    return locations.relation(locations.resolve(a), locations.resolve(b))


_CLAUSE_BREAK = re.compile(r"[.;:!?]+\s*|,?\s+\b(?:but|while|whereas|although|though|however|yet)\b\s*",
                           re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:no|not|none|nor|neither|never|missing|lacks?|lacking|without|absent|gaps?)\b|n't\b",
                       re.IGNORECASE)
_POSSESSION = re.compile(
    r"\b(?:they|the profile|their profile|the member|the candidate|it)\b[^.;:]*?"
    r"\b(?:bring|brings|list|lists|listing|cover|covers|covering|has|have|having|offer|offers|include|includes|including|show|shows)\b",
    re.IGNORECASE)

_ALL_REQUIRED = re.compile(r"\b(?:(?:all|any) (?:of )?(?:the |their )?required skills|every required skill)\b",
                           re.IGNORECASE)
_NONE_REQUIRED = re.compile(r"\b(?:none of the (?:required )?skills|no (?:relevant|required) skills|none of the required)\b",
                            re.IGNORECASE)


def _wrong_skill_claim(text: str, member: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """A clause says a required skill is missing from a profile that lists it, or that the member
    brings a required skill they do not list (see the module doc). Only the job's required
    skills are judged here (a skill on neither list is ``ungrounded_skill``).

    In a clause, a skill after a negation is said to be missing ("do not list SQL", "none of the
    required skills, such as SQL"), and so is one before it that no "brings/lists/covers" verb
    governs ("SQL and Go are not mentioned"); a skill after such a verb and before any negation
    is said to be there ("They list Python, not Go")."""
    required = _canon(job.get("required_skills"))
    if not required:
        return False
    has = _canon(member.get("skills"))
    matcher = taxonomy_skill_matcher()
    for clause in _CLAUSE_BREAK.split(text):
        negation, verb = _NEGATION.search(clause), _POSSESSION.search(clause)
        whole = _ALL_REQUIRED.search(clause) is not None
        if _NONE_REQUIRED.search(clause) or (whole and negation is not None):
            if required & has:  # "none of the required skills", "all the required skills are missing"
                return True
        elif whole and required - has:  # "all the required skills are on the profile"
            return True
        for start, _, name in matcher.spans(clause):
            skill = canonical_skill(name)
            if skill not in required:
                continue
            governed = verb is not None and verb.end() <= start
            if negation is not None and (start > negation.start() or not governed):
                if skill in has:
                    return True
            elif governed and skill not in has:
                return True
    return False


_FIELD_DENIED = re.compile(
    r"\b(?:background|career)\b[^.;]*?\b(?:not mentioned|not the same|different|unrelated|not related|does not carry|doesn't carry"
    r"|another field|outside)\b"
    r"|\b(?:a |an )?(?:different|another|other|unrelated) (?:area|field|domain|line of work)\b",
    re.IGNORECASE)


def _wrong_domain(text: str, member: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """The text says the member's field differs from the job's, or is absent, when the member's
    role family (:func:`lantern_batch.policy.member_family`) is the job's."""
    from lantern_batch.policy import member_family
    from lantern_batch.taxonomy import family_of_title

    job_family = family_of_title(job.get("title"))
    return job_family is not None and member_family(dict(member)) == job_family and bool(_FIELD_DENIED.search(text))


_VERDICT = re.compile(r"\bI(?:'d|’d| would| will)?\s+(?:rate|call|label|classify|consider)\s+(?:this|it|them|the (?:pair|match|profile))\b")
_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I’m|I'd|I’d|I've|I’ve|I'll|I’ll)(?![\w'’])|\b(?:me|my|mine|myself|we|our|ours|us)\b")


def _first_person(text: str) -> bool:
    """"I", "me", "my" or "we" outside the verdict statement (:data:`_VERDICT`)."""
    return bool(_FIRST_PERSON.search(_VERDICT.sub(" ", text)))


def check_explanation(text: str | None, label: str | None, member: Mapping[str, Any] | None,
                      job: Mapping[str, Any] | None, rules: ExplanationRules = DEFAULT_RULES) -> ExplanationCheck:
    """Check one explanation of a pair labelled ``label`` (see the module doc for the reasons).

    ``member`` / ``job`` may be None (content unknown): the grounding checks that need them are
    then skipped; everything about form and label still applies.
    """
    if text is None or not text.strip():
        return ExplanationCheck(("empty",))
    text = " ".join(text.split())
    facts = text
    reasons: list[str] = []
    words = _words(text)
    if len(words) < rules.min_words:
        reasons.append("too_short")
    if len(words) > rules.max_words or len(text) > rules.max_chars:
        reasons.append("too_long")
    tokens = [t.lower() for t in _TOKEN.findall(text)]
    word_tokens = [t for t in tokens if re.match(r"\w", t)]
    alpha = sum(1 for t in word_tokens if re.fullmatch(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", t))
    fragments = [f for f in re.split(r"[,;:.!?]+", text) if f.strip()]
    mean_fragment = len(words) / max(len(fragments), 1)
    if (not word_tokens or alpha / len(word_tokens) < rules.min_alpha_share
            or mean_fragment < rules.min_fragment_words or _MARKUP.search(text)):
        reasons.append("not_prose")
    if not re.search(r"[.!?][\"')\]]*$", text):
        reasons.append("truncated")
    labels = stated_labels(text)
    if not labels:
        reasons.append("no_label")
    elif len(labels) > 1:
        reasons.append("multiple_labels")
    elif label is not None and labels[0] != label:
        reasons.append("wrong_label")
    bigrams = list(zip(word_tokens, word_tokens[1:], strict=False))
    if (_looping(word_tokens) or (len(bigrams) >= 10 and len(set(bigrams)) / len(bigrams) < rules.min_distinct_bigrams)
            or _skill_named_twice(text)):
        reasons.append("repetition")
    if any(p.search(text) for p in _CIRCULAR):
        reasons.append("circular")
    if member is not None and job is not None:
        # Names of the job, the company and the member's roles are not claims ("Logistics" in
        # "Senior Logistics Coordinator"): they are blanked before skills and places are read.
        facts = _blank_names(text, [job.get("title"), job.get("company"), member.get("current_title")]
                             + [(r or {}).get("title") for r in member.get("experience") or ()])
        allowed = _canon(job.get("required_skills")) | _canon(member.get("skills"))
        skill_spans = taxonomy_skill_matcher().spans(facts)
        facts_skills = facts  # names blanked, skills kept: what skill claims are read from
        if _canon(name for _, _, name in skill_spans) - allowed:
            reasons.append("ungrounded_skill")
        for a, b, _ in skill_spans:  # "Reading" in "Blueprint Reading" is no city
            facts = facts[:a] + " " * (b - a) + facts[b:]
        allowed_years = _allowed_years(member, job)
        for y in _YEARS.findall(text):
            if not any(abs(float(y) - a) <= rules.years_tolerance for a in allowed_years):
                reasons.append("wrong_years")
                break
        levels = {member_seniority(member), job_seniority(job)}
        for m in _LEVEL_STATEMENT.finditer(text):
            if next(g for g in m.group("a", "b", "c") if g).lower() not in levels:
                reasons.append("wrong_seniority")
                break
        if "wrong_seniority" not in reasons and (_wrong_level_count(text, member, job)
                                                 or _wrong_level_direction(text)
                                                 or _wrong_member_level(text, member)):
            reasons.append("wrong_seniority")
        places = " ".join(filter(None, (member.get("location"), job.get("location"))))
        own = {c.name.split(",")[0] for c in (city_of(member.get("location")), city_of(job.get("location"))) if c}
        for m in _CITY_MENTION.finditer(facts):
            if m.group(0) not in own and m.group(0) not in places:
                reasons.append("wrong_location")
                break
        if "wrong_location" not in reasons and (_wrong_country_claim(text, member, job)
                                                or _needless_relocation_claim(text, member, job)
                                                or _wrong_home_claim(text, member)):
            reasons.append("wrong_location")
        if _wrong_skill_claim(facts_skills, member, job):
            reasons.append("wrong_skill_claim")
        if _wrong_domain(text, member, job):
            reasons.append("wrong_domain")
        if _copied(words, member, rules.copy_span_words):
            reasons.append("copied_text")
    if _first_person(text if member is None or job is None else facts):  # "Engineer I" is a title
        reasons.append("first_person")
    if has_contact(text):
        reasons.append("contact_info")
    return ExplanationCheck(tuple(r for r in REASONS if r in reasons))


def check_dimension_scores(label: str, scores: Mapping[str, float] | None) -> str | None:
    """``scores_contradict_label`` when a teacher's dimension scores contradict its label: every
    score zero with a label other than Low, or the label the policy gives those scores
    (:func:`lantern_batch.policy.label_for`) two classes away (High vs Low); else None."""
    if not scores:
        return None
    from lantern_batch.policy import MAX_SCORE, WEIGHTS, label_for

    values = {d: float(scores.get(d) or 0.0) for d in DIMENSIONS}
    if all(v == 0 for v in values.values()) and label != "Low":
        return SCORE_REASON
    total = sum(WEIGHTS[d] * values[d] / MAX_SCORE for d in DIMENSIONS)
    implied = label_for(values, total)
    if abs(FIT_LABELS.index(implied) - FIT_LABELS.index(label)) >= 2:
        return SCORE_REASON
    return None


def summarise(checks: Iterable[ExplanationCheck]) -> dict[str, Any]:
    """Counts over many checks: ``checked``, ``valid``, ``valid_rate`` and ``by_reason``."""
    checked = valid = 0
    by_reason = {r: 0 for r in REASONS}
    for c in checks:
        checked += 1
        valid += int(c.ok)
        for r in c.reasons:
            by_reason[r] += 1
    return {"checked": checked, "valid": valid, "valid_rate": valid / checked if checked else None,
            "by_reason": {r: n for r, n in by_reason.items() if n}}
