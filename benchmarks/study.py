"""Benchmark: the converged ML-1M study of the IRIS family against NAIS (issue "Does
multimodal content help?").

    python -m benchmarks.study --data ../shared/data                  # the whole plan, resumable
    python -m benchmarks.study --only nais_prod:16:0,nais_concat:16:0  # some rows
    python -m benchmarks.study --list                                  # the plan and what is done

Every row trains to convergence: early stopping on validation HR@10 (``--patience``, 3) under
an epoch cap (``--epochs``, 50) that should never be the reason a run stopped (``stopped``
says ``early`` or ``cap``; ``fit`` for the closed-form models). NAIS and the IRIS models start from the FISM of the same
embedding and seed (the NAIS paper's pretraining; that FISM is the study's FISM row when the
settings agree), NeuMF from a GMF and an MLP. Each row uses its model's tuned settings: the
best trial of the newest ``tune-<model>`` artifact for the same split and embedding
(``mmiris tune``), else the paper's defaults; the row records which (``tuned_params``,
``tuned_from``).

Variants: ``shuffled`` is Multimodal IRIS trained on image and text vectors permuted across
items (one seeded permutation for both, so an item keeps a coherent poster + plot pair that
belongs to another item): the control for "do the features carry signal the model uses";
``doc2vec`` replaces MiniLM with a Doc2Vec trained on the plots (the paper's Table VI).

Results: each finished row is written at once to ``--results`` (default
benchmarks/results/study.json, the file committed with docs/study.md), so a lost machine
loses at most the row in progress; training checkpoints every epoch in the store, and a
rerun continues a killed row from its last epoch. A rerun skips rows already in the file
(``--rerun`` forces them) unless the tuned settings they used have changed. The last line
is ``{"rows": [...], "summary": {...}}``; the summary gives, per (model, emb, variant), mean
and std over seeds of sampled and full-ranking HR@10 / NDCG@10, epochs to the best
validation and seconds per epoch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.ml1m import PUBLISHED, missing_data, prepare, wait_row
from benchmarks.results_io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "study.json"

# The issue's plan, in the order it is worth running: the central comparison first.
PLAN: list[tuple[str, int, int, str]] = [
    ("fism", 16, 0, ""),
    ("nais_concat", 16, 0, ""),
    ("nais_prod", 16, 0, ""),
    ("multimodal_iris", 16, 0, ""),
    ("multimodal_iris", 16, 0, "shuffled"),
    ("image_iris", 16, 0, ""),
    ("image_add_text_iris", 16, 0, ""),
    ("nais_concat", 16, 1, ""),
    ("nais_prod", 16, 1, ""),
    ("multimodal_iris", 16, 1, ""),
    ("nais_concat", 16, 2, ""),
    ("nais_prod", 16, 2, ""),
    ("multimodal_iris", 16, 2, ""),
    ("ease", 16, 0, ""),
    ("content_knn", 16, 0, ""),
    ("mf", 16, 0, ""),
    ("vbpr", 16, 0, ""),
    ("neumf", 16, 0, ""),
    ("fism", 64, 0, ""),
    ("nais_prod", 64, 0, ""),
    ("nais_concat", 64, 0, ""),
    ("multimodal_iris", 64, 0, ""),
    ("multimodal_iris", 16, 0, "doc2vec"),
    ("hybrid_iris", 16, 0, ""),
    ("hybrid_iris", 16, 1, ""),  # beyond the paper (content issue)
    # content dropout (on by default: it is what ranks cold items) takes Q_j away from half the
    # training pairs; on the full split, where every test item is known, without it
    ("hybrid_iris", 16, 0, "nodrop"),
    ("hybrid_iris", 16, 1, "nodrop"),
    # does the batch composition cause the attention collapse? users mixed in every batch
    ("multimodal_iris", 16, 0, "mixed"),
]

log = logging.getLogger("benchmarks.study")


# shuffled: features permuted across items; doc2vec: Doc2Vec text features; mixed: batches
# that mix users (batch_order "shuffled", bucketed by history length) instead of the NAIS paper's
# one-user batches; nodrop: hybrid_iris with content_dropout 0; metric: hybrid_iris with a
# learned content metric (content_metric, docs/content.md); simpath: that model ranking items
# without training interactions by the learned similarity term alone (new_items "similarity");
# simpull: simpath with the projections pulled towards their starting directions (reg_metric);
# simfine: simpath validated every 1,000 steps (its cold validation peaked in the first epoch,
# which was the first point it was measured at); simslow: simfine with the projections learned
# at a tenth of the learning rate (metric_lr), validated every 2,000 steps; simema: simfine
# validating and keeping a moving average of the parameters (ema); simfast: simpath with the
# projections at three times the learning rate, validated every 500 steps; simwide: simfine
# with 64 content directions instead of 32 (content kNN keeps 0.2308 of its 0.2337 cold HR@10
# on 64 directions and 0.2230 on 32; trained, four seeds rank cold items 0.0024 below simfine's,
# docs/content.md); simitem: simfine with a metric-dropout mask per item instead of per batch
# (metric_dropout_per "item"; seed ensembles of simfine rank cold items +0.005 better than
# single seeds, docs/content.md, so per-step noise is the suspect); simheads: simfine with two
# learned-similarity heads, each batch training one and inference averaging them (metric_heads 2)
VARIANTS = (
    "",
    "shuffled",
    "doc2vec",
    "mixed",
    "nodrop",
    "metric",
    "simpath",
    "simpull",
    "simfine",
    "simslow",
    "simema",
    "simfast",
    "simwide",
    "simitem",
    "simheads",
)
SIMPULL_REG_METRIC = 1e-4  # λ of simpull's pull (docs/content.md, eighth session)
# simfine's validation every 1,000 of the ~8,300 steps of a cold-validation epoch; its patience
# (validations) spans about 1.5 epochs, as the default 3 epochs would cost twice that
SIMFINE_TRAIN = {"eval_steps": 1000, "patience": 12}
SIMPATH = {"content_metric": True, "new_items": "similarity"}
# What each variant sets in the model config and in the training config (the features'
# variants, shuffled and doc2vec, are read in run_row).
VARIANT_MODEL: dict[str, dict] = {
    "nodrop": {"content_dropout": 0.0},  # an unknown field for models without it: a clear error
    "metric": {"content_metric": True},
    "simpath": SIMPATH,
    "simfine": SIMPATH,
    "simema": SIMPATH,
    "simslow": {**SIMPATH, "metric_lr": 0.1},
    "simfast": {**SIMPATH, "metric_lr": 3.0},
    "simpull": {**SIMPATH, "reg_metric": SIMPULL_REG_METRIC},
    "simwide": {**SIMPATH, "content_similarity": 64},
    "simitem": {**SIMPATH, "metric_dropout_per": "item"},
    "simheads": {**SIMPATH, "metric_heads": 2},
}
VARIANT_TRAIN: dict[str, dict] = {
    "mixed": {"batch_order": "shuffled"},
    "simfine": SIMFINE_TRAIN,
    "simslow": {"eval_steps": 2000, "patience": 8},  # patience: about 2 epochs
    "simema": {**SIMFINE_TRAIN, "ema": 0.999},  # an average over about the last 1,000 steps
    "simfast": {"eval_steps": 500, "patience": 12},  # patience: 6,000 steps
    "simwide": SIMFINE_TRAIN,
    "simitem": SIMFINE_TRAIN,
    "simheads": SIMFINE_TRAIN,
}


def row_key(model: str, emb: int, seed: int, variant: str = "") -> str:
    return f"{model}{'+' + variant if variant else ''}:{emb}:{seed}"


def parse_key(text: str) -> tuple[str, int, int, str]:
    """``model[+variant]:emb:seed`` → (model, emb, seed, variant)."""
    parts = text.strip().split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(
            f"row {text!r}: expected model[+variant]:emb:seed, e.g. nais_prod:16:0 or multimodal_iris+shuffled:16:0"
        )
    model, _, variant = parts[0].partition("+")
    if variant not in VARIANTS:
        raise ValueError(f"row {text!r}: variant {variant!r} is not one of {', '.join(VARIANTS[1:])}")
    return model, int(parts[1]), int(parts[2]), variant


# -- results file ----------------------------------------------------------------------------
def load_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"benchmarks.study: {path} is not valid JSON ({exc}); fix or move it") from None
    return {r["key"]: r for r in doc.get("rows", []) if "key" in r}


def save_results(path: Path, rows: dict[str, dict]) -> dict:
    """Write every finished row and the summary atomically (temp file + rename)."""
    ordered = sorted(rows.values(), key=lambda r: r["key"])
    return write_json(path, {"rows": ordered, "summary": summarize(ordered)})


def _mean_std(values: list[float]) -> dict:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(a):
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": round(float(a.mean()), 4),
        "std": round(float(a.std(ddof=1)), 4) if len(a) > 1 else 0.0,
        "n": int(len(a)),
    }


def summarize(rows: list[dict]) -> dict:
    """Per (model, emb, variant): mean ± std over seeds of the headline figures."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if "error" in r:
            continue
        g = f"{r['model']}{'+' + r['variant'] if r.get('variant') else ''}:{r['emb']}"
        groups.setdefault(g, []).append(r)
    out = {}
    for g, rs in sorted(groups.items()):
        out[g] = {
            k: _mean_std([r.get(k) for r in rs])
            for k in (
                "hr10",
                "ndcg10",
                "full_hr10",
                "full_ndcg10",
                "best_epoch",
                "epoch_seconds",
                "explanation_overlap",
            )
        }
        out[g]["seeds"] = sorted(r["seed"] for r in rs)
        out[g]["stopped"] = sorted({r["stopped"] for r in rs})
        pub = PUBLISHED.get(rs[0]["model"]) if rs[0]["emb"] == 16 and not rs[0].get("variant") else None
        if pub:
            out[g]["published_hr10_ndcg10"] = list(pub)
    return out


