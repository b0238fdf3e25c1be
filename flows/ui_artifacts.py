"""What a run shows in the Prefect UI besides logs: tables of metrics and of published artifacts."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mmiris.artifacts import ArtifactStore


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:100]


def show_refs(store: ArtifactStore, refs: dict[str, str], title: str,
              reused: dict[str, bool] | None = None) -> None:
    """A markdown table of the artifacts a run published or reused (UI: Artifacts tab)."""
    reused = reused or {}
    lines = [f"# {title}", "", f"Store: `{store.uri}`", "",
             "| stage | artifact | kind | rows | created | reused |",
             "|---|---|---|---:|---|---|"]
    for stage, ref in refs.items():
        m = store.manifest(ref)
        rows = sum(t["rows"] for t in m.tables.values())
        lines.append(f"| {stage} | `{m.ref}` | {m.kind} | {rows} | {m.created_at} | "
                     f"{'yes' if reused.get(stage) else 'no'} |")
    create_markdown_artifact("\n".join(lines), key=artifact_key(title),
                             description=f"artifacts of {title}")


def show_metrics(store: ArtifactStore, metrics_ref: str) -> list[dict]:
    """A table artifact of a metrics artifact: one row per (model, split, protocol), one
    column per metric@k (HR@10, NDCG@10, ...). Returns the rows."""
    t = store.read_table(metrics_ref, "metrics").to_pylist()
    rows: dict[tuple, dict] = {}
    for r in t:
        key = (r["model"], r["split"], r["protocol"])
        row = rows.setdefault(key, {"model": r["model"], "split": r["split"],
                                    "protocol": r["protocol"], "users": r["users"]})
        row[f"{r['metric']}@{r['k']}"] = round(float(r["value"]), 4)
    out = list(rows.values())
    models = sorted({r["model"] for r in out})
    create_table_artifact(out, key=artifact_key("metrics", *models),
                          description=f"metrics {metrics_ref}")
    return out
