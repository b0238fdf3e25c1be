"""``mmiris demo`` end to end through the CLI, on a tiny generated catalogue with tiny random
encoders (no downloads), then ``mmiris recommend --user`` and ``mmiris report`` on its store."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from mmiris.artifacts import ArtifactStore

MODELS = "itempop,nais_prod,multimodal_iris"
ENV = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MMIRIS_KERNEL_THREADS": "1"}


def mmiris(*args, cwd):
    cmd = [sys.executable, "-c", "import sys; from mmiris.cli import main; sys.exit(main())", *args]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def test_demo_runs_end_to_end_and_its_artifacts_serve_recommend_and_report(tmp_path):
    store_dir, out = tmp_path / "store", tmp_path / "demo"
    args = [
        "--store",
        str(store_dir),
        "demo",
        "--out",
        str(out),
        "--users",
        "50",
        "--items",
        "40",
        "--epochs",
        "2",
        "--models",
        MODELS,
        "--image-encoder",
        "tiny-random-cnn",
        "--text-encoder",
        "tiny-random-bert",
        "--workers",
        "1",
    ]
    run = mmiris(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    text = run.stdout
    # the story a new user reads: generated data, every step, a metrics table, where things are
    assert "GENERATED" in text
    for step in (
        "generate demo catalogue",
        "split",
        "features (image, text)",
        "train multimodal_iris",
        "evaluate itempop",
        "recommend top-10",
        "report",
    ):
        assert step in text, step
    rows = {
        m: re.search(rf"^\s+{m}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$", text, re.M)
        for m in MODELS.split(",")
    }
    assert all(rows.values()), text
    for m in rows.values():
        assert all(0.0 <= float(v) <= 1.0 for v in m.groups())
    report = out / "report.html"
    assert f"report:          {report.resolve()}" in text
    page = report.read_text()
    assert "Multimodal IRIS" in page and "ItemPop" in page and "User " in page
    assert "data:image/jpeg;base64" in page  # posters from the generated item_images

    store = ArtifactStore(store_dir)
    kinds = {store.manifest(store.latest(n)).kind for n in store.names()}
    assert {
        "interactions",
        "items",
        "item_images",
        "item_text",
        "split",
        "image_features",
        "text_features",
        "model",
        "metrics",
        "recommendations",
    } <= kinds
    # the artifacts are plain Parquet for anyone
    recs_ref = next(store.latest(n) for n in store.names() if n.startswith("recommendations-"))
    recs = pq.read_table(store.table_path(recs_ref, "recommendations"))
    assert recs.num_rows == 50 * 10 and recs.column("explanations").null_count == 0

    # one user's table, with titles from the generated catalogue
    model_name = store.manifest(recs_ref).parents[0].split("@")[0]
    one = mmiris("--store", str(store_dir), "recommend", "--model", model_name, "--user", "3", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    titles = set(store.read_table("demo-items", "items").column("title").to_pylist())
    lines = [ln for ln in one.stdout.splitlines() if re.match(r"^\s+\d+\s+0\.\d{3}\s", ln)]
    assert len(lines) == 10
    assert any(t in lines[0] for t in titles)
    assert one.stdout.count("↳") >= 10

    # the stage for chosen users gives exactly those users' rows of the full run
    from mmiris.pipelines.recommend import recommend

    some = store.read_table(recommend(store, model_name, users=[4, 3]), "recommendations").to_pylist()
    full = [r for r in recs.to_pylist() if r["user_id"] in (3, 4)]
    key = lambda r: (r["user_id"], r["rank"])  # noqa: E731
    assert len(some) == 20
    for a, b in zip(sorted(some, key=key), sorted(full, key=key)):
        assert (a["item_id"], [e["item_id"] for e in a["explanations"]]) == (
            b["item_id"],
            [e["item_id"] for e in b["explanations"]],
        )
        assert abs(a["score"] - b["score"]) < 1e-5

    # running the demo again (here from Python) finds every artifact instead of recomputing
    from mmiris.pipelines.demo import DemoOptions, run_demo

    lines = []
    before = {n: len(store.versions(n)) for n in store.names()}
    again = run_demo(
        store,
        out,
        DemoOptions(
            n_users=50,
            n_items=40,
            epochs=2,
            models=tuple(MODELS.split(",")),
            image_encoder="tiny-random-cnn",
            text_encoder="tiny-random-bert",
        ),
        say=lines.append,
    )
    assert sorted(str(r) for r in again.models.values()) == sorted(re.findall(r"model-\w+@\w+", text))
    assert {n: len(store.versions(n)) for n in store.names()} == before
    assert sum(ln.startswith("[") for ln in lines) == 11

    # mmiris report on the same store, for chosen users
    rep = mmiris("--store", str(store_dir), "report", "--out", str(tmp_path / "r2"), "--users", "1,2", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    page2 = Path(tmp_path / "r2" / "report.html").read_text()
    # cards name users by their source id, with the dense user_id beside it
    assert "(user_id 1)" in page2 and "(user_id 2)" in page2 and "(user_id 0)" not in page2


def test_demo_rejects_an_unknown_model(tmp_path, capsys):
    from mmiris.cli import main

    assert main(["--store", str(tmp_path / "s"), "demo", "--out", str(tmp_path / "o"), "--models", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