# -- inputs ----------------------------------------------------------------------------------
def tuned_params(store, split_ref: str, model: str, emb: int) -> tuple[dict, str | None]:
    """Best params of the newest ``tune-<model>`` artifact for this split and emb, else ({}, None)."""
    from mmiris.artifacts import ArtifactRef

    name = f"tune-{model}"
    if name not in store.names():
        return {}, None
    split = ArtifactRef.parse(split_ref) if isinstance(split_ref, str) else split_ref
    for m in sorted(store.versions(name), key=lambda m: m.created_at, reverse=True):
        emb_of = (m.params.get("model_config") or {}).get("emb", m.params.get("emb"))
        same_split = any(_same_split(store, split, p) for p in m.parents)
        if same_split and (emb_of is None or int(emb_of) == emb) and m.stats.get("best_params"):
            return dict(m.stats["best_params"]), str(m.ref)
    return {}, None


def recorded_tuning(rows: dict[str, dict], model: str, emb: int) -> tuple[dict, str | None]:
    """The tuned settings the results file records for (model, emb): the newest finished row of
    that model and emb made with a tune artifact. A study whose store lost its tune artifacts (a
    new machine, a wiped /tmp) goes on with these instead of falling back to the defaults, so
    its tuned rows stay current and new seeds train with the same settings."""
    found = [
        r
        for r in rows.values()
        if r.get("model") == model and r.get("emb") == emb and "error" not in r and r.get("tuned_from")
    ]
    if not found:
        return {}, None
    r = max(found, key=lambda r: (r.get("date", ""), r["key"]))
    return dict(r.get("tuned_params") or {}), r["tuned_from"]


