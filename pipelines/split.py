"""Split stage: an ``interactions`` artifact -> a leave-one-out ``split`` artifact with stored
negatives (see :mod:`mmiris.splits.leave_one_out`)."""

from __future__ import annotations

import logging

import numpy as np

from mmiris.artifacts import ArtifactRef, ArtifactStore, check_name
from mmiris.artifacts.code_version import source_version
from mmiris.errors import MmirisError
from mmiris.splits.leave_one_out import leave_one_out

log = logging.getLogger("mmiris.split")
CODE = ("mmiris.pipelines.split", "mmiris.splits", "mmiris.data")  # what decides a split


def split_leave_one_out(
    store: ArtifactStore,
    interactions_ref: ArtifactRef | str,
    *,
    mode: str = "random",
    n_negatives: int = 99,
    seed: int = 0,
    short_users: str = "drop",
    name: str = "split",
) -> ArtifactRef:
    """One test and one validation interaction per user, each with ``n_negatives`` sampled
    negatives; ``mode`` "random" (the paper) or "latest" (by timestamp, as NCF)."""
    if isinstance(n_negatives, bool) or not isinstance(n_negatives, int) or n_negatives < 1:
        raise MmirisError(
            f"--negatives {n_negatives}: expected a number >= 1 (the sampled protocol "
            f"ranks each held-out item among its negatives)"
        )
    if not isinstance(seed, int) or seed < 0:
        raise MmirisError(f"--seed {seed}: expected an integer >= 0")
    check_name(name, "--name: artifact name")
    m = store.manifest(store.resolve(interactions_ref))
    if m.kind != "interactions":
        raise MmirisError(f"artifact {m.ref} is a {m.kind!r} artifact; expected interactions")
    params = {"mode": mode, "n_negatives": n_negatives, "seed": seed, "short_users": short_users}

    def build():
        t = store.read_table(m.ref, "interactions")
        user = t.column("user_id").to_numpy()
        item = t.column("item_id").to_numpy()
        n_users = int(m.stats["n_users"] if "n_users" in m.stats else store.read_table(m.ref, "users").num_rows)
        n_items = int(m.stats["n_items"] if "n_items" in m.stats else int(item.max(initial=-1)) + 1)
        ts_col = t.column("timestamp")
        missing_ts = ts_col.null_count
        ts = None
        if mode == "latest" and missing_ts < len(ts_col):
            # Rows without a timestamp count as the oldest.
            ts = ts_col.fill_null(np.iinfo(np.int64).min).to_numpy()
        loo = leave_one_out(
            user, item, ts, n_users, n_items, mode=mode, n_negatives=n_negatives, seed=seed, short_users=short_users
        )
        if mode == "latest":
            loo.stats["timestamps_missing"] = int(missing_ts)
        loo.stats["setting"] = "full"  # derive_split makes "sparse" and "cold" ones
        log.info(
            "split %s: %d train, %d valid, %d test rows",
            m.ref,
            loo.stats["n_train"],
            loo.stats["n_valid"],
            loo.stats["n_test"],
        )
        return loo.output({"interactions": str(m.ref)})

    return store.get_or_create(name, "split", [m.ref], params, build, source_version(*CODE))


def derive_split(
    store: ArtifactStore,
    split_ref: ArtifactRef | str,
    *,
    keep: float | None = None,
    cold_items: float | None = None,
    seed: int = 0,
    n_negatives: int = 99,
    name: str | None = None,
    cold_valid: float = 0.0,
) -> ArtifactRef:
    """A ``split`` for the sparse-user (``keep``) or cold-item (``cold_items``) setting, derived
    from an existing split (see :mod:`mmiris.splits.settings`); its manifest's params and stats
    name the setting, and the original split is its parent. ``cold_valid`` (cold items only):
    the share of further items held out whose cases make a cold validation set."""
    from mmiris.data.split import load_split
    from mmiris.splits.settings import cold_items as make_cold
    from mmiris.splits.settings import sparse_users

    if (keep is None) == (cold_items is None):
        raise MmirisError("derive a split with exactly one of --keep (sparse users) or --cold-items (cold items)")
    if not isinstance(seed, int) or seed < 0:
        raise MmirisError(f"--seed {seed}: expected an integer >= 0")
    src = store.manifest(store.resolve(split_ref))
    if src.kind != "split":
        raise MmirisError(f"artifact {src.ref} is a {src.kind!r} artifact; expected a split to derive from")
    if keep is not None:
        params = {"setting": "sparse", "keep": float(keep), "seed": seed}
    else:
        assert cold_items is not None  # exactly one of the two, checked above
        params = {"setting": "cold", "cold_items": float(cold_items), "seed": seed, "n_negatives": n_negatives}
        if cold_valid:  # absent at 0: the split as it was before cold validation existed
            params["cold_valid"] = float(cold_valid)
    if cold_valid and keep is not None:
        raise MmirisError("--cold-valid makes a cold validation set for --cold-items; it does not apply to --keep")
    name = f"{src.name}_{params['setting']}" if name is None else name
    check_name(name, "--name: artifact name")

    def build():
        data = load_split(store, src.ref)
        if keep is not None:
            out = sparse_users(data, keep, seed)
        else:
            out = make_cold(data, cold_items, seed, n_negatives, valid_fraction=cold_valid)
        log.info(
            "split %s (%s) from %s: %d train, %d valid, %d test rows",
            name,
            params["setting"],
            src.ref,
            out.stats["n_train"],
            out.stats["n_valid"],
            out.stats["n_test"],
        )
        return out.output({"derived_from": str(src.ref)})

    return store.get_or_create(name, "split", [src.ref], params, build, source_version(*CODE))
