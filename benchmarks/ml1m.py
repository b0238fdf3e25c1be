"""Benchmark: train and evaluate the paper's models on the NCF ML-1M split.

    python -m benchmarks.ml1m --models itempop,mf,ease,fism,nais_prod --emb 16 --seeds 0 --epochs 5

Ingests ``<data>/ml-1m-ncf`` (with ``items.tsv`` + ``ml-1m/movies.dat``) through the ingest
stage, and — only when a requested model reads them — poster image features and OMDb plot
text features through the feature stage (posters / plots keyed by MovieLens movieId,
joined to NCF item ids through ``items.tsv``). Then, per (model, embedding, seed): the train
stage (early stopping on validation HR@10) and the evaluate stage (sampled 1 + 99 and full
ranking). Each row runs in its own process so ``peak_rss_mb`` is that row's peak. Closed-form
models (itempop, ease) are deterministic: they run for the first seed only.

``--pretrain`` initialises the attentive item-similarity models (NAIS prod/concat and the
three IRIS variants) from the FISM of the same embedding and seed, as the NAIS paper does
(FISM is trained first if not already in the store), and NeuMF from a GMF and an MLP
trained alone with the same settings, as the NCF paper does.
(``--nais-pretrain`` is the old name of the same flag.)

Artifacts go to ``--store`` (default ``./mmiris-store``), so a second run reuses the
ingest, features and any identical model. The last line is one JSON object: ``rows`` (model,
emb, seed, hr10, ndcg10, hr20, ndcg20 — sampled protocol — full_hr10, full_ndcg10,
epoch_seconds, epochs, peak_rss_mb, model_ref) and the published reference numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL_MODELS = [
    "itempop",
    "mf",
    "ease",
    "fism",
    "nais_prod",
    "nais_concat",
    "neumf",
    "vbpr",
    "image_iris",
    "image_add_text_iris",
    "multimodal_iris",
]
# NAIS paper (TKDE 2018) Table 5, ML-1M, embedding 16: HR@10 / NDCG@10; NCF paper: NeuMF
# with pretraining, factor 32.
PUBLISHED = {
    "itempop": (0.4536, 0.2543),
    "fism": (0.6647, 0.3949),
    "nais_concat": (0.6972, 0.4196),
    "nais_prod": (0.6969, 0.4194),
    "mf": (0.6664, 0.3973),
    "neumf": (0.726, 0.445),
}

log = logging.getLogger("benchmarks.ml1m")


def _list(text: str, cast=str) -> list:
    return [cast(x) for x in text.replace(",", " ").split()]


def prepare(store_uri: str, data: Path, models: list[str], encoders: tuple[str, str]) -> dict:
    """Ingest the split and, when needed, the image/text features. Returns refs as strings."""
    from mmiris.artifacts import ArtifactStore
    from mmiris.models import get_model_class
    from mmiris.pipelines.ingest import ingest_ncf

    store = ArtifactStore(store_uri)
    ncf, ml = data / "ml-1m-ncf", data / "ml-1m"
    t0 = time.perf_counter()
    res = ingest_ncf(
        store,
        ncf / "ml-1m.train.rating",
        ncf / "ml-1m.test.rating",
        ncf / "ml-1m.test.negative",
        item_map=ncf / "items.tsv",
        movies=ml / "movies.dat",
    )
    out = {"split": str(res.split), "ingest_seconds": time.perf_counter() - t0}
    need = {m for name in models for m in get_model_class(name).modalities}
    if need:
        from mmiris.pipelines.extract import (
            extract_image_features,
            extract_text_features,
            images_from_folder,
            texts_from_jsonl,
        )

        id_map = _movie_to_item(ncf / "items.tsv")
        t0 = time.perf_counter()
        if "image" in need:
            imgs = images_from_folder(store, ml / "posters", id_map=id_map, name="ml1m_item_images")
            out["image"] = str(extract_image_features(store, imgs, encoders[0], workers=2, name="ml1m_image_features"))
        if "text" in need:
            texts = texts_from_jsonl(
                store,
                ml / "omdb" / "omdb.jsonl",
                id_field="movie_id",
                text_field="Plot",
                id_map=id_map,
                name="ml1m_item_text",
            )
            out["text"] = str(extract_text_features(store, texts, encoders[1], workers=2, name="ml1m_text_features"))
        out["feature_seconds"] = time.perf_counter() - t0
    return out


def _movie_to_item(items_tsv: Path) -> dict[str, int]:
    """MovieLens movieId -> NCF item id (items.tsv: ncf_item, movie_id, exact). Where two NCF
    items share a movie (best-guess rows), the exact one, else the first, gets the features."""
    best: dict[str, tuple[bool, int]] = {}
    for line in items_tsv.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip().isdigit():
            continue  # header
        item, movie = int(parts[0]), parts[1].strip()
        exact = len(parts) > 2 and parts[2].strip().lower() in ("true", "1")
        if movie not in best or (exact and not best[movie][0]):
            best[movie] = (exact, item)
    return {m: i for m, (_, i) in best.items()}


def run_row(store_uri: str, refs: dict, model: str, emb: int, seed: int, train_kw: dict, pretrain: bool, queue) -> None:
    """One (model, emb, seed): train, evaluate, report — in a child process."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        import torch

        from mmiris.artifacts import ArtifactStore
        from mmiris.models import get_model_class
        from mmiris.pipelines.evaluate import evaluate_model, read_metrics
        from mmiris.pipelines.train import train_model
        from mmiris.train.config import TrainConfig

        if train_kw.get("threads"):
            torch.set_num_threads(train_kw["threads"])
        store = ArtifactStore(store_uri)
        cls = get_model_class(model)
        cfg = TrainConfig(seed=seed, **train_kw)
        mcfg = {"emb": emb}
        feats = {f"{m}_features": refs[m] for m in cls.modalities}
        init = None
        if pretrain and cls.has_attention:
            init = [train_model(store, refs["split"], "fism", model_config=mcfg, train_config=cfg)]
        elif pretrain and model == "neumf":  # NCF §3.4.1: GMF and MLP alone first
            init = [
                train_model(store, refs["split"], "neumf", model_config={**mcfg, "mode": mode}, train_config=cfg)
                for mode in ("gmf", "mlp")
            ]
        t0 = time.perf_counter()
        ref = train_model(store, refs["split"], model, model_config=mcfg, train_config=cfg, init_from=init, **feats)
        m = store.manifest(ref)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        met = read_metrics(store, evaluate_model(store, ref, protocols=("sampled", "full")))
        secs = m.info.get("epoch_seconds") or [0.0]
        queue.put(
            {
                "model": model,
                "emb": emb,
                "seed": seed,
                "hr10": met["sampled"]["hr10"],
                "ndcg10": met["sampled"]["ndcg10"],
                "hr20": met["sampled"]["hr20"],
                "ndcg20": met["sampled"]["ndcg20"],
                "full_hr10": met["full"]["hr10"],
                "full_ndcg10": met["full"]["ndcg10"],
                "full_hr20": met["full"]["hr20"],
                "full_ndcg20": met["full"]["ndcg20"],
                "valid_hr10": m.stats.get("valid_hr10"),
                "epoch_seconds": sum(secs) / len(secs),
                "epochs": m.stats["epochs_run"],
                "best_epoch": m.stats["best_epoch"],
                "stopped_early": m.stats["stopped_early"],
                "train_seconds": train_s,
                "evaluate_seconds": time.perf_counter() - t0,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "model_ref": str(ref),
                "init_from": [str(r) for r in init] if init else None,
            }
        )
    except Exception as exc:
        log.exception("row %s emb %d seed %d failed", model, emb, seed)
        queue.put({"model": model, "emb": emb, "seed": seed, "error": f"{type(exc).__name__}: {exc}"})


