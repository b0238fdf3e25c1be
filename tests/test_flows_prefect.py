"""Flows and deployments against a real Prefect server on 127.0.0.1 (one for the module).

The module starts ``prefect server start`` (temporary PREFECT_HOME, sqlite in tmp, no
telemetry), creates the ``mmiris`` process work pool, runs ``prefect deploy --all`` from the
project root with the real ``prefect.yaml``, starts a process worker and triggers deployment
runs with ``prefect deployment run``, then checks the runs completed and published their
artifacts. Flows are also run directly (in-process) against the same server.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from mmiris.artifacts import ArtifactStore
from mmiris.errors import MmirisError

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "mmiris"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PrefectServer:
    def __init__(self, home: Path, store: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.store = store
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "MMIRIS_STORE": str(store),
        }
        self.procs: list[subprocess.Popen] = []
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, *args: str, log: str) -> subprocess.Popen:
        out = open(self.logs / log, "wb")
        proc = subprocess.Popen([PREFECT, *args], env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        res = subprocess.run([PREFECT, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res

    def api(self, method: str, path: str, **kw) -> dict | list:
        r = requests.request(method, self.url + path, timeout=30, **kw)
        r.raise_for_status()
        return r.json()

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.iterdir()))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    srv = PrefectServer(home, tmp_path_factory.mktemp("store") / "store")
    t0 = time.perf_counter()
    proc = srv.start("server", "start", "--host", "127.0.0.1", "--port", str(srv.port), log="server.log")
    deadline = time.time() + 120
    import mmiris.flows.pipeline  # noqa: F401  - the direct-run tests' imports, while the server boots

    while True:
        try:
            if requests.get(srv.url + "/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None, f"prefect server exited:\n{srv.log_text()}"
        assert time.time() < deadline, f"prefect server not healthy in 120 s:\n{srv.log_text()}"
        time.sleep(0.5)
    srv.startup_s = time.perf_counter() - t0
    print(f"prefect server healthy after {srv.startup_s:.1f} s")
    try:
        yield srv
    finally:
        for p in reversed(srv.procs):
            _stop(p)


@pytest.fixture(scope="module")
def deployed(server):
    """The work pool, every deployment of prefect.yaml, and a process worker."""
    t0 = time.perf_counter()
    server.cli("work-pool", "create", POOL, "--type", "process")
    server.start("worker", "start", "--pool", POOL, "--name", "test-worker", log="worker.log")
    res = server.cli("--no-prompt", "deploy", "--all")
    server.deploy_s = time.perf_counter() - t0
    print(f"work pool + prefect deploy --all: {server.deploy_s:.1f} s")
    # Demo data for the stage deployment runs. The split run is triggered now and checked by
    # the last test, so the worker runs it while the direct-run tests use this process.
    from mmiris.pipelines.demo_data import generate_demo_dataset

    server.demo_interactions = generate_demo_dataset(ArtifactStore(server.store), n_users=40, n_items=60).interactions
    server.split_run = (_trigger(server, "split/default", SPLIT_PARAMS), time.perf_counter())
    return res.stdout


SPLIT_PARAMS = {"interactions": "demo-interactions@latest", "n_negatives": 20, "name": "demo-split"}


def _trigger(server: PrefectServer, name: str, params: dict) -> str:
    """``prefect deployment run FLOW/DEPLOYMENT --params JSON``; returns the flow run id."""
    res = server.cli("deployment", "run", name, "--params", json.dumps(params))
    found = re.search(r"UUID: ([0-9a-f-]{36})", res.stdout)
    assert found, f"prefect deployment run {name} created no run:\n{res.stdout}\n{res.stderr}"
    return found.group(1)


def _wait(server: PrefectServer, run_id: str, name: str, since: float, timeout: float = 240) -> dict:
    """Poll the run until it is final; assert it COMPLETED."""
    while True:
        run = server.api("GET", f"/flow_runs/{run_id}")
        state = run["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        assert time.perf_counter() - since < timeout, f"{name} still {state} after {timeout} s"
        time.sleep(0.5)
    assert state == "COMPLETED", f"{name} ended {state}:\n{server.log_text()}"
    run["wall_s"] = time.perf_counter() - since
    print(f"deployment run {name}: {run['wall_s']:.1f} s from trigger to COMPLETED")
    return run


def _run_deployment(server: PrefectServer, name: str, params: dict) -> dict:
    t0 = time.perf_counter()
    return _wait(server, _trigger(server, name, params), name, t0)


def _run_logs(server: PrefectServer, run_id: str, *expect: str, timeout: float = 60) -> str:
    """The run's log text, once every string in ``expect`` is in it or ``timeout`` has passed.

    Logs reach the server in batches, from this process and from the worker's flow-run
    process alike, and may arrive after the run is COMPLETED: wait for what the test asserts
    (the caller's assertion then shows the text if it never came)."""
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs of runs in this process are sent in batches
    deadline = time.perf_counter() + timeout
    while True:
        logs = server.api("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        text = "\n".join(entry["message"] for entry in logs)
        if all(s in text for s in expect) or time.perf_counter() > deadline:
            return text
        time.sleep(0.5)


def _failed_task_runs(server: PrefectServer, run_id: str, timeout: float = 60) -> list[dict]:
    """The run's task runs, once the first is FAILED or ``timeout`` has passed (task runs reach
    the server as events: allow for a loaded machine)."""
    deadline = time.perf_counter() + timeout
    while True:
        tasks = server.api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}})
        if (tasks and (tasks[0].get("state") or {}).get("type") == "FAILED") or time.perf_counter() > deadline:
            return tasks
        time.sleep(0.5)


