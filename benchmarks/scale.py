"""Feature extraction past one machine's memory: a synthetic catalogue of N items (posters
and plots generated as the demo does), image and text features on a LocalCluster of 2
worker processes, driver and worker peak RSS.

    python -m benchmarks.scale                          # 10k and 100k tiny, 10k default encoders
    python -m benchmarks.scale --items 2000 --default-items 0       # a short run
    python -m benchmarks.scale --items 10000 --default-items 10000 --store /tmp/scale-store

Each size is generated once into the store (``scale<N>-item_images`` / ``-item_text``,
written part by part by a separate process, so no process holds the catalogue) and reused
by later runs. Each extraction runs in a fresh process (the driver) whose peak RSS is the
``driver_peak_rss_mb``; ``worker_peak_rss_mb`` is the largest worker's. ``tiny`` =
``tiny-random-cnn`` + ``tiny-random-bert`` (the data path, not the network); ``default`` =
EfficientNet-Lite0 + all-MiniLM-L6-v2. Needs no data folder: everything is generated.
The last line is ``{"runs": [{"items", "encoder", "image_items_per_s", "text_items_per_s",
"driver_peak_rss_mb", "worker_peak_rss_mb", "seconds"}, …]}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid

ENCODERS = {"tiny": ("tiny-random-cnn", "tiny-random-bert"), "default": ("efficientnet-lite0", "minilm")}
GEN_CHUNK = 2000  # items per generated part


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--items", default="10000,100000", help="catalogue sizes for the tiny encoders (comma-separated)")
    p.add_argument("--default-items", default="10000", help="sizes for the default encoders (0: none)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (one thread each)")
    p.add_argument("--store", default=None, help="store folder (default: a temporary one, removed after)")
    p.add_argument("--batch-size", type=int, default=None)
    sub = p.add_subparsers(dest="cmd")
    g = sub.add_parser("_generate")
    g.add_argument("--n", type=int, required=True)
    e = sub.add_parser("_extract")
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--encoder", choices=sorted(ENCODERS), required=True)
    args = p.parse_args(argv)
    if args.cmd == "_generate":
        print(json.dumps(generate(args.store, args.n)))
        return 0
    if args.cmd == "_extract":
        print(json.dumps(extract(args.store, args.n, args.encoder, args.workers, args.batch_size)))
        return 0

    runs_plan = [(n, "tiny") for n in _sizes(args.items)] + [(n, "default") for n in _sizes(args.default_items)]
    own = args.store is None
    store = args.store or tempfile.mkdtemp(prefix="mmiris-scale-")
    runs = []
    try:
        for n in sorted({n for n, _ in runs_plan}):
            t = time.perf_counter()
            _child(store, ["_generate", "--n", str(n)])
            print(f"catalogue of {n} items ready in {time.perf_counter() - t:.1f}s", flush=True)
        for n, enc in runs_plan:
            res = _child(store, ["_extract", "--n", str(n), "--encoder", enc], _top(args))
            runs.append(res)
            print(f"{n} items, {enc}: {json.dumps(res)}", flush=True)
    finally:
        if own:
            import shutil

            shutil.rmtree(store, ignore_errors=True)
    print(json.dumps({"runs": runs, "workers": args.workers, "cores": os.cpu_count(), "store": None if own else store}))
    return 0


def _sizes(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip() and int(x) > 0]


def _top(args) -> list[str]:
    return ["--workers", str(args.workers)] + (["--batch-size", str(args.batch_size)] if args.batch_size else [])


def _child(store: str, cmd: list[str], top: list[str] | None = None) -> dict:
    """Run a step in a fresh process (its own peak RSS); its last output line is JSON."""
    full = [sys.executable, "-m", "benchmarks.scale", "--store", store, *(top or []), *cmd]
    out = subprocess.run(full, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- generation (a process of its own)
def generate(store_dir: str, n: int) -> dict:
    """Publish ``scale<n>-item_images`` and ``scale<n>-item_text`` part by part (once)."""
    import numpy as np
    import pyarrow as pa

    from mmiris.artifacts import ArtifactStore
    from mmiris.demo import synthetic as syn

    store = ArtifactStore(store_dir)
    params = {"n": n, "seed": 0, "poster_size": [120, 180], "generator": "demo-synthetic"}
    img_ref = store.ref_for(f"scale{n}-item_images", "item_images", [], params)
    txt_ref = store.ref_for(f"scale{n}-item_text", "item_text", [], params)
    if store.exists(img_ref) and store.exists(txt_ref):
        return {"items": n, "generated": False}
    t0 = time.perf_counter()
    imgs = store.stage(img_ref.name, "item_images", [], params)
    txts = store.stage(txt_ref.name, "item_text", [], params)
    k_genres = len(syn.GENRES)
    img_parts, txt_parts = [], []
    for part, start in enumerate(range(0, n, GEN_CHUNK)):
        ids = list(range(start, min(n, start + GEN_CHUNK)))
        posters, plots, shas, fmts = [], [], [], []
        for i in ids:
            rng = np.random.default_rng([0, i])
            w = rng.dirichlet(np.full(k_genres, 0.3)).astype(np.float32)
            tone = float(rng.random())
            fmt = "JPEG" if i % 4 == 3 else "PNG"
            data = syn._encode(syn._poster(rng, w, tone, f"Item {i}", (120, 180)), fmt)
            posters.append(data)
            fmts.append(fmt)
            shas.append(hashlib.sha256(data).hexdigest())
            plots.append(syn._plot(rng, w, tone))
        m = len(ids)
        img_parts.append(
            store.write_part(
                imgs,
                "item_images",
                part,
                pa.table(
                    {
                        "item_id": pa.array(ids, pa.int64()),
                        "image": pa.array(posters, pa.binary()),
                        "present": [True] * m,
                        "reason": pa.array([None] * m, pa.string()),
                        "sha256": shas,
                        "width": pa.array([120] * m, pa.int32()),
                        "height": pa.array([180] * m, pa.int32()),
                        "format": fmts,
                        "source_url": pa.array([None] * m, pa.string()),
                    }
                ),
            )
        )
        cols = {"item_id": pa.array(ids, pa.int64()), "text": plots, "present": [True] * m}
        cols["reason"] = pa.array([None] * m, pa.string())
        for c in ("title", "genre", "director", "actors", "year", "imdb_id", "match_method", "raw_json"):
            cols[c] = pa.array([None] * m, pa.string())
        txt_parts.append(store.write_part(txts, "item_text", part, pa.table(cols)))
    store.commit(imgs, {"item_images": img_parts})
    store.commit(txts, {"item_text": txt_parts})
    return {"items": n, "generated": True, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": _peak_mb()}


# ---------------------------------------------------------------------- one extraction (a process of its own)
def extract(store_dir: str, n: int, encoder: str, workers: int, batch_size: int | None) -> dict:
    from mmiris.artifacts import ArtifactStore
    from mmiris.cluster import dask_client
    from mmiris.pipelines.extract import extract_image_features, extract_text_features

    store = ArtifactStore(store_dir)
    image_enc, text_enc = ENCODERS[encoder]
    tag = uuid.uuid4().hex[:8]  # a fresh output name: nothing is found or reused
    t_all = time.perf_counter()
    with dask_client(None, workers=workers, gpu=False) as client:
        t = time.perf_counter()
        img = extract_image_features(
            store, f"scale{n}-item_images", image_enc, client=client, batch_size=batch_size, reuse=False,
            name=f"scale{n}-{encoder}-image_features-{tag}",
        )  # fmt: skip
        t_img = time.perf_counter() - t
        t = time.perf_counter()
        txt = extract_text_features(
            store, f"scale{n}-item_text", text_enc, client=client, batch_size=batch_size, reuse=False,
            name=f"scale{n}-{encoder}-text_features-{tag}",
        )  # fmt: skip
        t_txt = time.perf_counter() - t
        worker_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    seconds = time.perf_counter() - t_all
    m_img, m_txt = store.manifest(img), store.manifest(txt)
    return {
        "items": n,
        "encoder": encoder,
        "image_items_per_s": round(m_img.stats["computed"] / t_img, 2),
        "text_items_per_s": round(m_txt.stats["computed"] / t_txt, 2),
        "driver_peak_rss_mb": round(_peak_mb(), 1),
        "worker_peak_rss_mb": round(max(worker_rss.values()), 1),
        "seconds": round(seconds, 1),
        "image_seconds": round(t_img, 1),
        "text_seconds": round(t_txt, 1),
        "image_parts": len(m_img.tables["features"].get("parts", [None])),
        "text_parts": len(m_txt.tables["features"].get("parts", [None])),
        "image_present": m_img.stats["present"],
        "text_present": m_txt.stats["present"],
    }


if __name__ == "__main__":
    sys.exit(main())
