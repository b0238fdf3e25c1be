"""MovieLens titles to the forms OMDb knows.

MovieLens writes ``Shawshank Redemption, The (1994)`` and
``City of Lost Children, The (Cité des enfants perdus, La) (1995)``: the year in the last
parentheses, trailing articles after a comma, alternative (often original-language) titles
in further parentheses, sometimes ``a.k.a.``. OMDb knows ``The Shawshank Redemption``,
``The City of Lost Children`` or ``La cité des enfants perdus``. ``title_variants`` lists the
forms to try, best first; ``similarity`` scores a candidate title for the search's
best-match rule.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher

# Articles MovieLens moves behind a comma (English, French, German, Spanish, Italian,
# Portuguese, Dutch, Scandinavian).
ARTICLES = (
    "the",
    "a",
    "an",
    "les",
    "le",
    "la",
    "l'",
    "der",
    "die",
    "das",
    "den",
    "det",
    "el",
    "los",
    "las",
    "il",
    "lo",
    "gli",
    "i",
    "une",
    "un",
    "una",
    "uno",
    "ein",
    "eine",
    "de",
    "het",
    "een",
    "o",
    "os",
    "as",
)
_ARTICLE_RE = re.compile(
    r"^(?P<rest>.+?),\s*(?P<art>{})(?P<tail>\s*[:\-–].*)?$".format("|".join(re.escape(a) for a in ARTICLES)),
    re.IGNORECASE,
)
_YEAR_RE = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_AKA_RE = re.compile(r"^(?:a\.?k\.?a\.?|aka)\s+", re.IGNORECASE)
_POSSESSIVE_RE = re.compile(r"^(?:[A-Z][\w.\-]*\s+){1,3}[A-Z][\w.\-]*'s\s+(?P<rest>\S.*)$")
_LEADING_ARTICLE_RE = re.compile(
    r"^(?:{})\s+".format("|".join(re.escape(a) for a in ARTICLES if not a.endswith("'"))), re.IGNORECASE
)


@dataclass(frozen=True)
class ParsedTitle:
    main: str  # the title without year and alternatives, as MovieLens spells it
    alternatives: tuple[str, ...]  # titles in parentheses, 'a.k.a.' removed
    year: int | None


def title_key(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form of a title (for comparisons)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def article_to_front(title: str) -> str:
    """``Shawshank Redemption, The`` -> ``The Shawshank Redemption``; ``Associé, L'`` ->
    ``L'Associé``; ``Rage: Carrie 2, The`` -> ``The Rage: Carrie 2``."""
    m = _ARTICLE_RE.match(title.strip())
    if not m:
        return title.strip()
    art = m.group("art")
    sep = "" if art.endswith("'") else " "
    return f"{art}{sep}{m.group('rest').strip()}{m.group('tail') or ''}"


def split_year(raw: str) -> tuple[str, int | None]:
    """``Toy Story (1995)`` -> (``Toy Story``, 1995); no year -> (raw, None)."""
    m = _YEAR_RE.search(raw)
    if not m:
        return raw.strip(), None
    return raw[: m.start()].strip(), int(m.group(1))


def parse_title(raw: str, year: int | None = None) -> ParsedTitle:
    """Split a MovieLens title into main title, alternatives and year (``year`` wins if given)."""
    text, parsed_year = split_year(raw or "")
    alternatives: list[str] = []
    while text.endswith(")"):
        depth, start = 0, None
        for i in range(len(text) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(text[i], 0)
            if depth == 0:
                start = i
                break
        if not start:  # unbalanced, or the whole title is in parentheses
            break
        alt = _AKA_RE.sub("", text[start + 1 : -1].strip()).strip()
        if alt:
            alternatives.insert(0, alt)
        text = text[:start].strip()
    return ParsedTitle(text, tuple(alternatives), year if year is not None else parsed_year)


def title_variants(parsed: ParsedTitle, max_variants: int = 6) -> list[str]:
    """Forms to try with OMDb, best first, no two with the same ``title_key``.

    First the main title and each alternative with the article moved to the front; then, for
    each, the spellings that differ most often between MovieLens and OMDb: ``and`` <-> ``&``,
    without the moved article (``House on Haunted Hill, The`` -> ``House on Haunted Hill``),
    and without a possessive credit of two or more words (``Wes Craven's New Nightmare`` ->
    ``New Nightmare``; ``Schindler's List`` stays whole)."""
    bases = [article_to_front(t) for t in (parsed.main, *parsed.alternatives)]
    extras = []
    for t, base in zip((parsed.main, *parsed.alternatives), bases):
        if " and " in base:
            extras.append(base.replace(" and ", " & "))
        if " & " in base:
            extras.append(base.replace(" & ", " and "))
        if base != t.strip():  # an article was moved: OMDb sometimes drops it
            moved = _ARTICLE_RE.match(t.strip())
            if moved:
                extras.append(moved.group("rest").strip() + (moved.group("tail") or ""))
        m = _POSSESSIVE_RE.match(base)
        if m:
            extras.append(m.group("rest"))
    out, seen = [], set()
    for form in (*bases, *extras):
        k = title_key(form)
        if k and k not in seen:
            seen.add(k)
            out.append(form)
    return out[:max_variants]


def _drop_article(key: str) -> str:
    return _LEADING_ARTICLE_RE.sub("", key)


def _ratio(ka: str, kb: str) -> float:
    if not ka or not kb:
        return 0.0
    if ka == kb:
        return 1.0
    return max(
        SequenceMatcher(None, ka, kb).ratio(), SequenceMatcher(None, _drop_article(ka), _drop_article(kb)).ratio()
    )


_SUBTITLE_RE = re.compile(r"\s*(?::|\s-\s)\s*")


def similarity(a: str, b: str) -> float:
    """0..1 likeness of title ``a`` to candidate ``b``, ignoring case, accents, punctuation
    and a leading article. A candidate whose part before or after a subtitle separator
    (``:``, `` - ``) is ``a`` scores 0.95 x that part's likeness (``Interview with the
    Vampire`` vs ``Interview with the Vampire: The Vampire Chronicles``)."""
    ka = title_key(a)
    best = _ratio(ka, title_key(b))
    parts = _SUBTITLE_RE.split(b)
    if len(parts) > 1:
        for part in (parts[0], parts[-1]):
            best = max(best, 0.95 * _ratio(ka, title_key(part)))
    return best


def omdb_year(text: str | None) -> int | None:
    """OMDb's Year (``1995``, ``1995–1998``, ``2004–``) -> its first year."""
    m = re.match(r"\s*(\d{4})", text or "")
    return int(m.group(1)) if m else None