def _run_artifacts(server: PrefectServer, run_id: str) -> list[dict]:
    return server.api("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})


# ---------------------------------------------------------------------------- deployments
def test_deploy_all_registers_every_deployment_with_its_schedule_and_defaults(server, deployed):
    conf = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    flows = {f["id"]: f["name"] for f in server.api("POST", "/flows/filter", json={})}
    got = {(flows[d["flow_id"]], d["name"]): d for d in server.api("POST", "/deployments/filter", json={})}
    expected_flows = {
        "demo-data",
        "ingest-movielens",
        "ingest-ncf",
        "ingest-amazon",
        "crawl-omdb",
        "crawl-amazon-images",
        "extract-image-features",
        "extract-text-features",
        "split",
        "train",
        "tune",
        "evaluate",
        "recommend",
        "report",
        "pipeline",
        "pipeline-demo",
        "ingest-new-items",
        "extract-new-item-features",
        "pipeline-new-items",
    }
    assert {f for f, _ in got} == expected_flows
    assert len(got) == len(conf["deployments"])
    for key, d in got.items():
        assert d["work_pool_name"] == POOL, key
        # runs start in the project root (no pull section: deploy records the cwd)
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}], key
    scheduled = {k for k, d in got.items() if any(s["active"] for s in d["schedules"])}
    assert scheduled == {
        ("crawl-omdb", "daily"),
        ("crawl-amazon-images", "daily"),
        ("train", "weekly"),
        ("pipeline-new-items", "weekly"),
    }
    cron = {k: got[k]["schedules"][0]["schedule"]["cron"] for k in scheduled}
    assert cron[("train", "weekly")] == "0 4 * * 0"
    assert cron[("pipeline-new-items", "weekly")] == "0 6 * * 1"  # Mondays, after the Sunday retrain
    weekly_new = got[("pipeline-new-items", "weekly")]
    assert (
        weekly_new["parameters"]["model"] == "model-hybrid_iris@latest"
        and weekly_new["global_concurrency_limit"]["limit"] == 1
    )
    assert got[("split", "default")]["parameters"]["n_negatives"] == 99
    assert got[("pipeline", "ml-1m-ncf")]["parameters"]["ingest"]["format"] == "ncf"
    # parameters are checked against the flows' signatures: no unknown names
    for (flow, name), d in got.items():
        schema = d["parameter_openapi_schema"]["properties"]
        assert set(d["parameters"]) <= set(schema), (flow, name)