def resolve_tuning(
    store, split_ref: str, model: str, emb: int, recorded: dict[str, dict] | None
) -> tuple[dict, str | None]:
    """A tune artifact in the store for this split and emb, else the results file's record of one."""
    params, ref = tuned_params(store, split_ref, model, emb)
    if ref is None and recorded:
        return recorded_tuning(recorded, model, emb)
    return params, ref


def _same_split(store, split, other: str) -> bool:
    """The same split, or one made from the same inputs with the same parameters by another
    code version (a code change gives a new version id to the same data)."""
    if str(split) == str(other):
        return True
    try:
        a, b = store.manifest(split), store.manifest(other)
    except Exception:  # noqa: BLE001 - a parent that is not a readable artifact is not this split
        return False
    keys = ("n_users", "n_items", "n_train", "n_valid", "n_test", "setting")
    return a.kind == b.kind == "split" and a.params == b.params and all(a.stats.get(k) == b.stats.get(k) for k in keys)


def row_is_current(row: dict | None, tuned_now, rerun: bool = False) -> bool:
    """A finished row (no error) made with the tuned settings its model would use now
    (``tuned_now()``, called only when needed); ``rerun`` makes every row stale. A study
    skips current rows, also when another process finished one while this one waited."""
    if row is None or "error" in row or rerun:
        return False
    return tuned_now() == (row.get("tuned_params") or {})