def wait_row(proc, q, fallback: dict) -> dict:
    """The row a child process puts on ``q``, or ``fallback`` + an error if it died first."""
    import queue

    while True:
        try:
            row = q.get(timeout=5)
            proc.join()
            return row
        except queue.Empty:
            if not proc.is_alive():
                return {**fallback, "error": f"row process died with exit code {proc.exitcode}"}


def missing_data(data: Path, prog: str) -> bool:
    """Say which ML-1M benchmark files are absent under ``data`` (stderr); True if any is."""
    needed = [
        data / "ml-1m-ncf" / f for f in ("ml-1m.train.rating", "ml-1m.test.rating", "ml-1m.test.negative", "items.tsv")
    ] + [data / "ml-1m" / "movies.dat"]
    absent = [str(f) for f in needed if not f.exists()]
    if absent:
        print(
            f"{prog}: benchmark data not found: {', '.join(absent)} "
            f"(pass --data pointing at the folder that holds ml-1m-ncf/ and ml-1m/)",
            file=sys.stderr,
        )
    return bool(absent)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ml1m", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data"),
        help="benchmark data folder (default ../shared/data from the project root)",
    )
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--models", default=",".join(ALL_MODELS), help=f"comma list from {ALL_MODELS}")
    p.add_argument("--emb", default="16", help="embedding sizes, e.g. 16,64")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2")
    p.add_argument("--epochs", type=int, default=20, help="max epochs (early stopping may end sooner)")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument(
        "--pretrain",
        "--nais-pretrain",
        dest="pretrain",
        action="store_true",
        help="NAIS and IRIS from FISM (NAIS paper), NeuMF from GMF + MLP (NCF paper)",
    )
    p.add_argument("--image-encoder", default="efficientnet-lite0")
    p.add_argument("--text-encoder", default="minilm")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )

    data = Path(args.data)
    if missing_data(data, "benchmarks.ml1m"):
        return 2
    models = _list(args.models)
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        print(f"benchmarks.ml1m: unknown model(s) {unknown}; expected some of {ALL_MODELS}", file=sys.stderr)
        return 2
    embs, seeds = _list(args.emb, int), _list(args.seeds, int)
    refs = prepare(args.store, data, models, (args.image_encoder, args.text_encoder))
    log.info("inputs: %s", refs)
    train_kw = {
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": args.threads,
    }
    from mmiris.models import get_model_class

    ctx = mp.get_context("spawn")  # a fresh process per row: clean peak RSS, no forked thread pools
    rows = []
    for model in models:
        closed = not get_model_class(model).trainable
        for emb in embs:
            for seed in seeds[:1] if closed else seeds:
                q = ctx.Queue()
                proc = ctx.Process(
                    target=run_row, args=(args.store, refs, model, emb, seed, train_kw, args.pretrain, q)
                )
                proc.start()
                row = wait_row(proc, q, {"model": model, "emb": emb, "seed": seed})
                rows.append(row)
                log.info("row: %s", json.dumps(row))
    print(
        json.dumps(
            {
                "rows": rows,
                "published_hr10_ndcg10": PUBLISHED,
                "split": refs["split"],
                "ingest_seconds": refs.get("ingest_seconds"),
                "feature_seconds": refs.get("feature_seconds"),
                "machine": f"{platform.machine()} {os.cpu_count()} cores",
                "train_config": train_kw,
            }
        )
    )
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
