"""Contact details in free text: e-mail addresses, URLs and phone numbers, as people write them.

One set of patterns for both uses: :func:`redact` (what the black-box teacher sends out of the
machine) and :func:`has_contact` (the explanation validator's ``contact_info``), so an address
the teacher would not be shown is also one no published explanation may contain.

Caught: plain and obfuscated addresses (``name(at)host(dot)com``, ``name [at] host [dot] com``,
``name at host dot com``, ``name(@)host(.)com``, ``name @ host . com``), URLs with a scheme or
``www.`` and scheme-less ones (``jane.de/about``, ``github.com/jane``, ``jane.dev``), phone
numbers of 9-15 digits in any grouping, local 7-digit numbers (``555-1234``, ``555.1234``,
``555 1234``, ``5551234``) and numbers glued to words (``call5551234567``, ``tel5551234``).
Kept: version numbers (``Python 3.11``, ``3.5 years``), years and year ranges (``2019-2023``),
dates, salaries and other amounts (``$120,000``, ``85.000-95.000 EUR``), technology names
(``ASP.NET``, ``Node.js``, ``socket.io``).

Standard library only: cheap to call per row in any Ray worker.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# "name(at)host(dot)com", "name [at] host [dot] com", "name(@)host(.)com", "name@host(dot)com".
_AT = r"(?:@|\s*[(\[{<]\s*(?:at|@)\s*[)\]}>]\s*)"
_DOT = r"(?:\.|\s*[(\[{<]\s*(?:dot|\.)\s*[)\]}>]\s*)"
_OBFUSCATED_EMAIL = re.compile(
    rf"[A-Za-z0-9._%+-]+{_AT}[A-Za-z0-9-]+(?:{_DOT}[A-Za-z0-9-]+)*{_DOT}[A-Za-z]{{2,}}\b", re.IGNORECASE)
# A scheme-less host without a path counts as a URL only with one of these (lower-case) TLDs:
# "ASP.NET", "Node.js" or "team.it" (a missing space) are not addresses.
_BARE_TLDS = ("com|org|net|edu|gov|io|dev|ai|co|info|biz|app|xyz|tech|site|online|page|blog|cloud|"
              "eu|uk|de|fr|nl|ch|es|se|dk|fi|ie|pt|ca|au|nz|jp|cn|br")
# Spelled out with spaces ("name at host dot com", "name @ host . com"): only before a known
# TLD, since "at" and "." are everywhere in prose.
_SPELLED_EMAIL = re.compile(
    rf"(?<![\w.%+-])[A-Za-z0-9._%+-]+(?:\s+at\s+[A-Za-z0-9-]+(?:\s+dot\s+[A-Za-z0-9-]+)*\s+dot\s+"
    rf"|\s*@\s*[A-Za-z0-9-]+(?:\s*\.\s*[A-Za-z0-9-]+)*\s*\.\s*)(?:{_BARE_TLDS})\b", re.IGNORECASE)
# The rest of a URL; trailing sentence punctuation is not part of it.
_URL_REST = r"[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]"
_SCHEME_URL = re.compile(rf"\b(?:(?:https?|ftp)://|www\.){_URL_REST}", re.IGNORECASE)
_HOST = r"(?<![\w@.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
_BARE_DOMAIN = re.compile(rf"{_HOST}(?:{_BARE_TLDS})(?::\d{{2,5}})?(?:/{_URL_REST}|/)?(?![\w-])")
# With a path, any lower-case TLD counts ("jane.de/about") except file suffixes ("Node.js/React").
_PATH_DOMAIN = re.compile(rf"{_HOST}(?P<tld>[a-z]{{2,24}})(?::\d{{2,5}})?/{_URL_REST}")
_FILE_SUFFIXES = frozenset({
    "js", "ts", "jsx", "tsx", "py", "rs", "sh", "md", "pl", "rb", "go", "cs", "cc", "cpp", "hpp", "java",
    "kt", "json", "yml", "yaml", "xml", "html", "htm", "css", "php", "txt", "csv", "pdf", "doc", "docx",
    "ppt", "pptx", "xls", "xlsx", "png", "jpg", "jpeg", "gif", "svg", "exe", "zip", "gz", "tar", "ipynb",
    "sql", "toml", "ini", "lock",
})
# Technology names spelled like domains (any case): not addresses, also before a path ("asp.net/c#").
_TECH_NAMES = frozenset({"asp.net", "ado.net", "vb.net", "dot.net", "socket.io"})
# Digits in groups (letters may touch them: "call5551234567"); _phone decides by digit count.
_PHONE = re.compile(r"(?<![\d_/+.,])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?![\d/]|[.,]\d)")
# A local 7-digit number: exchange (first digit 2-9) and line, "555-1234", "555.1234", "555 1234",
# "5551234"; letters may touch it ("tel5551234", "Tel.5551234"), a decimal point may not ("3.5551234").
_LOCAL_PHONE = re.compile(r"(?<![\d_/+,$€£-])(?<!\d[.,])[2-9]\d{2}[-. ]?\d{4}(?![\d/-]|[.,]\d)")
_YEAR = re.compile(r"(?:19|20)\d\d")
_CURRENCY = r"[$€£¥]|\b(?:USD|EUR|GBP|CHF|CAD|AUD|INR|JPY)\b"
_MONEY_BEFORE = re.compile(rf"(?:{_CURRENCY})\s*$", re.IGNORECASE)
_MONEY_AFTER = re.compile(rf"\s*(?:{_CURRENCY}|[kKmM]\b|%|(?:per|p\.a|a year)\b|/\s*(?:yr|year|month|h)\b)",
                          re.IGNORECASE)


def _is_amount(m: re.Match[str]) -> bool:
    """Whether a digit run reads as money or a quantity: a currency or unit right before or after
    it ("$500-1000", "85.000-95.000 EUR", "30-40%", "120 000 per year"), or a range of round
    numbers ("100000-120000")."""
    text = m.string
    if _MONEY_BEFORE.search(text[max(0, m.start() - 8):m.start()]) or _MONEY_AFTER.match(text, m.end()):
        return True
    parts = re.split(r"\s*-\s*", m.group())
    return len(parts) > 1 and all(re.sub(r"[.,\s]", "", p).endswith("000") for p in parts)


def _phone(m: re.Match[str]) -> str:
    groups = re.findall(r"\d+", m.group())
    if not 9 <= sum(len(g) for g in groups) <= 15:  # fewer: years, ranges, amounts, versions
        return m.group()
    if all(_YEAR.fullmatch(g) for g in groups) or _is_amount(m):  # "2019 2020 2021", salaries
        return m.group()
    return "[phone]"


def _local_phone(m: re.Match[str]) -> str:
    if _is_amount(m):
        return m.group()
    if " " in m.group() and _YEAR.fullmatch(m.group()[-4:]):  # "top 500 2019"
        return m.group()
    return "[phone]"


def _domain(m: re.Match[str]) -> str:
    host = re.split(r"[:/]", m.group(), maxsplit=1)[0].lower()
    if host in _TECH_NAMES or (m.groupdict().get("tld") or "") in _FILE_SUFFIXES:
        return m.group()
    return "[url]"


def redact(text: str | None) -> str | None:
    """Replace e-mail addresses, URLs and phone numbers in ``text`` with ``[email]``, ``[url]``
    and ``[phone]`` (what is caught and what is kept: see the module doc)."""
    if not text:
        return text
    text = _EMAIL.sub("[email]", text)
    text = _OBFUSCATED_EMAIL.sub("[email]", text)
    text = _SPELLED_EMAIL.sub("[email]", text)
    text = _SCHEME_URL.sub("[url]", text)
    text = _PATH_DOMAIN.sub(_domain, text)
    text = _BARE_DOMAIN.sub(_domain, text)
    text = _PHONE.sub(_phone, text)
    return _LOCAL_PHONE.sub(_local_phone, text)


def has_contact(text: str | None) -> bool:
    """Whether ``text`` holds anything :func:`redact` would replace."""
    return bool(text) and redact(text) != text
