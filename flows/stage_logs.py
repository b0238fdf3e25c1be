"""Stage logs in the Prefect UI, and a clear line when a stage reused an existing version."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

from mmiris.artifacts import ArtifactRef, ArtifactStore

# Loggers of the library and the stages; the store logs "found existing ... not recomputing".
STAGE_LOGGERS = ("mmiris",)  # the stages log as mmiris.<stage>


class StageLogHandler(APILogHandler):
    """Prefect's API log handler, active only inside a flow or task run (elsewhere the
    library logs as usual, without warnings about a missing run)."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        super().emit(record)


def forward_stage_logs() -> None:
    """Send the stages' own log records (``mmiris.*``) to the Prefect API,
    so they show in the run's logs in the UI. Prefect does this for loggers named in
    PREFECT_LOGGING_EXTRA_LOGGERS; doing it here means a worker needs no setting. Idempotent."""
    for name in STAGE_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            logger.addHandler(StageLogHandler())


def now() -> datetime:
    return datetime.now(timezone.utc)


def note_outcome(store: ArtifactStore, ref: ArtifactRef | str, started: datetime) -> bool:
    """Log whether ``ref`` was published by this run or reused. Returns True when reused."""
    m = store.manifest(ref)
    created = datetime.fromisoformat(m.created_at)
    reused = created < started
    log = get_run_logger()
    if reused:
        log.info("reused existing %s (created %s; same inputs and parameters): not recomputed", m.ref, m.created_at)
    else:
        rows = ", ".join(f"{t}: {meta['rows']} rows" for t, meta in m.tables.items())
        log.info("published %s (%s)", m.ref, rows or "files only")
    return reused