# ---------------------------------------------------------------------------- direct runs
@pytest.fixture(scope="module")
def api(server):
    """Flows called as plain functions in this process, reporting to the module's server
    (without PREFECT_API_URL Prefect would start a temporary server per process)."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    # No run heartbeats here: they detect crashed runs, and joining the heartbeat thread
    # costs about 1 s at the end of every flow and subflow run.
    with temporary_settings({PREFECT_API_URL: server.url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield server
        APILogHandler().flush()  # send the last logs while the server is still up


@pytest.fixture(scope="module")
def dask_address():
    """An existing Dask cluster the flows are pointed at (threads: quick to start here)."""
    from mmiris.cluster import local_cluster

    with local_cluster(workers=1, processes=False) as cluster:
        yield cluster.scheduler_address


def _flow_runs(server: PrefectServer, flow_name: str) -> list[dict]:
    """Runs of the flow started directly (not from a deployment: those include scheduled
    future runs), newest first."""
    return server.api(
        "POST",
        "/flow_runs/filter",
        json={
            "flows": {"name": {"any_": [flow_name]}},
            "flow_runs": {"deployment_id": {"is_null_": True}},
            "sort": "START_TIME_DESC",
        },
    )


def test_demo_pipeline_runs_directly_on_an_existing_dask_cluster(api, dask_address, tmp_path):
    from mmiris.flows.pipeline import demo_pipeline_flow

    store_uri = str(tmp_path / "store")
    t0 = time.perf_counter()
    out = demo_pipeline_flow(
        n_users=40,
        n_items=60,
        models=["fism", "multimodal_iris"],
        epochs=1,
        image_encoder="tiny-random-cnn",
        text_encoder="tiny-random-bert",
        dask_address=dask_address,
        report_dir=str(tmp_path / "report"),
        store=store_uri,
    )
    print(f"demo pipeline, direct run: {time.perf_counter() - t0:.1f} s")
    store = ArtifactStore(store_uri)
    kinds = {
        "interactions": "interactions",
        "items": "items",
        "item_images": "item_images",
        "item_text": "item_text",
        "split": "split",
        "image_features": "image_features",
        "text_features": "text_features",
        "recommendations": "recommendations",
    }
    for key, kind in kinds.items():
        assert store.manifest(out[key]).kind == kind, key
    # stages are linked by references: each artifact's parents are the refs passed along
    assert store.manifest(out["split"]).parents == [out["interactions"]]
    assert store.manifest(out["image_features"]).parents == [out["item_images"]]
    for name in ("fism", "multimodal_iris"):
        assert out["split"] in store.manifest(out["models"][name]).parents
        assert store.manifest(out["metrics"][name]).parents == [out["models"][name], out["split"]]
    # recommendations come from the attention model (explanations need a_ij)
    recs = store.manifest(out["recommendations"])
    assert recs.parents == [out["models"]["multimodal_iris"], out["split"]]
    assert store.manifest(out["models"]["multimodal_iris"]).parents == [
        out["split"],
        out["image_features"],
        out["text_features"],
    ]
    assert Path(out["report"]).is_file() and "<html" in Path(out["report"]).read_text()[:500].lower()
    # every stage ran as a subflow of the pipeline run, and the metrics are tables in the UI
    parent = _flow_runs(api, "pipeline-demo")[0]
    assert parent["state"]["type"] == "COMPLETED"
    for flow_name in (
        "demo-data",
        "split",
        "extract-image-features",
        "extract-text-features",
        "train",
        "evaluate",
        "recommend",
        "report",
    ):
        runs = _flow_runs(api, flow_name)
        assert runs and runs[0]["state"]["type"] == "COMPLETED", flow_name
    tables = api.api("POST", "/artifacts/filter", json={"artifacts": {"type": {"any_": ["table"]}}})
    metric_tables = [t for t in tables if (t["key"] or "").startswith("metrics-")]
    assert {t["key"] for t in metric_tables} >= {"metrics-fism", "metrics-multimodal-iris"}
    row = json.loads(metric_tables[0]["data"])[0]
    assert {"model", "protocol", "hr@10", "ndcg@10"} <= set(row)
    api.demo_out, api.demo_store = out, store_uri


def test_train_flow_alone_on_existing_artifacts_then_reuses_the_version(api):
    from mmiris.flows.train import train_flow

    out, store_uri = api.demo_out, api.demo_store
    ref = train_flow(
        split=out["split"], model="mf", model_settings={"emb": 8}, train_settings={"epochs": 1}, store=store_uri
    )
    store = ArtifactStore(store_uri)
    m = store.manifest(ref)
    assert m.kind == "model" and m.parents == [out["split"]]
    assert m.params["model_config"]["emb"] == 8
    again = train_flow(
        split="demo-split@latest", model="mf", model_settings={"emb": 8}, train_settings={"epochs": 1}, store=store_uri
    )
    assert again == ref and len(store.versions("model-mf")) == 1
    run = _flow_runs(api, "train")[0]
    text = _run_logs(api, run["id"], f"reused existing {ref}", "not retraining")
    assert f"reused existing {ref}" in text and "not retraining" in text, text


def test_tune_flow_alone_on_existing_artifacts(api):
    from mmiris.flows.tune import tune_flow

    out, store_uri = api.demo_out, api.demo_store
    ref = tune_flow(
        split=out["split"],
        model="fism",
        n_trials=2,
        only=["lr"],
        model_settings={"emb": 8},
        train_settings={"epochs": 1, "threads": 1},
        store=store_uri,
    )
    m = ArtifactStore(store_uri).manifest(ref)
    assert m.kind == "tune" and m.parents == [out["split"]] and m.stats["n_complete"] == 2
    run = _flow_runs(api, "tune")[0]
    assert run["state"]["type"] == "COMPLETED"
    assert f"published {ref}" in _run_logs(api, run["id"], f"published {ref}")
    arts = _run_artifacts(api, run["id"])
    assert any(a["type"] == "table" and a["key"] == "trials-tune-fism" for a in arts)


def test_bad_input_fails_the_run_once_without_retries(api):
    from mmiris.flows.split import split_flow

    items = api.demo_out["items"]
    with pytest.raises(MmirisError, match="expected interactions"):
        split_flow(interactions=items, store=api.demo_store)
    run = _flow_runs(api, "split")[0]
    assert run["state"]["type"] == "FAILED"
    tasks = _failed_task_runs(api, run["id"])
    assert [t["run_count"] for t in tasks] == [1]  # not retried: the same input fails the same way


def _new_item_files(folder: Path) -> tuple[Path, Path]:
    """A week's new items: records whose title is in "name" (9001, 9002, 9004) and posters
    (9001, 9002, 9003): 9003 has a poster only, 9004 a plot only."""
    from PIL import Image

    records = [
        {"movie_id": 9001, "name": "Dune: Part <Three>", "Plot": "sand and spice and war again"},
        {"movie_id": 9002, "name": "Paddington 4", "Plot": "a bear abroad, a quiet comedy"},
        {"movie_id": 9004, "name": "Slow Rivers", "Plot": "nothing happens, slowly"},
    ]
    jsonl = folder / "new.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    posters = folder / "posters"
    posters.mkdir()
    for k, item in enumerate((9001, 9002, 9003)):
        Image.new("RGB", (24, 32), (60 * k, 120, 200 - 50 * k)).save(posters / f"{item}.png")
    return jsonl, posters


def test_new_items_pipeline_ranks_the_weeks_new_items_with_their_titles(api, dask_address, tmp_path):
    """The weekly "new this week" chain on the demo store: ingest the week's records and
    posters (titles from a named field) -> their features with the model's encoders -> the
    top-N among them for every user -> the report; each stage a subflow; the same files again
    reuse every version."""
    from mmiris.flows.pipeline import new_items_pipeline_flow
    from mmiris.flows.train import train_flow

    out, store_uri = api.demo_out, api.demo_store
    store = ArtifactStore(store_uri)
    model = train_flow(
        split=out["split"],
        model="hybrid_iris",
        model_settings={"emb": 8, "attention_size": 8},
        train_settings={"epochs": 1, "threads": 1},
        image_features=out["image_features"],
        text_features=out["text_features"],
        store=store_uri,
    )
    jsonl, posters = _new_item_files(tmp_path)
    params = dict(
        model=model,
        jsonl=str(jsonl),
        images_dir=str(posters),
        title_field="name",
        name="week48",
        top_n=2,
        explain_k=2,
        dask_address=dask_address,
        report_dir=str(tmp_path / "report"),
        store=store_uri,
    )
    t0 = time.perf_counter()
    new = new_items_pipeline_flow(**params)
    print(f"new items pipeline, direct run: {time.perf_counter() - t0:.1f} s")
    assert new["item_text"].startswith("week48_item_text@") and new["item_images"].startswith("week48_item_images@")
    assert store.manifest(new["item_text"]).params["title_field"] == "name"
    # features with the encoders of the model's own features, one artifact per modality
    for mod, content in (("image", new["item_images"]), ("text", new["item_text"])):
        feat = store.manifest(new[f"{mod}_features"])
        assert feat.ref.name == f"new_items-{mod}_features" and feat.parents == [content]
        assert feat.params == store.manifest(out[f"{mod}_features"]).params
    recs = store.manifest(new["recommendations"])
    assert recs.kind == "new_item_recommendations" and recs.ref.name == "new-recommendations-hybrid_iris"
    assert {
        model,
        out["split"],
        new["item_text"],
        new["item_images"],
        new["image_features"],
        new["text_features"],
    } == set(recs.parents)
    n_users = store.manifest(out["split"]).stats["n_users"]
    table = store.read_table(new["recommendations"], "recommendations").to_pydict()
    assert len(table["user_id"]) == 2 * n_users and recs.stats["new_items"] == 4
    items = store.read_table(new["recommendations"], "new_items").to_pydict()
    assert dict(zip(items["new_item_id"], items["title"])) == {
        9001: "Dune: Part <Three>",
        9002: "Paddington 4",
        9003: None,  # a poster only: no record, no title
        9004: "Slow Rivers",
    }
    # each stage is its own run; the UI's table shows the new items' own ids and titles
    for flow_name in ("ingest-new-items", "extract-new-item-features", "recommend", "report", "pipeline-new-items"):
        runs = _flow_runs(api, flow_name)
        assert runs and runs[0]["state"]["type"] == "COMPLETED", flow_name
    preview = next(a for a in _run_artifacts(api, _flow_runs(api, "recommend")[0]["id"]) if a["type"] == "table")
    rows = json.loads(preview["data"])
    assert {r["item"] for r in rows} <= {9001, 9002, 9003, 9004}
    assert {r["title"] for r in rows} <= {"Dune: Part <Three>", "Paddington 4", "new item 9003", "Slow Rivers"}
    # the report's cards: the first users' new items by title (escaped), "new item <id>" without one
    page = Path(new["report"]).read_text()
    own = dict(zip(items["item_id"], items["new_item_id"]))
    label = {i: t or f"new item {own[i]}" for i, t in zip(items["item_id"], items["title"])}
    first = sorted(set(table["user_id"]))[:3]  # the users of the cards
    assert "New this week" in page and "<Three>" not in page
    for u, i, rank in zip(table["user_id"], table["item_id"], table["rank"]):
        if u in first:
            assert f"#{rank} {html.escape(label[i])}" in page, (u, rank, label[i])
    # next week with the same files: every version found again, and the stages say so
    again = new_items_pipeline_flow(**params)
    assert {k: v for k, v in again.items() if k != "report"} == {k: v for k, v in new.items() if k != "report"}
    run = _flow_runs(api, "ingest-new-items")[0]
    assert f"reused existing {new['item_text']}" in _run_logs(api, run["id"], f"reused existing {new['item_text']}")
    # an ensemble with another seed's model and a content-kNN share: the same items, ranked by the blend
    other = train_flow(
        split=out["split"],
        model="hybrid_iris",
        model_settings={"emb": 8, "attention_size": 8},
        train_settings={"epochs": 1, "threads": 1, "seed": 1},
        image_features=out["image_features"],
        text_features=out["text_features"],
        store=store_uri,
    )
    blended = new_items_pipeline_flow(**{**params, "ensemble": [other], "knn_share": 0.2, "report_dir": None})
    m = store.manifest(blended["recommendations"])
    assert m.params["ensemble"] == [other] and m.params["knn_share"] == 0.2 and other in m.parents
    assert blended["recommendations"] != new["recommendations"] and blended["item_text"] == new["item_text"]
    from mmiris.flows.recommend import recommend_flow

    with pytest.raises(ValueError, match="ensemble averages models over new items: give new_items"):
        recommend_flow(model=model, ensemble=[other], store=store_uri)  # the catalogue: nothing to average


def test_a_misspelt_title_field_fails_the_ingest_run_once_without_retries(api, tmp_path):
    from mmiris.errors import InputError
    from mmiris.flows.ingest import ingest_new_items_flow

    jsonl, posters = _new_item_files(tmp_path)
    store_uri = str(tmp_path / "store")
    with pytest.raises(InputError, match=r"new\.jsonl:1: field 'title' missing, and from every other record too"):
        ingest_new_items_flow(jsonl=str(jsonl), images_dir=str(posters), title_field="title", store=store_uri)
    run = _flow_runs(api, "ingest-new-items")[0]
    assert run["state"]["type"] == "FAILED"
    tasks = _failed_task_runs(api, run["id"])
    assert [t["run_count"] for t in tasks] == [1]  # not retried: the same file fails the same way
    assert not Path(store_uri).exists() or ArtifactStore(store_uri).names() == []  # neither artifact


def test_crawl_omdb_flow_against_a_local_omdb_server(api, tmp_path, monkeypatch):
    """The crawl flow over real HTTP (the OMDb-compatible server of mmiris.crawl): an invalid
    key stops the run at once without a retry; the key from the worker's environment works
    and never shows in the run's logs."""
    from mmiris.flows.crawl import crawl_omdb_flow
    from mmiris.testing.crawl import publish_items, record, write_posters
    from mmiris.testing.omdb_server import Catalogue, OmdbServer

    key = "flow-test-KEY-7f3a1c"
    write_posters(tmp_path / "posters")
    records = [record(1, "The Shawshank Redemption", 1994, "tt0111161"), record(6, "Toy Story", 1995, "tt0114709")]
    store = ArtifactStore(tmp_path / "store")
    items = publish_items(
        store,
        [
            {"item_id": 0, "source_id": "1", "title": "Shawshank Redemption, The (1994)", "year": 1994},
            {"item_id": 1, "source_id": "6", "title": "Toy Story (1995)", "year": 1995},
            {"item_id": 2, "source_id": "9", "title": "Nothing Like It (1990)", "year": 1990},
        ],
    )
    params = dict(
        items=str(items),
        rate_per_s=None,
        daily_quota=None,
        workers=0,
        cache_dir=str(tmp_path / "cache"),
        secret_block=None,
        store=store.uri,
    )
    with OmdbServer(Catalogue(records, tmp_path / "posters"), {key}) as srv:
        monkeypatch.setenv("OMDB_API_KEY", "not-the-key")
        with pytest.raises(MmirisError, match="(?i)api key"):
            crawl_omdb_flow(base_url=srv.url, **params)
        failed = _flow_runs(api, "crawl-omdb")[0]
        tasks = api.api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [failed["id"]]}}})
        assert [t["run_count"] for t in tasks] == [1]
        assert not store.versions("item_text")  # nothing half-published

        monkeypatch.setenv("OMDB_API_KEY", key)
        out = crawl_omdb_flow(base_url=srv.url, **params)
    text = {r["item_id"]: r for r in store.read_table(out["item_text"]).to_pylist()}
    assert text[0]["present"] and text[1]["title"] == "Toy Story"
    assert not text[2]["present"] and text[2]["reason"]  # no match: kept, with the reason
    assert store.manifest(out["item_images"]).parents == [str(items)]
    run = _flow_runs(api, "crawl-omdb")[0]
    logs = _run_logs(api, run["id"], f"published {out['item_text']}")
    assert f"published {out['item_text']}" in logs and key not in logs


