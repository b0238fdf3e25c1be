"""When a failed task is worth retrying: network trouble yes, bad input no."""

from __future__ import annotations

from mmiris.errors import MmirisError


def _exception(state) -> BaseException | None:
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we classify it, not handle it
        return exc
    return None


def retry_unless_user_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: no retry for MmirisError (bad input, missing artifact,
    bad parameter — the same input fails the same way); retry anything else (connection
    errors, timeouts, 5xx that outlived the HTTP client's own retries)."""
    exc = _exception(state)
    return exc is not None and not isinstance(exc, MmirisError)


def retry_crawl(task, task_run, state) -> bool:
    """Crawls: also retry CrawlIncomplete (some requests still failed after the HTTP
    client's retries; the response cache makes the retry continue, not start over). Never
    retry CrawlStopped (request limit, daily quota, invalid key: waiting minutes won't help;
    the next scheduled run continues) or other bad input."""
    from mmiris.crawl.parallel import CrawlIncomplete

    exc = _exception(state)
    if exc is None:
        return False
    return isinstance(exc, CrawlIncomplete) or not isinstance(exc, MmirisError)
