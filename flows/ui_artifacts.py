"""What a run shows in the Prefect UI besides logs: tables of metrics and of published artifacts."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mmiris.artifacts import ArtifactStore
from mmiris.flows.stage_logs import note_outcome


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:100]


def show_refs(store: ArtifactStore, refs: dict[str, str], title: str, reused: dict[str, bool] | None = None) -> None:
    """A markdown table of the artifacts a run published or reused (UI: Artifacts tab)."""
    reused = reused or {}
    lines = [
        f"# {title}",
        "",
        f"Store: `{store.uri}`",
        "",
        "| stage | artifact | kind | rows | created | reused |",
        "|---|---|---|---:|---|---|",
    ]
    for stage, ref in refs.items():
        m = store.manifest(ref)
        rows = sum(t["rows"] for t in m.tables.values())
        lines.append(
            f"| {stage} | `{m.ref}` | {m.kind} | {rows} | {m.created_at} | {'yes' if reused.get(stage) else 'no'} |"
        )
    create_markdown_artifact("\n".join(lines), key=artifact_key(title), description=f"artifacts of {title}")


def show_metrics(store: ArtifactStore, metrics_ref: str) -> list[dict]:
    """A table artifact of a metrics artifact: one row per (model, split, protocol), one
    column per metric@k (HR@10, NDCG@10, ...). Returns the rows."""
    t = store.read_table(metrics_ref, "metrics").to_pylist()
    rows: dict[tuple, dict] = {}
    for r in t:
        key = (r["model"], r["split"], r["protocol"])
        row = rows.setdefault(
            key, {"model": r["model"], "split": r["split"], "protocol": r["protocol"], "users": r["users"]}
        )
        row[f"{r['metric']}@{r['k']}"] = round(float(r["value"]), 4)
    out = list(rows.values())
    create_table_artifact(out, key=artifact_key(metrics_ref.split("@")[0]), description=f"metrics {metrics_ref}")
    return out


def finish_stage(store: ArtifactStore, refs: dict[str, str], title: str, started) -> dict[str, str]:
    """Log, per artifact, whether this run published it or reused it, and show the table."""
    reused = {stage: note_outcome(store, ref, started) for stage, ref in refs.items()}
    show_refs(store, refs, title, reused)
    return refs


def show_training_log(store: ArtifactStore, model_ref: str) -> list[dict]:
    """A table artifact of a model's validation metrics (``validation_rows``)."""
    out = validation_rows(store.read_table(model_ref, "training_log").to_pylist())
    stats = store.manifest(model_ref).stats
    create_table_artifact(
        out,
        key=artifact_key("training", model_ref.split("@")[0]),
        description=f"training log of {model_ref} (best epoch "
        f"{stats.get('best_epoch')}, step {stats.get('best_step')}, stopped early: "
        f"{stats.get('stopped_early')})",
    )
    return out


def validation_rows(rows: list[dict]) -> list[dict]:
    """A training log's validations, one row each (each epoch's end, and every ``eval_steps``
    steps if asked: ``epoch``, ``step``, the metrics), with each epoch's mean loss on its last."""
    by_point: dict[tuple[int, int], dict] = {}
    losses: dict[int, list[float]] = {}
    for r in rows:
        if r["metric"]:
            p = by_point.setdefault((r["epoch"], r["step"]), {"epoch": r["epoch"], "step": r["step"]})
            p[r["metric"]] = round(float(r["value"]), 4)
        if r["loss"] is not None:
            losses.setdefault(r["epoch"], []).append(float(r["loss"]))
    for epoch, ls in losses.items():
        last = max((k for k in by_point if k[0] == epoch), default=None)
        if last is not None:
            by_point[last]["mean_loss"] = round(sum(ls) / len(ls), 5)
    return [by_point[k] for k in sorted(by_point)]