def split_params(params: dict, model: str) -> tuple[dict, dict]:
    """Tuned params → (model config overrides, train config overrides)."""
    from mmiris.train.config import TrainConfig

    train_fields = set(TrainConfig.__dataclass_fields__)
    mc = {k: v for k, v in params.items() if k not in train_fields}
    tc = {k: v for k, v in params.items() if k in train_fields}
    return mc, tc


def shuffled_features(store, refs: dict, seed: int = 0) -> dict:
    """Image and text feature artifacts with vectors permuted across items (one permutation
    for both modalities), published as their own versions with the originals as parents."""
    import pyarrow as pa

    from mmiris.artifacts import Output

    out = {}
    perm = None
    for mod in ("image", "text"):
        src = store.resolve(refs[mod])
        table = store.read_table(src)
        ids = table.column("item_id").to_numpy()
        if perm is None:
            rng = np.random.default_rng(seed)
            universe = np.unique(
                np.concatenate(
                    [store.read_table(store.resolve(refs[m])).column("item_id").to_numpy() for m in ("image", "text")]
                )
            )
            perm = dict(zip(universe.tolist(), rng.permutation(universe).tolist()))
        new_ids = pa.array([perm[int(i)] for i in ids], pa.int64())
        shuffled = table.set_column(table.schema.get_field_index("item_id"), "item_id", new_ids)
        shuffled = shuffled.take(np.argsort(new_ids.to_numpy(), kind="stable"))
        m = store.manifest(src)
        kind = m.kind
        params = {"shuffled_from": str(src), "permutation_seed": seed}

        def build(t=shuffled, m=m):
            return Output(
                {"features": t}, stats=dict(m.stats), info={"note": "study control: vectors permuted across items"}
            )

        out[mod] = str(store.get_or_create(f"{src.name}_shuffled", kind, [src], params, build))
    return out


def doc2vec_features(store, data: Path) -> str:
    from benchmarks.ml1m import _movie_to_item
    from mmiris.pipelines.extract import extract_text_features, texts_from_jsonl

    ncf, ml = data / "ml-1m-ncf", data / "ml-1m"
    texts = texts_from_jsonl(
        store,
        ml / "omdb" / "omdb.jsonl",
        id_field="movie_id",
        text_field="Plot",
        id_map=_movie_to_item(ncf / "items.tsv"),
        name="ml1m_item_text",
    )
    return str(extract_text_features(store, texts, "doc2vec", workers=1, name="ml1m_text_features_doc2vec"))


