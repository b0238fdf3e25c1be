"""Flow: the self-contained HTML report of what is in the store (pipelines/report.py)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.stage_logs import forward_stage_logs
from mmiris.pipelines.report import build_report


@task(name="build-report", cache_policy=NO_CACHE)
def report_task(
    store: str | None,
    out_dir: str,
    metrics: list[str] | None,
    recommendations: list[str] | None,
    users: list[int] | None,
    n_users: int,
    top: int,
    title: str,
    notes: list[str] | None,
) -> str:
    path = build_report(
        ArtifactStore(store),
        out_dir,
        metrics=metrics,
        recommendations=recommendations,
        users=users,
        n_users=n_users,
        top=top,
        title=title,
        notes=notes,
    )
    return str(Path(path).resolve())


@flow(name="report")
def report_flow(
    out_dir: str = "mmiris-report",
    metrics: list[str] | None = None,
    recommendations: list[str] | None = None,
    users: list[int] | None = None,
    n_users: int = 3,
    top: int = 3,
    title: str = "mmiris report",
    notes: list[str] | None = None,
    store: str | None = None,
) -> str:
    """Write ``out_dir/report.html`` (metrics tables, loss curves, explanation cards) on the
    machine that runs the flow; default: every metrics artifact and the newest
    recommendations. Returns the HTML path (also a link in the UI)."""
    forward_stage_logs()
    path = report_task(store, out_dir, metrics, recommendations, users, n_users, top, title, notes)
    create_link_artifact(
        Path(path).as_uri(), link_text=title, key="mmiris-report", description=f"report written on the worker: {path}"
    )
    return path
