"""When a failed task is worth retrying: network trouble yes, bad input no."""

from __future__ import annotations

from mmiris.errors import MmirisError


def retry_unless_user_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: no retry for MmirisError (bad input, missing artifact,
    bad parameter — the same input fails the same way); retry anything else (connection
    errors, timeouts, 5xx that outlived the HTTP client's own retries)."""
    try:
        state.result()
    except MmirisError:
        return False
    except Exception:  # noqa: BLE001 - everything else is possibly transient
        return True
    return False
