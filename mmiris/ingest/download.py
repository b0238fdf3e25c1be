"""Local path or http(s) URL to a local file: cached, resumable, checksum-verified downloads.

A URL is downloaded once into the cache (``$MMIRIS_CACHE/downloads``, default
``~/.cache/mmiris/downloads``) and reused afterwards. An interrupted download keeps its
``.part`` file and continues with an HTTP ``Range`` request, in the same call (a dropped
connection is retried) or the next one. Where the source publishes a checksum (GroupLens puts
``<file>.md5`` beside each zip) the file is verified before it is used; a mismatch deletes
it and fails. All requests go through :func:`mmiris.http.make_session`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import requests

from mmiris.errors import InputError
from mmiris.http import make_session, redact

log = logging.getLogger("mmiris.ingest.download")

_CHUNK = 1 << 16  # small blocks: a dropped transfer keeps all but the last block
_HEX = re.compile(r"\b([0-9a-fA-F]{32}|[0-9a-fA-F]{64})\b")


def is_url(source: str | os.PathLike) -> bool:
    return str(source).startswith(("http://", "https://"))


def cache_dir() -> Path:
    root = os.environ.get("MMIRIS_CACHE") or Path.home() / ".cache" / "mmiris"
    return Path(root) / "downloads"


def fetch(
    source: str | os.PathLike,
    *,
    cache: str | os.PathLike | None = None,
    checksum: str | None = None,
    session: requests.Session | None = None,
    attempts: int = 5,
) -> Path:
    """Return a local path for ``source``; download URLs (see the module docstring).

    ``checksum``: ``"md5:<hex>"`` or ``"sha256:<hex>"`` to verify against; by default a
    published ``<url>.md5`` / ``<url>.sha256`` is looked up and used when it exists.
    """
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        return path
    url = str(source)
    name = Path(urlsplit(url).path).name or "download"
    folder = Path(cache or cache_dir()) / hashlib.sha256(url.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    final, part = folder / name, folder / f"{name}.part"
    if final.exists():
        log.info("using cached %s for %s", final, redact(url))
        return final
    session = session or make_session()
    expected = _parse_checksum(checksum) if checksum else _published_checksum(session, url)
    for attempt in range(1, attempts + 1):
        try:
            _download(session, url, part)
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            if attempt == attempts:
                kept = (
                    f"the partial file {part} ({part.stat().st_size} bytes) is kept and the next run resumes it"
                    if part.exists() and part.stat().st_size
                    else "nothing was received; check the URL and the network"
                )
                raise InputError(
                    f"download of {redact(url)} failed after {attempts} attempts ({type(exc).__name__}); {kept}"
                ) from None
            log.warning(
                "download of %s interrupted (%s); resuming from byte %d",
                redact(url),
                type(exc).__name__,
                part.stat().st_size if part.exists() else 0,
            )
    if expected:
        algo, want = expected
        got = _hash_file(part, algo)
        if got != want:
            part.unlink()
            raise InputError(
                f"download of {redact(url)}: {algo} checksum mismatch, expected {want}, "
                f"got {got}; the file was deleted, run again to download it anew"
            )
        log.info("verified %s %s of %s", algo, want, redact(url))
    else:
        log.info("no checksum published for %s; not verified", redact(url))
    os.replace(part, final)
    return final


def _download(session: requests.Session, url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    timeout = getattr(session, "request_timeout", (10, 60))
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and have:  # already complete
            return
        if r.status_code not in (200, 206):
            raise InputError(f"download of {redact(url)}: HTTP {r.status_code} {r.reason}; expected 200 or 206")
        mode = "ab" if (r.status_code == 206 and have) else "wb"  # 200: server ignored Range
        if mode == "ab":
            log.info("resuming %s at byte %d", redact(url), have)
        with open(part, mode) as f:
            for block in r.iter_content(_CHUNK):
                f.write(block)


def _published_checksum(session: requests.Session, url: str) -> tuple[str, str] | None:
    timeout = getattr(session, "request_timeout", (10, 60))
    for algo in ("md5", "sha256"):
        try:
            r = session.get(f"{url}.{algo}", timeout=timeout)
        except requests.RequestException:
            continue
        if r.status_code == 200:
            m = _HEX.search(r.text)
            if m and len(m.group(1)) == (32 if algo == "md5" else 64):
                return algo, m.group(1).lower()
    return None


def _parse_checksum(text: str) -> tuple[str, str]:
    algo, sep, hexdigest = text.partition(":")
    if not sep or algo not in ("md5", "sha256") or not _HEX.fullmatch(hexdigest):
        raise InputError(f"checksum {text!r}: expected 'md5:<32 hex>' or 'sha256:<64 hex>'")
    return algo, hexdigest.lower()


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()
