"""The OMDb client and the lookup strategy for MovieLens movies.

Lookup order for one movie (each answer cached, so a re-run repeats none of them):

1. ``i=tt…`` when the IMDb id is known (items' ``imdb_id`` or ``links.csv``) -> ``imdb_id``;
2. ``t=<title>&y=<year>`` for each title variant (trailing article moved to the front, each
   alternative title from the parentheses, then ``and``/``&``, article-less and
   credit-less spellings; see ``mmiris.crawl.titles.title_variants``) at the year, then the
   first two variants at year-1 and year+1 -> ``title_year`` / ``title_near_year``
   (``title`` when the item has no year);
3. ``s=<title>`` for the first three variants; the best-match rule takes, among results
   whose first year is within ±1 of the item's, the one whose title is most similar to any
   variant (``similarity``: case/accent/punctuation-blind, leading article ignored, a part
   before/after a subtitle separator counts at 0.95), ties to the exact year, then to OMDb's
   order, and accepts it when the similarity is at least ``min_search_similarity`` (0.8);
   the full record is then fetched with ``i=`` -> ``search``.

So an item costs one request when its id or first title form matches, and at most
6 + 4 + 3 + 1 = 14 when nothing does.

No match leaves a reason: ``no_query`` (neither id nor title), ``not_found`` (every lookup
answered "not found"), ``no_close_match`` (the search had results, none close enough).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mmiris.crawl.apikey import ApiKey
from mmiris.crawl.fetcher import (
    OK,
    RETRY,
    BadResponse,
    Counters,
    Fetcher,
    FetchSettings,
    InvalidApiKey,
    process_fetcher,
)
from mmiris.crawl.images import fetch_image
from mmiris.crawl.parallel import ChunkResult, RequestLimitReached, run_items
from mmiris.crawl.titles import omdb_year, parse_title, similarity, title_variants

DEFAULT_BASE_URL = "https://www.omdbapi.com/"
LIMIT_ERROR = "Request limit reached!"
KEY_ERRORS = ("Invalid API key!", "No API key provided.")
# Answers that settle a request: cached and never asked again.
DEFINITIVE_ERRORS = (
    "Movie not found!",
    "Incorrect IMDb ID.",
    "Error getting data.",
    "Series or episode not found!",
    "Too many results.",
)
METHODS = ("imdb_id", "title_year", "title_near_year", "title", "search")


@dataclass
class MatchConfig:
    year_window: int = 1  # try t=…&y=year±window, accept search results within it
    min_search_similarity: float = 0.8
    min_title_similarity: float = 0.5  # sanity check of what t= returned
    plot: str = "full"
    use_search: bool = True
    near_year_variants: int = 2  # title variants also tried at year +-window
    search_variants: int = 3  # title variants sent to the search endpoint

    def params(self) -> dict:
        return {
            "year_window": self.year_window,
            "min_search_similarity": self.min_search_similarity,
            "min_title_similarity": self.min_title_similarity,
            "plot": self.plot,
            "use_search": self.use_search,
            "near_year_variants": self.near_year_variants,
            "search_variants": self.search_variants,
        }


@dataclass
class Match:
    record: dict | None
    raw: str | None  # the record's JSON exactly as OMDb sent it
    method: str | None
    query: str | None  # the request that matched (no key)
    score: float | None
    reason: str | None  # why there is no match
    tried: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return self.record is not None


def classify_omdb(status: int, body: bytes) -> str:
    """OMDb's answer: OK to cache, RETRY, or an exception that stops the run."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if 400 <= status < 500:
            raise BadResponse(
                f"HTTP {status} with a non-JSON body from the OMDb base URL: is --base-url right?"
            ) from None
        return RETRY
    if not isinstance(obj, dict):
        return RETRY
    error = obj.get("Error")
    if error == LIMIT_ERROR:
        raise RequestLimitReached("OMDb: Request limit reached! (the key's daily limit)")
    if error in KEY_ERRORS:
        raise InvalidApiKey(f"OMDb rejected the API key: {error} Check $OMDB_API_KEY or the Prefect Secret block.")
    if status == 200 and (obj.get("Response") == "True" or error in DEFINITIVE_ERRORS):
        return OK
    if 400 <= status < 500:
        raise BadResponse(f"HTTP {status} from OMDb: {str(error)[:100]!r}")
    return RETRY  # e.g. "Something went wrong." with 200: transient on OMDb's side


def _query_text(params: dict) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items() if k != "plot")


