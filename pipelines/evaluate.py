"""Stage ``evaluate``: model + split → a ``metrics`` artifact (``metrics-<model name>``).

One artifact per (model, split, part) holds every requested protocol: HR@N and NDCG@N for
N = 5, 10, 20 (table ``metrics``) and each user's rank (file ``ranks.parquet``: protocol, user_id,
item_id, rank (0-based, ties pessimistic), candidates — for significance tests and plots). Protocols (see ``mmiris.eval.protocols``):

- ``sampled``: the held-out item against its stored negatives (the paper's 1 + 99);
- ``full``: against every item not in the user's training history; when evaluating the
  test part, the user's validation item is also removed (it is a known interaction, not a
  candidate). The held-out item always stays a candidate.
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import source_version
from mmiris.data.split import load_split
from mmiris.errors import MmirisError
from mmiris.eval.metrics import KS
from mmiris.eval.protocols import full_ranks, sampled_ranks
from mmiris.models.build import load_model
from mmiris.train.config import pick_device

log = logging.getLogger("mmiris.evaluate")

# The code that decides the metrics (the model's own code is in the model artifact's version).
CODE = ("mmiris.pipelines.evaluate", "mmiris.eval", "mmiris.data")
PROTOCOLS = ("sampled", "full")
RANKS_FILE = "ranks.parquet"  # per user: protocol, user_id, item_id, rank (0-based), candidates


def evaluate_model(
    store: ArtifactStore,
    model_ref: ArtifactRef | str,
    split_ref: ArtifactRef | str | None = None,
    protocols=PROTOCOLS,
    part: str = "test",
    device: str = "auto",
) -> ArtifactRef:
    """Evaluate a published model; ``split_ref`` defaults to the split it was trained on."""
    protocols = tuple(protocols)
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise MmirisError(f"evaluate: protocol(s) {bad or protocols} unknown; expected some of {PROTOCOLS}")
    if part not in ("test", "valid"):
        raise MmirisError(f"evaluate: part {part!r}: expected test or valid")
    mm = store.manifest(model_ref)
    if mm.kind != "model":
        raise MmirisError(f"artifact {mm.ref} is a {mm.kind!r} artifact, expected a model")
    if split_ref is None:
        parents = [p for p in mm.parents if store.manifest(ArtifactRef.parse(p)).kind == "split"]
        split_ref = parents[0]
    split_ref = store.resolve(split_ref)
    name = f"metrics-{mm.params.get('model', mm.name)}"
    params = {"protocols": list(protocols), "part": part, "ks": list(KS)}

    def build() -> Output:
        dev = pick_device(device)
        model = load_model(store, mm.ref, device=dev)
        split = load_split(store, split_ref)
        if (split.n_users, split.n_items) != (model.n_users, model.n_items):
            raise MmirisError(
                f"split {split_ref} has {split.n_users} users × {split.n_items} items; "
                f"model {mm.ref} was trained on {model.n_users} × {model.n_items}"
            )
        users = getattr(split, f"{part}_users")
        items = getattr(split, f"{part}_items")
        rows: list[dict] = []
        rank_tabs: list[pa.Table] = []
        stats: dict[str, float] = {}
        info: dict[str, object] = {}
        for proto in protocols:
            t0 = time.perf_counter()
            if proto == "sampled":
                res = sampled_ranks(model, users, items, getattr(split, f"{part}_negatives"), device=dev)
                stats["sampled_dropped_negatives"] = res.dropped_negatives
            else:
                extra = _valid_item_of(split, users) if part == "test" else None
                res = full_ranks(model, users, items, split.history(), also_exclude=extra, device=dev)
            info[f"{proto}_seconds"] = time.perf_counter() - t0
            m = res.metrics()
            log.info(
                "%s %s: %s (%d users, %.1fs)",
                mm.ref,
                proto,
                " ".join(f"{k} {v:.4f}" for k, v in m.items()),
                len(users),
                info[f"{proto}_seconds"],
            )
            for k in KS:
                for metric in ("hr", "ndcg"):
                    rows.append(
                        {
                            "model": str(mm.ref),
                            "split": str(split_ref),
                            "protocol": proto,
                            "metric": metric,
                            "k": k,
                            "value": m[f"{metric}{k}"],
                            "users": len(users),
                        }
                    )
            rank_tabs.append(
                pa.table(
                    {
                        "protocol": [proto] * len(users),
                        "user_id": res.users,
                        "item_id": res.items,
                        "rank": res.ranks,
                        "candidates": res.candidates,
                    }
                )
            )
        info["device"] = str(dev)
        buf = io.BytesIO()
        pq.write_table(pa.concat_tables(rank_tabs), buf, compression="zstd")
        return Output(
            tables={"metrics": pa.Table.from_pylist(rows)}, files={RANKS_FILE: buf.getvalue()}, stats=stats, info=info
        )

    with torch.no_grad():
        return store.get_or_create(name, "metrics", [mm.ref, split_ref], params, build, source_version(*CODE))


def _valid_item_of(split, users: np.ndarray) -> np.ndarray:
    """Each user's validation item (-1 when it has none), to remove from full-ranking candidates."""
    out = np.full(len(users), -1, np.int64)
    if len(split.valid_users):
        lookup = np.full(split.n_users, -1, np.int64)
        lookup[split.valid_users] = split.valid_items
        out = lookup[users]
    return out


def read_metrics(store: ArtifactStore, metrics_ref: ArtifactRef | str) -> dict[str, dict[str, float]]:
    """{protocol: {"hr10": ..., "ndcg10": ...}} from a metrics artifact."""
    t = store.read_table(metrics_ref, "metrics").to_pylist()
    out: dict[str, dict[str, float]] = {}
    for r in t:
        out.setdefault(r["protocol"], {})[f"{r['metric']}{r['k']}"] = r["value"]
    return out


def read_ranks(store: ArtifactStore, metrics_ref: ArtifactRef | str) -> pa.Table:
    """Per-user ranks of a metrics artifact (protocol, user_id, item_id, rank, candidates)."""
    return pq.read_table(io.BytesIO(store.read_file(metrics_ref, RANKS_FILE)))
