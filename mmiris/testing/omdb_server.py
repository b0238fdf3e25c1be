"""A local OMDb-compatible server: a test double (and benchmark tool), not for production.

Speaks the part of the OMDb API (https://www.omdbapi.com/) the crawler uses, from a JSONL of
records and a folder of posters, on 127.0.0.1::

    python -m mmiris.testing.omdb_server --records omdb.jsonl --posters posters/ \\
        [--links links.csv] [--port 8765] [--api-key KEY ...] [--daily-limit N] \\
        [--fault-5xx 0.1 --fault-timeout 0.05 --fault-invalid 0.02 ...] [--seed 0]

API: ``GET /?apikey=K&i=tt0114709[&plot=short|full]``, ``GET /?apikey=K&t=Toy+Story[&y=1995]``,
``GET /?apikey=K&s=toy[&y=1995][&page=1]``; posters at ``GET /posters/<file>``; request log at
``GET /__stats`` (``GET /__reset`` clears it). Answers and errors follow OMDb's shapes: ``{"Response":"False","Error":
"Movie not found!"}`` (200), ``Incorrect IMDb ID.`` (200), ``Invalid API key!`` and
``No API key provided.`` (401), ``Request limit reached!`` (401, after ``daily_limit``
requests of a key), ``Too many results.`` (200).

Record handling: OMDb fields are served as they are; ``movie_id``/``poster_file`` (our
bookkeeping) are stripped. ``imdbID`` comes from the record, else from ``--links``
(movieId -> tt%07d), else a synthetic ``tt9%07d`` of the movie id. ``Poster`` points at this
server when a poster file exists, else ``N/A``. ``t=`` matches titles case-, accent- and
punctuation-insensitively (real OMDb is similarly lenient); ``s=`` returns records whose
title contains every query word, 10 a page. ``plot=full`` serves ``Plot``; ``plot=short``
(OMDb's default) its first sentence.

Fault injection (seeded; decided per request key and attempt number, so a run is
reproducible whatever the thread interleaving): HTTP 5xx, HTTP 429 with Retry-After, hangs
(no answer for ``hang_s``, then the connection is closed), truncated bodies (fewer bytes than
Content-Length), invalid JSON bodies (API only), slow answers (``slow_s`` delay, then a
correct answer). The request log counts, per request key (path and query without apikey),
each outcome; ``ok`` is a complete, correct HTTP 200, so ``successful_requests_repeated`` is
the number of ok answers beyond the first per key.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from mmiris.crawl.titles import title_key
from mmiris.http import redact
from mmiris.ingest.movielens import read_links_file

log = logging.getLogger("mmiris.testing.omdb_server")

STRIPPED_FIELDS = ("movie_id", "poster_file")
PAGE_SIZE = 10


@dataclass
class Faults:
    """Probabilities per request (each attempt decided independently, seeded)."""

    http_5xx: float = 0.0
    http_429: float = 0.0
    timeout: float = 0.0  # hang for hang_s without answering, then close
    truncated: float = 0.0  # Content-Length says more than is sent
    invalid_json: float = 0.0  # a 200 whose body is not JSON (API requests only)
    slow: float = 0.0  # answer correctly after slow_s
    hang_s: float = 2.0
    slow_s: float = 0.05
    retry_after_s: int = 0
    seed: int = 0

    def any(self) -> bool:
        return any((self.http_5xx, self.http_429, self.timeout, self.truncated, self.invalid_json, self.slow))


def read_links(path: str | os.PathLike) -> dict[int, str]:
    """links.csv (movieId,imdbId,tmdbId) -> {movieId: 'tt0114709'} (the ingest parser's answer)."""
    return {int(movie): tt for movie, tt in read_links_file(path).items()}


class Catalogue:
    """The records the server answers from, with title and word indexes."""

    def __init__(
        self, records: list[dict], posters_dir: str | os.PathLike | None = None, links: dict[int, str] | None = None
    ):
        self.posters_dir = Path(posters_dir) if posters_dir else None
        self.by_id: dict[str, dict] = {}
        self.poster_of: dict[str, str] = {}  # imdbID -> poster file name under posters_dir
        self.order: list[str] = []
        for n, rec in enumerate(records):
            rec = dict(rec)
            movie_id = rec.get("movie_id")
            imdb = rec.get("imdbID")
            if not imdb and movie_id is not None and links:
                imdb = links.get(int(movie_id))
            if not imdb:
                imdb = f"tt9{int(movie_id if movie_id is not None else n):07d}"
            rec["imdbID"] = imdb
            pf = rec.get("poster_file")
            if pf and self.posters_dir is not None:
                name = Path(pf).name
                if (self.posters_dir / name).is_file():
                    self.poster_of[imdb] = name
            for k in STRIPPED_FIELDS:
                rec.pop(k, None)
            rec.setdefault("Type", "movie")
            rec["Response"] = "True"
            if imdb in self.by_id:
                continue
            self.by_id[imdb] = rec
            self.order.append(imdb)
        self.by_key: dict[str, list[str]] = defaultdict(list)
        self.by_word: dict[str, set[str]] = defaultdict(set)
        for imdb in self.order:
            key = title_key(self.by_id[imdb].get("Title", ""))
            self.by_key[key].append(imdb)
            for w in key.split():
                self.by_word[w].add(imdb)

    @classmethod
    def from_files(
        cls,
        records: str | os.PathLike,
        posters: str | os.PathLike | None = None,
        links: str | os.PathLike | None = None,
    ) -> Catalogue:
        with open(records, encoding="utf-8") as f:
            recs = [json.loads(line) for line in f if line.strip()]
        return cls(recs, posters, read_links(links) if links else None)

    @staticmethod
    def _year(rec: dict) -> str:
        return str(rec.get("Year", ""))[:4]

    def by_title(self, title: str, year: str | None) -> dict | None:
        for imdb in self.by_key.get(title_key(title), []):
            rec = self.by_id[imdb]
            if not year or self._year(rec) == year:
                return rec
        return None

    def search(self, query: str, year: str | None) -> list[dict]:
        words = title_key(query).split()
        if not words:
            return []
        hits = set.intersection(*(self.by_word.get(w, set()) for w in words))
        recs = [self.by_id[i] for i in self.order if i in hits]
        return [r for r in recs if not year or self._year(r) == year]


class RequestLog:
    """Outcome counts per request key, thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.by_key: dict[str, Counter] = defaultdict(Counter)
        self.attempts: Counter = Counter()

    def next_attempt(self, key: str) -> int:
        with self._lock:
            self.attempts[key] += 1
            return self.attempts[key]

    def record(self, key: str, outcome: str) -> None:
        with self._lock:
            self.by_key[key][outcome] += 1

    def reset(self) -> None:
        with self._lock:
            self.by_key.clear()
            self.attempts.clear()

    def stats(self) -> dict:
        with self._lock:
            outcomes: Counter = Counter()
            repeated = 0
            repeated_keys = []
            for key, c in self.by_key.items():
                outcomes.update(c)
                if c["ok"] > 1:
                    repeated += c["ok"] - 1
                    repeated_keys.append(key)
            return {
                "requests": sum(outcomes.values()),
                "keys": len(self.by_key),
                "by_outcome": dict(sorted(outcomes.items())),
                "successful_requests_repeated": repeated,
                "repeated_keys": sorted(repeated_keys)[:50],
            }

    def per_key(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self.by_key.items()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients pool connections
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stall between headers and body
    server: _Server

    def log_message(self, fmt, *args):  # never print the apikey
        log.debug("%s - %s", self.address_string(), redact(fmt % args))

    def parse_request(self) -> bool:  # a request line was read: answering from here on
        self.server.answering(+1)
        self._answering = True
        return super().parse_request()

    def handle_one_request(self) -> None:
        self._answering = False
        try:
            super().handle_one_request()
        finally:
            if self._answering:
                self.server.answering(-1)

    def do_GET(self):
        try:
            self._get()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None, truncate: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        self.wfile.flush()

    def _json(self, status: int, obj: dict, **kw) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8", **kw)

    def _get(self) -> None:
        srv = self.server.omdb
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if parts.path == "/__stats":
            return self._json(200, srv.log.stats())
        if parts.path == "/__reset":  # clears the request log and the per-key daily counts
            srv.log.reset()
            srv.set_limit(srv.daily_limit)
            return self._json(200, {"reset": True})
        key_params = sorted((k, v) for k, v in params.items() if k.lower() != "apikey")
        key = parts.path + ("?" + urlencode(key_params) if key_params else "")
        attempt = srv.log.next_attempt(key)
        fault, slow = srv.draw_fault(key, attempt)
        if slow:
            time.sleep(srv.faults.slow_s)
        is_api = parts.path in ("", "/")
        if fault == "timeout":
            srv.log.record(key, "fault:timeout")
            time.sleep(srv.faults.hang_s)
            self.close_connection = True
            return
        if fault == "5xx":
            srv.log.record(key, "fault:5xx")
            code = 503 if attempt % 2 else 500
            return self._send(code, b"<html><body>Service Unavailable</body></html>", "text/html")
        if fault == "429":
            srv.log.record(key, "fault:429")
            return self._send(
                429, b"Too Many Requests", "text/plain", extra={"Retry-After": str(srv.faults.retry_after_s)}
            )
        if fault == "invalid_json" and is_api:
            srv.log.record(key, "fault:invalid_json")
            return self._send(
                200, b"<html><head><title>502 Bad Gateway</title></head></html>", "application/json; charset=utf-8"
            )
        truncate = fault == "truncated"
        if parts.path.startswith("/posters/"):
            return self._poster(key, parts.path[len("/posters/") :], truncate)
        if not is_api:
            srv.log.record(key, "404")
            return self._send(404, b"Not Found", "text/plain")
        status, obj = srv.answer(params)
        srv.log.record(key, "fault:truncated" if truncate else ("ok" if status == 200 else str(status)))
        self._json(status, obj, truncate=truncate)

    def _poster(self, key: str, name: str, truncate: bool) -> None:
        srv = self.server.omdb
        posters = srv.catalogue.posters_dir
        path = (posters / Path(name).name) if posters else None
        if path is None or not path.is_file():
            srv.log.record(key, "404")
            return self._send(404, b"Not Found", "text/plain")
        srv.log.record(key, "fault:truncated" if truncate else "ok")
        # Served as image/jpeg whatever the content, as file names and headers lie in the wild.
        self._send(200, path.read_bytes(), "image/jpeg", truncate=truncate)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    omdb: OmdbServer

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._count_lock = threading.Lock()
        self._answering = 0
        self.connections: set[socket.socket] = set()  # accepted, not yet closed

    def answering(self, delta: int = 0) -> int:
        with self._count_lock:
            self._answering += delta
            return self._answering

    def get_request(self):
        conn, addr = super().get_request()
        with self._count_lock:
            self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request) -> None:
        with self._count_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def busy(self) -> bool:
        """A request being answered, or bytes not read yet: a connection waiting to be
        accepted, a request (or the close) sent on an open one."""
        with self._count_lock:
            if self._answering:
                return True
            sockets = [self.socket, *self.connections]
        try:
            readable, _, _ = select.select(sockets, [], [], 0)
        except (OSError, ValueError):  # a connection closed meanwhile: look again
            return True
        return bool(readable)


class OmdbServer:
    """``with OmdbServer(catalogue, api_keys={"k"}) as srv: requests.get(srv.url, ...)``."""

    def __init__(
        self,
        catalogue: Catalogue,
        api_keys: set[str] | frozenset[str] = frozenset(),
        daily_limit: int | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.catalogue = catalogue
        self.api_keys = set(api_keys)
        self.daily_limit = daily_limit
        self.faults = faults or Faults()
        self.log = RequestLog()
        self._used: Counter = Counter()
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.omdb = self
        address = self._httpd.server_address
        self.host = address[0] if isinstance(address[0], str) else bytes(address[0]).decode()
        self.port = address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def poster_url(self, imdb: str) -> str | None:
        name = self.catalogue.poster_of.get(imdb)
        return f"http://{self.host}:{self.port}/posters/{quote(name)}" if name else None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> OmdbServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="omdb-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def __enter__(self) -> OmdbServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def busy(self) -> bool:
        """Whether the server still has something to answer. A client killed mid-request
        leaves what it sent to be answered after it is gone; a test waits for ``not busy()``
        (held a moment: a handler may be between reading and answering) before it counts."""
        return self._httpd.busy()

    # ----------------------------------------------------------------- behaviour
    def set_limit(self, daily_limit: int | None) -> None:
        with self._lock:
            self.daily_limit = daily_limit
            self._used.clear()

    def draw_fault(self, key: str, attempt: int) -> tuple[str | None, bool]:
        f = self.faults
        if not f.any():
            return None, False
        seed = hashlib.sha256(f"{f.seed}\x00{key}\x00{attempt}".encode()).digest()
        rng = random.Random(seed)
        u, slow = rng.random(), rng.random() < f.slow
        for name, p in (
            ("5xx", f.http_5xx),
            ("429", f.http_429),
            ("timeout", f.timeout),
            ("truncated", f.truncated),
            ("invalid_json", f.invalid_json),
        ):
            if u < p:
                return name, slow
            u -= p
        return None, slow

    def answer(self, params: dict) -> tuple[int, dict]:
        """OMDb's answer (HTTP status, JSON object) to one API request."""
        key = params.get("apikey")
        if not key:
            return 401, {"Response": "False", "Error": "No API key provided."}
        if self.api_keys and key not in self.api_keys:
            return 401, {"Response": "False", "Error": "Invalid API key!"}
        with self._lock:
            if self.daily_limit is not None and self._used[key] >= self.daily_limit:
                return 401, {"Response": "False", "Error": "Request limit reached!"}
            self._used[key] += 1
        cat = self.catalogue
        year = (params.get("y") or "").strip() or None
        if params.get("i"):
            imdb = params["i"].strip()
            rec = cat.by_id.get(imdb) if re.fullmatch(r"tt\d{7,}", imdb) else None
            if rec is None:
                return 200, {"Response": "False", "Error": "Incorrect IMDb ID."}
            return 200, self._full(rec, params.get("plot", "short"))
        if params.get("t"):
            rec = cat.by_title(params["t"], year)
            if rec is None:
                return 200, {"Response": "False", "Error": "Movie not found!"}
            return 200, self._full(rec, params.get("plot", "short"))
        if "s" in params:
            q = params["s"]
            if len(title_key(q)) < 2:
                return 200, {"Response": "False", "Error": "Too many results."}
            hits = cat.search(q, year)
            page_text = str(params.get("page") or "1")
            page = max(1, int(page_text)) if page_text.isdigit() else 1
            chunk = hits[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
            if not chunk:
                return 200, {"Response": "False", "Error": "Movie not found!"}
            return 200, {
                "Search": [
                    {
                        "Title": r.get("Title"),
                        "Year": r.get("Year"),
                        "imdbID": r["imdbID"],
                        "Type": r.get("Type", "movie"),
                        "Poster": self._poster(r),
                    }
                    for r in chunk
                ],
                "totalResults": str(len(hits)),
                "Response": "True",
            }
        return 200, {"Response": "False", "Error": "Incorrect IMDb ID."}

    def _poster(self, rec: dict) -> str:
        return self.poster_url(rec["imdbID"]) or "N/A"

    def _full(self, rec: dict, plot: str) -> dict:
        out = dict(rec)
        out["Poster"] = self._poster(rec)
        if plot != "full" and isinstance(out.get("Plot"), str) and out["Plot"] != "N/A":
            m = re.match(r"(.+?[.!?])(\s|$)", out["Plot"])
            out["Plot"] = m.group(1) if m else out["Plot"]
        # OMDb's key order: Response last.
        resp = out.pop("Response")
        out["Response"] = resp
        return out


def fetch_stats(base_url: str, timeout_s: float = 5.0) -> dict:
    """The request log of a running server (``GET /__stats``)."""
    import requests

    return requests.get(base_url.rstrip("/") + "/__stats", timeout=timeout_s).json()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mmiris.testing.omdb_server",
        description="Local OMDb-compatible server (test fixture, benchmarks).",
    )
    p.add_argument("--records", required=True, help="JSONL of OMDb records")
    p.add_argument("--posters", default=None, help="folder of poster files")
    p.add_argument("--links", default=None, help="links.csv (movieId,imdbId,tmdbId) for imdbIDs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accepted key (repeatable); none given: any non-empty key is accepted",
    )
    p.add_argument("--daily-limit", type=int, default=None, help="requests per key, then 'Request limit reached!'")
    for name, help_ in (
        ("5xx", "HTTP 500/503"),
        ("429", "HTTP 429"),
        ("timeout", "hang, no answer"),
        ("truncated", "truncated body"),
        ("invalid-json", "non-JSON 200 body"),
        ("slow", "slow but correct answer"),
    ):
        p.add_argument(f"--fault-{name}", type=float, default=0.0, help=f"rate of {help_}")
    p.add_argument("--hang-s", type=float, default=2.0)
    p.add_argument("--slow-s", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats-out", default=None, help="write the request log here on shutdown")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faults = Faults(
        http_5xx=args.fault_5xx,
        http_429=args.fault_429,
        timeout=args.fault_timeout,
        truncated=args.fault_truncated,
        invalid_json=args.fault_invalid_json,
        slow=args.fault_slow,
        hang_s=args.hang_s,
        slow_s=args.slow_s,
        seed=args.seed,
    )
    cat = Catalogue.from_files(args.records, args.posters, args.links)
    srv = OmdbServer(cat, set(args.api_key), args.daily_limit, faults, args.host, args.port)
    log.info(
        "OMDb-compatible server on %s (%d records, %d posters, faults %s)",
        srv.url,
        len(cat.by_id),
        len(cat.poster_of),
        asdict(faults) if faults.any() else "off",
    )
    print(srv.url, flush=True)

    def _stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if args.stats_out:
            Path(args.stats_out).write_text(json.dumps(srv.log.stats(), indent=2))
        srv._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