def test_pipeline_flow_on_real_format_files_with_crawl(api, dask_address, tmp_path, monkeypatch):
    """The real-data pipeline: MovieLens CSV files -> ingest -> OMDb crawl (local server) ->
    image features -> split -> train/evaluate -> recommend -> report."""
    from mmiris.flows.pipeline import pipeline_flow
    from mmiris.testing.crawl import record, write_posters
    from mmiris.testing.omdb_server import Catalogue, OmdbServer

    src = tmp_path / "ml"
    src.mkdir()
    titles = {
        1: ("Toy Story", 1995),
        2: ("Heat", 1995),
        3: ("Casino", 1995),
        6: ("Babe", 1995),
        7: ("Clueless", 1995),
        8: ("Balto", 1995),
    }
    (src / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{m},{t} ({y}),Drama\n" for m, (t, y) in titles.items())
    )
    rng = np.random.default_rng(0)
    rows = [
        f"{u},{m},4.0,{1_000_000 + 10 * u + i}\n"
        for u in range(1, 31)
        for i, m in enumerate(rng.choice(list(titles), 4, replace=False))
    ]
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(rows))
    write_posters(tmp_path / "posters")
    records = [record(m, t, y, f"tt{m:07d}") for m, (t, y) in titles.items() if m != 8]
    monkeypatch.setenv("OMDB_API_KEY", "pipeline-KEY")
    store_uri = str(tmp_path / "store")
    with OmdbServer(Catalogue(records, tmp_path / "posters"), {"pipeline-KEY"}) as srv:
        out = pipeline_flow(
            ingest={"format": "movielens", "source": str(src), "name_prefix": "ml-"},
            crawl="omdb",
            crawl_params={
                "base_url": srv.url,
                "rate_per_s": None,
                "daily_quota": None,
                "workers": 0,
                "secret_block": None,
                "cache_dir": str(tmp_path / "cache"),
            },
            split_params={"n_negatives": 1},
            image_encoder="tiny-random-cnn",
            models=["itempop", "vbpr"],
            model_settings={"emb": 8},
            train_settings={"epochs": 1},
            dask_address=dask_address,
            report_dir=str(tmp_path / "report"),
            store=store_uri,
        )
    store = ArtifactStore(store_uri)
    assert store.manifest(out["items"]).kind == "items"
    assert store.manifest(out["item_images"]).parents == [out["items"]]
    assert store.manifest(out["image_features"]).parents == [out["item_images"]]
    assert "text_features" not in out  # no model reads text: not extracted
    assert store.manifest(out["split"]).parents == [out["interactions"]]
    assert out["split"].startswith("ml-split@")
    assert store.manifest(out["models"]["vbpr"]).parents == [out["split"], out["image_features"]]
    assert set(out["metrics"]) == {"itempop", "vbpr"}
    assert store.manifest(out["recommendations"]).kind == "recommendations"
    assert Path(out["report"]).is_file()