# -- one row ---------------------------------------------------------------------------------
def _valid_curve(store, ref) -> list[float]:
    t = store.read_table(ref, "training_log").to_pylist()
    rows = sorted((r for r in t if r["metric"] == "hr10"), key=lambda r: (r["epoch"], r["step"]))
    return [round(r["value"], 4) for r in rows]


def run_row(
    store_uri: str,
    refs: dict,
    key: str,
    train_kw: dict,
    explain_users: int,
    queue,
    recorded: dict[str, dict] | None = None,
) -> None:
    """Train (resuming a killed run), evaluate and explain one row, in a child process.
    ``recorded``: the results file's rows, whose tuned settings stand in for tune artifacts
    the store no longer has (``resolve_tuning``)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    model, emb, seed, variant = parse_key(key)
    try:
        import torch

        from mmiris.artifacts import ArtifactStore
        from mmiris.data.split import load_split
        from mmiris.eval.explanations import explanation_overlap
        from mmiris.models import get_model_class
        from mmiris.models.build import load_model
        from mmiris.pipelines.evaluate import evaluate_model, read_metrics
        from mmiris.pipelines.train import train_model
        from mmiris.recommend.topn import consumed_history, recommend_top_n
        from mmiris.train.config import TrainConfig

        if train_kw.get("threads"):
            torch.set_num_threads(train_kw["threads"])
        store = ArtifactStore(store_uri)
        cls = get_model_class(model)
        params, tuned_from = resolve_tuning(store, refs["split"], model, emb, recorded)
        mc, tc = split_params(params, model)
        cfg = TrainConfig(seed=seed, **{**train_kw, **tc, **VARIANT_TRAIN.get(variant, {})})
        mcfg = {"emb": emb, **mc, **VARIANT_MODEL.get(variant, {})}
        feats = {f"{m}_features": refs[m] for m in cls.modalities}
        if variant == "shuffled":
            feats = {f"{m}_features": r for m, r in shuffled_features(store, refs).items() if m in cls.modalities}
        elif variant == "doc2vec":
            feats["text_features"] = refs["doc2vec"]

        def fit(name, model_config, train_config, **kw):
            return train_model(
                store, refs["split"], name, model_config=model_config, train_config=train_config, resume=True, **kw
            )

        init = None
        if cls.has_attention:  # the NAIS paper's pretraining: the converged FISM of this emb and seed
            f_params, _ = resolve_tuning(store, refs["split"], "fism", emb, recorded)
            f_mc, f_tc = split_params(f_params, "fism")
            f_kw = {k: v for k, v in train_kw.items() if k != "select_on"}  # FISM has no content path
            init = [fit("fism", {"emb": emb, **f_mc}, TrainConfig(seed=seed, **{**f_kw, **f_tc}))]
        elif model == "neumf":  # NCF §3.4.1: GMF and MLP alone first
            init = [fit("neumf", {**mcfg, "mode": mode}, cfg) for mode in ("gmf", "mlp")]
        t0 = time.perf_counter()
        ref = fit(model, mcfg, cfg, init_from=init, **feats)
        m = store.manifest(ref)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        met = read_metrics(store, evaluate_model(store, ref, protocols=("sampled", "full")))
        eval_s = time.perf_counter() - t0
        overlap = None
        if cls.has_attention:
            split = load_split(store, refs["split"])
            trained = load_model(store, ref)
            if trained.history is None:
                trained.set_history(split.history())
            users = np.unique(split.test_users)
            if explain_users and len(users) > explain_users:
                users = np.random.default_rng(0).choice(users, explain_users, replace=False)
            consumed = consumed_history(
                split.n_users,
                split.n_items,
                (split.train_users, split.train_items),
                (split.valid_users, split.valid_items),
                (split.test_users, split.test_items),
            )
            recs = recommend_top_n(trained, consumed, np.sort(users), top_n=10, explain_k=3)
            overlap = round(explanation_overlap(recs.explain_items), 4)
        secs = m.info.get("epoch_seconds") or [0.0]
        stopped_early = bool(m.stats.get("stopped_early"))
        queue.put(
            {
                "key": key,
                "model": model,
                "emb": emb,
                "seed": seed,
                "variant": variant,
                "hr10": met["sampled"]["hr10"],
                "ndcg10": met["sampled"]["ndcg10"],
                "hr20": met["sampled"]["hr20"],
                "ndcg20": met["sampled"]["ndcg20"],
                "full_hr10": met["full"]["hr10"],
                "full_ndcg10": met["full"]["ndcg10"],
                "full_hr20": met["full"]["hr20"],
                "full_ndcg20": met["full"]["ndcg20"],
                "valid_hr10": m.stats.get("valid_hr10"),
                "valid_curve": _valid_curve(store, ref),
                "epoch_seconds": round(sum(secs) / len(secs), 2),
                "epochs": m.stats["epochs_run"],
                "best_epoch": m.stats["best_epoch"],
                "best_step": m.stats.get("best_step"),
                "stopped": "fit" if not cls.trainable else ("early" if stopped_early else "cap"),
                "tuned_params": params,
                "tuned_from": tuned_from,
                "explanation_overlap": overlap,
                "train_seconds": round(train_s, 1),
                "evaluate_seconds": round(eval_s, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "model_ref": str(ref),
                "init_from": [str(r) for r in init] if init else None,
                "features": feats or None,
                "train_config": cfg.key_params(),
                "precision": m.params["train_config"].get("precision", "fp32"),
                "machine": {
                    "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(),
                    "arch": platform.machine(),
                    "device": m.info.get("device"),
                },
                "date": dt.date.today().isoformat(),
            }
        )
    except Exception as exc:
        log.exception("row %s failed", key)
        queue.put(
            {
                "key": key,
                "model": model,
                "emb": emb,
                "seed": seed,
                "variant": variant,
                "error": f"{type(exc).__name__}: {exc}",
            }
        )


def claim_row(results_path: Path, key: str) -> Path | None:
    """A lock file next to the results for the row being run, so two study processes on one
    machine never train the same row; a lock left by a dead process is taken over."""
    d = results_path.parent / ".study-locks"
    d.mkdir(parents=True, exist_ok=True)
    path = d / key.replace(":", "_").replace("+", "_")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return path
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(proc, q, key: str) -> dict:
    model, emb, seed, variant = parse_key(key)
    return wait_row(proc, q, {"key": key, "model": model, "emb": emb, "seed": seed, "variant": variant})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data"),
        help="benchmark data folder (default ../shared/data from the project root)",
    )
    p.add_argument(
        "--store",
        default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")),
        help="artifact store; a rerun with the same store reuses every finished model",
    )
    p.add_argument("--results", default=str(RESULTS), help="rows file, read back and extended row by row")
    p.add_argument(
        "--only",
        default="",
        help="rows to run, e.g. nais_prod:16:0,multimodal_iris+shuffled:16:0 (default: the whole plan)",
    )
    p.add_argument("--models", default="", help="restrict the plan to these models (comma list)")
    p.add_argument("--emb", default="", help="restrict the plan to these embedding sizes")
    p.add_argument("--seeds", default="", help="restrict the plan to these seeds")
    p.add_argument("--rerun", action="store_true", help="run rows again even if they are in --results")
    p.add_argument("--list", action="store_true", help="print the plan with each row's status and exit")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the study tables of --results as markdown (what docs/study.md shows) and exit",
    )
    p.add_argument("--max-rows", type=int, default=0, help="stop after this many rows (0: no limit)")
    p.add_argument("--epochs", type=int, default=50, help="epoch cap (early stopping should end sooner)")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per row")
    p.add_argument(
        "--explain-users",
        type=int,
        default=0,
        help="test users for explanation_overlap (0: all; a seeded sample otherwise)",
    )
    p.add_argument("--image-encoder", default="efficientnet-lite0")
    p.add_argument("--text-encoder", default="minilm")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )

    try:
        plan = [parse_key(k) for k in args.only.split(",") if k.strip()] if args.only else list(PLAN)
    except ValueError as exc:
        print(f"benchmarks.study: {exc}", file=sys.stderr)
        return 2
    if args.models:
        plan = [r for r in plan if r[0] in args.models.split(",")]
    if args.emb:
        plan = [r for r in plan if str(r[1]) in args.emb.split(",")]
    if args.seeds:
        plan = [r for r in plan if str(r[2]) in args.seeds.split(",")]
    results_path = Path(args.results)
    if args.markdown:
        from mmiris.report.study import load_study, markdown

        print(markdown(load_study(results_path)))
        return 0
    done = load_results(results_path)
    keys = [row_key(*r) for r in plan]
    if args.list:
        for k in keys:
            r = done.get(k)
            state = "missing" if r is None else ("error" if "error" in r else f"done ({r['stopped']})")
            print(f"{k:40s} {state}")
        return 0

    data = Path(args.data)
    if missing_data(data, "benchmarks.study"):
        return 2
    models = sorted({r[0] for r in plan})
    refs = prepare(args.store, data, models, (args.image_encoder, args.text_encoder))
    if any(r[3] == "doc2vec" for r in plan):
        from mmiris.artifacts import ArtifactStore

        refs["doc2vec"] = doc2vec_features(ArtifactStore(args.store), data)
    log.info("inputs: %s", refs)
    train_kw = {"epochs": args.epochs, "patience": args.patience, "threads": args.threads}

    from mmiris.artifacts import ArtifactStore

    store = ArtifactStore(args.store)
    ctx = mp.get_context("spawn")  # a fresh process per row: clean peak RSS, no forked thread pools
    ran = 0
    failed = False
    t_start = time.perf_counter()
    rows_of = dict(zip(keys, plan))

    def current(key: str, row: dict | None) -> bool:
        model, emb = rows_of[key][:2]
        return row_is_current(row, lambda: resolve_tuning(store, refs["split"], model, emb, done)[0], args.rerun)

    todo = []
    for key in keys:
        if current(key, done.get(key)):
            continue
        if done.get(key) is not None and "error" not in done[key] and not args.rerun:
            log.info("%s: tuned settings changed since the recorded row; running it again", key)
        todo.append(key)
    log.info("study: %d of %d planned rows to run: %s", len(todo), len(keys), ", ".join(todo) or "none")
    for i, key in enumerate(todo):
        if args.max_rows and ran >= args.max_rows:
            break
        fresh = load_results(results_path).get(key)  # another study process may have finished it
        if fresh != done.get(key) and current(key, fresh):
            log.info("%s: finished by another study process meanwhile; skipping", key)
            continue
        lock = claim_row(results_path, key)
        if lock is None:
            log.info("%s: another live study process is running it; skipping", key)
            continue
        q = ctx.Queue()
        proc = ctx.Process(target=run_row, args=(args.store, refs, key, train_kw, args.explain_users, q, done))
        proc.start()
        try:
            row = _wait(proc, q, key)
        finally:
            lock.unlink(missing_ok=True)
        row["command"] = {
            "epochs": args.epochs,
            "patience": args.patience,
            "threads": args.threads,
            "encoders": [args.image_encoder, args.text_encoder],
        }
        ran += 1
        failed |= "error" in row
        done = load_results(results_path)  # another process may have added rows meanwhile
        done[key] = row
        save_results(results_path, done)
        el = time.perf_counter() - t_start
        log.info(
            "study: row %d/%d %s done (%.0f s elapsed; ETA %.0f s at this rate)",
            i + 1,
            len(todo),
            key,
            el,
            el / (i + 1) * (len(todo) - i - 1),
        )
        print(json.dumps(row), flush=True)
    doc = save_results(results_path, load_results(results_path))
    print(json.dumps({"rows": doc["rows"], "summary": doc["summary"]}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
