"""Flow: publish the embedded, generated demo catalogue (pipelines/demo_data.py)."""

from __future__ import annotations

from prefect import flow, task

from mmiris.artifacts import ArtifactStore
from mmiris.flows.stage_logs import forward_stage_logs, note_outcome, now
from mmiris.flows.ui_artifacts import show_refs
from mmiris.pipelines.demo_data import generate_demo_dataset


@task(name="generate-demo-dataset")
def generate_demo_task(store: str | None, n_users: int, n_items: int, seed: int, name: str) -> dict[str, str]:
    refs = generate_demo_dataset(ArtifactStore(store), n_users=n_users, n_items=n_items, seed=seed, name=name)
    return {k: str(getattr(refs, k)) for k in ("interactions", "items", "item_images", "item_text")}


@flow(name="demo-data")
def demo_data_flow(
    n_users: int = 300, n_items: int = 200, seed: int = 0, name: str = "demo", store: str | None = None
) -> dict[str, str]:
    """Generate (or find) the demo catalogue; returns {"interactions": "demo-interactions@…",
    "items": …, "item_images": …, "item_text": …}."""
    forward_stage_logs()
    started = now()
    refs = generate_demo_task(store, n_users, n_items, seed, name)
    s = ArtifactStore(store)
    reused = {k: note_outcome(s, r, started) for k, r in refs.items()}
    show_refs(s, refs, f"demo data {name}", reused)
    return refs
