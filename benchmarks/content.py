"""Benchmark: content where it matters — the full split, sparse users and cold items.

    python -m benchmarks.content --data ../shared/data
    python -m benchmarks.content --settings cold --models content_knn,hybrid_iris --seeds 0

Derives two splits from the NCF ML-1M split with the split stage (``mmiris split --from``):
**sparse** keeps 20 % of each user's training interactions (``--keep``; same validation/test
items and negatives as the full split), **cold** holds 10 % of the items out of training
completely (``--cold-items``) and makes every interaction of theirs a test case ranked against
99 negatives from the other cold items (and against all items in the full-ranking protocol).
Then, per (setting, model, seed), the study's row runner (benchmarks/study.py): training to
early stopping with FISM pretraining for the item-similarity family, each model's tuned
settings where ``mmiris tune`` has run, evaluation (sampled and full ranking) and
``explanation_overlap`` for models with attention.

Rows are written to ``--results`` (default benchmarks/results/content.json) as each finishes;
a rerun skips rows already there (``--rerun`` forces them). Last line:
``{"rows": [{"setting", "model", "seed", "hr10", "ndcg10", "full_hr10", "full_ndcg10", ...}],
"summary": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

from benchmarks import study
from benchmarks.ml1m import missing_data, prepare
from benchmarks.results_io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "content.json"
STUDY_RESULTS = ROOT / "benchmarks" / "results" / "study.json"
SETTINGS = ("full", "sparse", "cold", "cold_valid")
DEFAULT_SETTINGS = ("full", "sparse", "cold")  # the issue's; cold_valid on request
MODELS = ["itempop", "ease", "content_knn", "nais_concat", "vbpr", "multimodal_iris", "hybrid_iris"]

log = logging.getLogger("benchmarks.content")


COLD_VALID = 0.05  # the cold_valid setting's default share of further held-out items


def content_key(setting: str, model: str, emb: int, seed: int) -> str:
    return f"{setting}/{study.row_key(model, emb, seed)}"


def setting_label(setting: str, cold_valid: float) -> str:
    """The name rows and splits carry: ``cold_valid`` at the default share, else with the
    share in percent (``cold_valid10``), so splits with another share never share rows."""
    if setting != "cold_valid" or math.isclose(cold_valid, COLD_VALID):
        return setting
    return f"cold_valid{round(cold_valid * 100):d}"


def derived_splits(
    store, split_ref: str, keep: float, cold: float, seed: int, cold_valid: float = 0.0
) -> dict[str, str]:
    """The split of every setting; ``cold_valid`` only when it is > 0 (the cold split's test
    with validation on further held-out items: ``mmiris split --cold-valid``)."""
    from mmiris.pipelines.split import derive_split

    out = {
        "full": split_ref,
        "sparse": str(derive_split(store, split_ref, keep=keep, seed=seed, name="split_sparse")),
        "cold": str(derive_split(store, split_ref, cold_items=cold, seed=seed, name="split_cold")),
    }
    if cold_valid:
        name = f"split_{setting_label('cold_valid', cold_valid)}"
        out["cold_valid"] = str(
            derive_split(store, split_ref, cold_items=cold, seed=seed, cold_valid=cold_valid, name=name)
        )
    return out


def wanted_select(setting: str, model: str, cold_select: str) -> str:
    """The validation that picks a row's best epoch: on the cold split, for a model that scores
    new items through its content (``target_rows``), ``cold_select``; else "warm" (on the
    cold_valid split the validation items are cold already, so as they are)."""
    from mmiris.models import get_model_class

    return cold_select if setting == "cold" and get_model_class(base_model(model)).target_rows else "warm"


def base_model(model: str) -> str:
    """``hybrid_iris+nodrop`` → ``hybrid_iris``: a study variant (benchmarks.study.VARIANTS) trains
    the registered model with the variant's change."""
    name, _, variant = model.partition("+")
    if variant not in study.VARIANTS:
        raise SystemExit(f"benchmarks.content: model {model!r}: variant {variant!r} is not one of {study.VARIANTS[1:]}")
    return name


def select_on(row: dict) -> str:
    """The select_on a finished row was trained with (rows from before the field: "warm")."""
    return (row.get("train_config") or {}).get("select_on", "warm")


def study_row(study_rows: dict[str, dict], model: str, emb: int, seed: int, epochs: int, patience: int) -> dict | None:
    """The study's finished row for the same model, emb and seed on the full split, trained
    under the same epoch cap and patience: the full setting's row is that row, not a retraining."""
    r = study_rows.get(study.row_key(model, emb, seed))  # model may carry a variant: hybrid_iris+nodrop
    if r is None or "error" in r or r.get("variant", "") != model.partition("+")[2]:
        return None
    cmd = r.get("command") or {}
    if cmd.get("epochs") != epochs or cmd.get("patience") != patience:
        return None
    return {**r, "from_study": True}


def summarize(rows: list[dict]) -> dict:
    """Per setting and model (a study variant apart from its model: ``hybrid_iris+nodrop``),
    mean ± std over seeds of the headline figures."""
    out: dict = {}
    for r in rows:
        if "error" in r:
            continue
        name = f"{r['model']}{'+' + r['variant'] if r.get('variant') else ''}"
        out.setdefault(r["setting"], {}).setdefault(name, []).append(r)
    return {
        s: {
            m: {
                k: study._mean_std([r.get(k) for r in rs])
                for k in ("hr10", "ndcg10", "full_hr10", "full_ndcg10", "explanation_overlap")
            }
            for m, rs in sorted(ms.items())
        }
        for s, ms in sorted(out.items())
    }