def test_flows_on_an_s3_store(api, monkeypatch):
    """MMIRIS_STORE-style S3 URI (a local S3 server here, started by the test)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from mmiris.flows.demo_data import demo_data_flow
    from mmiris.flows.split import split_flow

    for k, v in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    s3.start()
    try:
        _, port = s3.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="mmiris")
        uri = f"s3://mmiris/team-store?endpoint_override=127.0.0.1:{port}&scheme=http"
        refs = demo_data_flow(n_users=30, n_items=40, store=uri)
        split = split_flow(interactions=refs["interactions"], n_negatives=10, store=uri)
        store = ArtifactStore(uri)
        assert not store.is_local
        assert store.manifest(split).parents == [refs["interactions"]]
        assert store.read_table(split, "test").num_rows > 0
        keys = [
            o["Key"]
            for o in boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").list_objects_v2(
                Bucket="mmiris", Prefix="team-store/"
            )["Contents"]
        ]
        assert f"team-store/{split.replace('@', '/')}/manifest.json" in keys
    finally:
        s3.stop()


def test_stage_deployments_run_alone_on_the_demo_data(server, deployed):
    """``prefect deployment run`` of the split stage on the embedded demo data, then of the
    train stage alone on the split the first run published."""
    store = ArtifactStore(server.store)
    interactions = server.demo_interactions
    run_id, triggered = server.split_run
    run = _wait(server, run_id, "split/default", triggered)
    split = store.latest("demo-split")
    m = store.manifest(split)
    assert m.kind == "split" and m.parents == [str(interactions)]
    assert m.params["n_negatives"] == 20
    assert store.read_table(split, "test").num_rows > 0
    text = _run_logs(server, run["id"], f"published {split}", "704 train, 40 valid, 40 test rows")
    assert f"published {split}" in text, text
    assert "704 train, 40 valid, 40 test rows" in text, text  # the stage's own log line
    arts = _run_artifacts(server, run["id"])
    assert any(a["type"] == "markdown" and str(split) in a["data"] for a in arts)

    # data-parallel: two torchrun ranks (gloo on CPU) started by the flow on the worker
    run = _run_deployment(
        server,
        "train/weekly",
        {
            "split": str(split),
            "model": "fism",
            "nproc_per_node": 2,
            "train_settings": {"epochs": 1, "threads": 1, "device": "cpu"},
        },
    )
    model = store.latest("model-fism")
    m = store.manifest(model)
    assert m.parents == [str(split)] and m.info["world_size"] == 2
    text = _run_logs(server, run["id"], f"published {model}", "epoch 1")
    assert "torch.distributed.run --standalone --nproc_per_node=2" in text, text
    assert f"published {model}" in text and "epoch 1" in text, text
    arts = _run_artifacts(server, run["id"])
    assert any(a["type"] == "table" and a["key"] == "training-model-fism" for a in arts)