class OmdbClient:
    def __init__(self, fetcher: Fetcher, base_url: str, api_key: ApiKey, config: MatchConfig | None = None):
        self.fetcher, self.base_url, self.api_key = fetcher, base_url, api_key
        self.config = config or MatchConfig()

    def query(self, params: dict, counters: Counters) -> tuple[dict, str]:
        got = self.fetcher.fetch(
            self.base_url,
            params,
            classify=classify_omdb,
            counters=counters,
            secret_params={"apikey": self.api_key},
            key=_omdb_key(params),
            what="OMDb",
        )
        text = got.body.decode("utf-8")
        return json.loads(text), text

    def lookup(self, title: str | None, year: int | None, imdb_id: str | None, counters: Counters) -> Match:
        cfg, tried = self.config, []

        def ask(params):
            tried.append(_query_text(params))
            return self.query(params, counters)

        if imdb_id:
            obj, raw = ask({"i": imdb_id, "plot": cfg.plot})
            if obj.get("Response") == "True":
                return Match(obj, raw, "imdb_id", tried[-1], None, None, tried)
        if not title:
            return Match(None, None, None, None, None, "not_found" if tried else "no_query", tried)
        parsed = parse_title(title, year)
        variants = title_variants(parsed)
        if not variants:
            return Match(None, None, None, None, None, "not_found" if tried else "no_query", tried)
        y = parsed.year
        attempts: list[tuple[str, int | None]] = [(v, y) for v in variants]
        if y is not None:  # then year +-1, for the first few variants only (request economy)
            for v in variants[: cfg.near_year_variants]:
                for d in range(1, cfg.year_window + 1):
                    attempts += [(v, y - d), (v, y + d)]
        for v, yy in attempts:
            params = {"t": v, "plot": cfg.plot}
            if yy is not None:
                params["y"] = str(yy)
            obj, raw = ask(params)
            if obj.get("Response") != "True":
                continue
            score = max(similarity(w, obj.get("Title", "")) for w in variants)
            if score < cfg.min_title_similarity:
                continue
            method = "title" if yy is None else ("title_year" if yy == y else "title_near_year")
            return Match(obj, raw, method, tried[-1], round(score, 4), None, tried)
        if not cfg.use_search:
            return Match(None, None, None, None, None, "not_found", tried)
        best, saw_results = None, False
        for v in variants[: cfg.search_variants]:
            obj, _ = ask({"s": v})
            for rank, cand in enumerate(obj.get("Search") or []):
                saw_results = True
                cy = omdb_year(cand.get("Year"))
                if y is not None and (cy is None or abs(cy - y) > cfg.year_window):
                    continue
                if not str(cand.get("imdbID", "")).startswith("tt"):
                    continue
                score = max(similarity(w, cand.get("Title", "")) for w in variants)
                rank_key = (score, -(abs(cy - y) if y is not None and cy is not None else 0), -rank)
                if best is None or rank_key > best[0]:
                    best = (rank_key, cand, tried[-1])
            if best is not None and best[0][0] >= cfg.min_search_similarity:
                break
        if best is None or best[0][0] < cfg.min_search_similarity:
            return Match(None, None, None, None, None, "no_close_match" if saw_results else "not_found", tried)
        (score, _, _), cand, query = best
        obj, raw = ask({"i": cand["imdbID"], "plot": cfg.plot})
        if obj.get("Response") != "True":
            return Match(None, None, None, None, None, "not_found", tried)
        return Match(obj, raw, "search", query, round(score, 4), None, tried)


def _omdb_key(params: dict) -> str:
    # Keyed by OMDb's own query, not the host: a mirror with the same data shares the cache.
    from urllib.parse import urlencode

    return "omdb?" + urlencode(sorted(params.items()))


# ---------------------------------------------------------------- the Dask task
@dataclass
class OmdbTask:
    """What each chunk task needs (picklable; the key prints as ***)."""

    fetch: FetchSettings
    base_url: str
    api_key: ApiKey
    match: MatchConfig
    posters: bool = True


def crawl_movie(client: OmdbClient, item: dict, counters: Counters, posters: bool = True) -> dict:
    """One item -> its row material: the match and the poster."""
    m = client.lookup(item.get("title"), item.get("year"), item.get("imdb_id"), counters)
    row: dict[str, Any] = {
        "item_id": int(item["item_id"]),
        "matched": m.matched,
        "method": m.method,
        "query": m.query,
        "score": m.score,
        "reason": m.reason,
        "tried": len(m.tried),
        "record": m.record,
        "raw": m.raw,
        "image": None,
    }
    if m.matched and posters and m.record is not None:
        row["image"] = fetch_image(client.fetcher, m.record.get("Poster"), counters)
    return row


def crawl_omdb_chunk(items: list[dict], task: OmdbTask) -> ChunkResult:
    fetcher = process_fetcher(task.fetch)
    client = OmdbClient(fetcher, task.base_url, task.api_key, task.match)
    return run_items(items, lambda it, c: crawl_movie(client, it, c, task.posters), task.fetch.run_id)
