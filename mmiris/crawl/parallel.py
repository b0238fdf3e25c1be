"""Run a crawl's items in chunks on Dask (or a thread pool), bounded, with progress and stops.

The driver cuts the items into chunks and keeps at most ``concurrency`` chunk tasks in
flight (so concurrency is bounded however large the cluster); each task fetches its items one
after the other through its process's ``Fetcher`` (shared session, rate-limit share, cache).
When a task meets a condition that ends the run — the API's request limit, our daily quota,
an invalid key, an answer no retry can fix — it raises the run's stop flag in its process and
returns; the driver then sets the flag on every worker (``client.run``), submits nothing more,
lets the tasks in flight drain (each returns before its next request) and raises
``CrawlStopped``. Everything fetched so far is in the response cache, so
the next run continues where this one ended. Items whose requests kept failing (transient
errors after every retry) come back as ``failed``; the caller decides (the stages refuse to
publish and ask for a re-run, which only retries those).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import as_completed as cf_as_completed
from dataclasses import dataclass, field

from mmiris.crawl.fetcher import (
    BadResponse,
    Counters,
    FetchFailed,
    InvalidApiKey,
    Stopped,
    clear_stop,
    release_fetcher,
    signal_stop,
    stop_reason,
)
from mmiris.crawl.ratelimit import QuotaExhausted
from mmiris.errors import MmirisError
from mmiris.progress import Progress

log = logging.getLogger("mmiris.crawl")


class RequestLimitReached(QuotaExhausted):
    """OMDb answered 'Request limit reached!'."""


class CrawlStopped(MmirisError):
    """The run stopped before finishing; what was fetched is cached, a re-run continues."""

    def __init__(self, reason: str, message: str, done: int = 0, total: int = 0):
        super().__init__(message)
        self.reason, self.done, self.total = reason, done, total


class CrawlIncomplete(MmirisError):
    """Some items still failed after every retry; nothing published, a re-run retries them."""


@dataclass
class ChunkResult:
    rows: list[dict] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    stop: str | None = None
    stop_message: str | None = None


def run_items(items: Sequence[dict], per_item: Callable[[dict, Counters], dict], run_id: str) -> ChunkResult:
    """Inside a task: process items in order, turning run-ending conditions into a stop."""
    out = ChunkResult()
    for item in items:
        try:
            out.rows.append(per_item(item, out.counters))
        except FetchFailed as exc:
            out.failed.append((int(item["item_id"]), str(exc)))
        except Stopped as exc:
            out.stop, out.stop_message = str(exc), None
            break
        except (RequestLimitReached, QuotaExhausted, InvalidApiKey, BadResponse) as exc:
            out.stop = {
                RequestLimitReached: "request_limit",
                QuotaExhausted: "daily_quota",
                InvalidApiKey: "invalid_key",
                BadResponse: "bad_response",
            }[type(exc)]
            out.stop_message = str(exc)
            signal_stop(run_id, out.stop)
            break
    return out


@dataclass
class RunResult:
    rows: list[dict]
    failed: list[tuple[int, str]]
    counters: Counters


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_chunks(
    task: Callable,
    items: Sequence[dict],
    task_args: tuple,
    *,
    run_id: str,
    client=None,
    concurrency: int = 8,
    chunk_size: int = 20,
    desc: str = "crawl",
) -> RunResult:
    """Run ``task(chunk, *task_args) -> ChunkResult`` over ``items``; see the module docstring.

    ``client``: a dask.distributed Client, or None for an in-process thread pool."""
    chunk_size = max(1, chunk_size)
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    concurrency = max(1, min(concurrency, len(chunks) or 1))
    rows: list[dict] = []
    failed: list[tuple[int, str]] = []
    counters = Counters()
    stop: tuple[str, str] | None = None
    pool = None
    if client is None:
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=desc)
        submit = lambda chunk: pool.submit(task, chunk, *task_args)  # noqa: E731
    else:
        submit = lambda chunk: client.submit(task, chunk, *task_args, pure=False)  # noqa: E731
    todo = iter(chunks)
    inflight = {submit(c) for c in _take(todo, concurrency)}
    try:
        with Progress(len(items), desc, log, unit="items") as progress:
            while inflight:
                fut = _next_done(inflight, client)
                inflight.discard(fut)
                if fut.cancelled():
                    continue
                try:
                    res: ChunkResult = fut.result()
                except (CancelledError, asyncio.CancelledError):
                    continue
                rows.extend(res.rows)
                failed.extend(res.failed)
                counters.add(res.counters)
                progress.update(len(res.rows) + len(res.failed))
                if res.stop and res.stop_message and stop is None:
                    stop = (res.stop, res.stop_message)
                    # Tasks in flight see the flag before their next request and return at
                    # once; letting them drain keeps what they fetched and avoids waiting on
                    # cancelled futures (which distributed.wait refuses).
                    _stop_everywhere(client, run_id, res.stop)
                if stop is None:
                    inflight.update(submit(c) for c in _take(todo, 1))
    except BaseException:
        _stop_everywhere(client, run_id, "interrupted")
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            try:
                client.run(release_fetcher, run_id)
                client.run(clear_stop, run_id)
            except Exception:  # noqa: BLE001 (cluster going away: nothing to release)
                pass
        release_fetcher(run_id)
        clear_stop(run_id)
    if stop is not None:
        reason, message = stop
        tail = (
            "everything fetched is cached, re-run to continue"
            if reason in ("request_limit", "daily_quota")
            else "nothing published"
        )
        raise CrawlStopped(
            reason,
            f"{message} ({len(rows)} of {len(items)} items done this run; {tail})",
            done=len(rows),
            total=len(items),
        )
    return RunResult(rows, failed, counters)


def _take(it, n):
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


def _next_done(inflight: set, client):
    if client is None:
        return next(iter(cf_as_completed(inflight)))
    from distributed import wait

    done = wait(list(inflight), return_when="FIRST_COMPLETED").done
    return next(iter(done))


def _stop_everywhere(client, run_id: str, reason: str) -> None:
    signal_stop(run_id, reason)
    if client is not None:
        try:
            client.run(signal_stop, run_id, reason)
        except Exception:  # noqa: BLE001
            pass


def default_chunk_size(n_items: int, concurrency: int) -> int:
    """Small chunks for steady progress and cheap restarts; at least 4 chunks per slot."""
    return max(1, min(25, math.ceil(n_items / max(1, 4 * concurrency))))


__all__ = [
    "ChunkResult",
    "CrawlIncomplete",
    "CrawlStopped",
    "RequestLimitReached",
    "RunResult",
    "new_run_id",
    "run_chunks",
    "run_items",
    "stop_reason",
    "default_chunk_size",
]