def save(path: Path, rows: dict[str, dict]) -> dict:
    ordered = sorted(rows.values(), key=lambda r: r["key"])
    return write_json(path, {"rows": ordered, "summary": summarize(ordered)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.content", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument(
        "--settings", default=",".join(DEFAULT_SETTINGS), help=f"comma list of {SETTINGS} (default: the first three)"
    )
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--emb", type=int, default=16)
    p.add_argument("--keep", type=float, default=0.2, help="sparse setting: share of training interactions kept")
    p.add_argument("--cold-items", type=float, default=0.1, help="cold setting: share of items held out")
    p.add_argument(
        "--cold-valid",
        type=float,
        default=COLD_VALID,
        help="cold_valid setting: share of further items held out for a cold validation set (rows and "
        "split of another share are named by it: cold_valid10 for 0.1)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed of the sparse/cold derivation")
    p.add_argument(
        "--study-results",
        default=str(STUDY_RESULTS),
        help="the study's rows file: a full-setting row it already has is taken from it, not retrained",
    )
    p.add_argument("--rerun", action="store_true")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--explain-users", type=int, default=0)
    p.add_argument(
        "--cold-select",
        choices=("cold", "warm"),
        default="cold",
        help="cold setting, models that score new items (hybrid_iris, vbpr): early stopping on the warm "
        "validation items scored as new items (cold, the default: select_on 'cold') or as the model "
        "scores them (warm)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    settings = [s for s in args.settings.split(",") if s]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        print(f"benchmarks.content: unknown setting(s) {bad}; expected some of {SETTINGS}", file=sys.stderr)
        return 2
    data = Path(args.data)
    if missing_data(data, "benchmarks.content"):
        return 2
    models = [m for m in args.models.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    refs = prepare(args.store, data, sorted({base_model(m) for m in models}), ("efficientnet-lite0", "minilm"))
    from mmiris.artifacts import ArtifactStore

    store = ArtifactStore(args.store)
    cold_valid = args.cold_valid if "cold_valid" in settings else 0.0
    splits = derived_splits(store, refs["split"], args.keep, args.cold_items, args.split_seed, cold_valid)
    results = Path(args.results)
    done = {r["key"]: r for r in (json.loads(results.read_text())["rows"] if results.exists() else [])}
    from mmiris.models import get_model_class

    study_path = Path(args.study_results)
    study_rows = {r["key"]: r for r in json.loads(study_path.read_text())["rows"]} if study_path.exists() else {}
    todo = []
    for setting in settings:
        for model in models:
            for seed in seeds[:1] if not get_model_class(base_model(model)).trainable else seeds:
                key = content_key(setting_label(setting, args.cold_valid), model, args.emb, seed)
                if not args.rerun and (key not in done or "error" in done[key]) and setting == "full":
                    same = study_row(study_rows, model, args.emb, seed, args.epochs, args.patience)
                    if same is not None:
                        done[key] = {**same, "key": key, "setting": "full"}
                        log.info("content: %s taken from the study's row (%s)", key, study_path)
                        save(results, done)
                        continue
                stale = key in done and select_on(done[key]) != wanted_select(setting, model, args.cold_select)
                if args.rerun or key not in done or "error" in done[key] or stale:
                    todo.append((setting, model, seed, key))
    log.info("content: %d rows to run", len(todo))
    train_kw = {"epochs": args.epochs, "patience": args.patience, "threads": args.threads}
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    failed = False
    for n, (setting, model, seed, key) in enumerate(todo):
        q = ctx.Queue()
        row_refs = {**refs, "split": splits[setting]}
        # cold: negatives only among the items training knows (the held-out ones stay unseen)
        cold = setting in ("cold", "cold_valid")
        kw = {**train_kw, "negatives_from": "trained"} if cold else train_kw
        if wanted_select(setting, model, args.cold_select) == "cold":
            kw = {**kw, "select_on": "cold"}
        proc = ctx.Process(
            target=study.run_row,
            # the full split is the study's: a row trained here uses the study's tuned settings
            args=(
                args.store,
                row_refs,
                study.row_key(model, args.emb, seed),
                kw,
                args.explain_users,
                q,
                study_rows if setting == "full" else None,
            ),
        )
        proc.start()
        row = study._wait(proc, q, study.row_key(model, args.emb, seed))
        row.update(
            key=key,
            setting=setting_label(setting, args.cold_valid),
            split=splits[setting],
            command={
                "keep": args.keep,
                "cold_items": args.cold_items,
                **({"cold_valid": args.cold_valid} if setting == "cold_valid" else {}),
                "split_seed": args.split_seed,
                "epochs": args.epochs,
                "patience": args.patience,
                "threads": args.threads,
            },
        )
        failed |= "error" in row
        done = {r["key"]: r for r in (json.loads(results.read_text())["rows"] if results.exists() else [])}
        done[key] = row
        save(results, done)
        el = time.perf_counter() - t0
        log.info(
            "content: row %d/%d %s done (%.0f s; ETA %.0f s)",
            n + 1,
            len(todo),
            key,
            el,
            el / (n + 1) * (len(todo) - n - 1),
        )
        print(json.dumps(row), flush=True)
    doc = save(results, done) if todo else {"rows": list(done.values()), "summary": summarize(list(done.values()))}
    print(json.dumps({"rows": doc["rows"], "summary": doc["summary"]}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
