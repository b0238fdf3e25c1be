"""Flows and deployments against a real Prefect server on 127.0.0.1 (one for the module).

The module starts ``prefect server start`` (temporary PREFECT_HOME, sqlite in tmp, no
telemetry), creates the ``mmiris`` process work pool, runs ``prefect deploy --all`` from the
project root with the real ``prefect.yaml``, starts a process worker and triggers deployment
runs with ``prefect deployment run``, then checks the runs completed and published their
artifacts. Flows are also run directly (in-process) against the same server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from mmiris.artifacts import ArtifactStore

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
        proc = subprocess.Popen([PREFECT, *args], env=self.env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        res = subprocess.run([PREFECT, *args], env=self.env, cwd=ROOT, capture_output=True,
                             text=True, timeout=timeout)
        assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res

    def api(self, method: str, path: str, **kw) -> dict | list:
        r = requests.request(method, self.url + path, timeout=30, **kw)
        r.raise_for_status()
        return r.json()

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.logs.iterdir()))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    srv = PrefectServer(home, tmp_path_factory.mktemp("store") / "store")
    t0 = time.perf_counter()
    proc = srv.start("server", "start", "--host", "127.0.0.1", "--port", str(srv.port),
                     log="server.log")
    deadline = time.time() + 120
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
    res = server.cli("--no-prompt", "deploy", "--all")
    server.deploy_s = time.perf_counter() - t0
    print(f"work pool + prefect deploy --all: {server.deploy_s:.1f} s")
    server.start("worker", "start", "--pool", POOL, "--name", "test-worker", log="worker.log")
    return res.stdout


def _run_deployment(server: PrefectServer, name: str, params: dict, timeout: int = 240) -> dict:
    """``prefect deployment run FLOW/DEPLOYMENT --params JSON --watch``; returns the finished
    flow run (asserting it COMPLETED)."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [PREFECT, "deployment", "run", name, "--params", json.dumps(params), "--watch",
         "--watch-timeout", str(timeout)],
        env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60)
    flow_name, dep_name = name.split("/", 1)
    runs = server.api("POST", "/flow_runs/filter",
                      json={"sort": "EXPECTED_START_TIME_DESC", "limit": 1,
                            "flows": {"name": {"any_": [flow_name]}},
                            "deployments": {"name": {"any_": [dep_name]}}})
    assert runs, f"no flow run for {name}:\n{res.stdout}\n{res.stderr}"
    run = runs[0]
    state = run["state"]["type"]
    assert res.returncode == 0 and state == "COMPLETED", (
        f"{name} ended {state} (rc {res.returncode}):\n{res.stdout}\n{res.stderr}\n"
        f"{server.log_text()}")
    run["wall_s"] = time.perf_counter() - t0
    print(f"deployment run {name}: {run['wall_s']:.1f} s")
    return run


def _run_logs(server: PrefectServer, run_id: str) -> str:
    logs = server.api("POST", "/logs/filter",
                      json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    return "\n".join(entry["message"] for entry in logs)


def _run_artifacts(server: PrefectServer, run_id: str) -> list[dict]:
    return server.api("POST", "/artifacts/filter",
                      json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})


# ---------------------------------------------------------------------------- deployments
def test_deploy_all_registers_every_deployment_with_its_schedule_and_defaults(server, deployed):
    conf = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    flows = {f["id"]: f["name"] for f in server.api("POST", "/flows/filter", json={})}
    got = {(flows[d["flow_id"]], d["name"]): d
           for d in server.api("POST", "/deployments/filter", json={})}
    expected_flows = {"demo-data", "ingest-movielens", "ingest-ncf", "ingest-amazon", "crawl-omdb",
                      "crawl-amazon-images", "extract-image-features", "extract-text-features",
                      "split", "train", "evaluate", "recommend", "report", "pipeline",
                      "pipeline-demo"}
    assert {f for f, _ in got} == expected_flows
    assert len(got) == len(conf["deployments"])
    for key, d in got.items():
        assert d["work_pool_name"] == POOL, key
        # runs start in the project root (no pull section: deploy records the cwd)
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                    {"directory": str(ROOT)}}], key
    scheduled = {k for k, d in got.items() if any(s["active"] for s in d["schedules"])}
    assert scheduled == {("crawl-omdb", "daily"), ("crawl-amazon-images", "daily"),
                         ("train", "weekly")}
    cron = {k: got[k]["schedules"][0]["schedule"]["cron"] for k in scheduled}
    assert cron[("train", "weekly")] == "0 4 * * 0"
    assert got[("split", "default")]["parameters"]["n_negatives"] == 99
    assert got[("pipeline", "ml-1m-ncf")]["parameters"]["ingest"]["format"] == "ncf"
    # parameters are checked against the flows' signatures: no unknown names
    for (flow, name), d in got.items():
        schema = d["parameter_openapi_schema"]["properties"]
        assert set(d["parameters"]) <= set(schema), (flow, name)


def test_stage_deployments_run_on_demo_data_publish_and_reuse(server, deployed):
    store = ArtifactStore(server.store)
    data_run = _run_deployment(server, "demo-data/demo", {"n_users": 40, "n_items": 60})
    interactions = store.latest("demo-interactions")
    assert store.read_table(store.latest("demo-items"), "items").num_rows == 60
    assert f"published {interactions}" in _run_logs(server, data_run["id"])

    # a stage deployment alone, on the artifacts the first run published
    run = _run_deployment(server, "split/default",
                          {"interactions": str(interactions), "n_negatives": 20,
                           "name": "demo-split"})
    split = store.latest("demo-split")
    m = store.manifest(split)
    assert m.kind == "split" and m.parents == [str(interactions)]
    assert m.params["n_negatives"] == 20
    assert store.read_table(split, "test").num_rows > 0
    text = _run_logs(server, run["id"])
    assert f"published {split}" in text, text
    arts = _run_artifacts(server, run["id"])
    assert any(a["type"] == "markdown" and str(split) in a["data"] for a in arts)

    # same inputs and parameters again: the run reuses the version and says so in the UI
    again = _run_deployment(server, "split/default",
                            {"interactions": "demo-interactions@latest", "n_negatives": 20,
                             "name": "demo-split"})
    text = _run_logs(server, again["id"])
    assert f"reused existing {split}" in text, text
    assert "not recomputing" in text, text  # the store's own log line reaches the UI too
    assert [v.version for v in [store.latest("demo-split")]] == [split.version]
    assert len(store.versions("demo-split")) == 1


# ---------------------------------------------------------------------------- direct runs
@pytest.fixture(scope="module")
def api(server):
    """Flows called as plain functions in this process, reporting to the module's server
    (without PREFECT_API_URL Prefect would start a temporary server per process)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect.logging.handlers import APILogHandler

    with temporary_settings({PREFECT_API_URL: server.url}):
        yield server
        APILogHandler.flush()  # send the last logs while the server is still up


@pytest.fixture(scope="module")
def dask_address():
    """An existing Dask cluster the flows are pointed at (threads: quick to start here)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def _flow_runs(server: PrefectServer, flow_name: str) -> list[dict]:
    return server.api("POST", "/flow_runs/filter",
                      json={"flows": {"name": {"any_": [flow_name]}},
                            "sort": "EXPECTED_START_TIME_DESC"})


def test_demo_pipeline_runs_directly_on_an_existing_dask_cluster(api, dask_address, tmp_path):
    from flows.pipeline import demo_pipeline_flow

    store_uri = str(tmp_path / "store")
    t0 = time.perf_counter()
    out = demo_pipeline_flow(n_users=40, n_items=60, n_negatives=20, models=["fism", "nais_prod"],
                             train_settings={"epochs": 1, "batch_size": 256},
                             image_encoder="tiny-random-cnn", text_encoder="tiny-random-bert",
                             dask_address=dask_address, report_dir=str(tmp_path / "report"),
                             name="t", store=store_uri)
    print(f"demo pipeline, direct run: {time.perf_counter() - t0:.1f} s")
    store = ArtifactStore(store_uri)
    kinds = {"interactions": "interactions", "items": "items", "item_images": "item_images",
             "item_text": "item_text", "split": "split", "image_features": "image_features",
             "text_features": "text_features", "recommendations": "recommendations"}
    for key, kind in kinds.items():
        assert store.manifest(out[key]).kind == kind, key
    # stages are linked by references: each artifact's parents are the refs passed along
    assert store.manifest(out["split"]).parents == [out["interactions"]]
    assert store.manifest(out["image_features"]).parents == [out["item_images"]]
    for name in ("fism", "nais_prod"):
        assert out["split"] in store.manifest(out["models"][name]).parents
        assert store.manifest(out["metrics"][name]).parents == [out["models"][name], out["split"]]
    recs = store.manifest(out["recommendations"])
    assert recs.parents[0] in out["models"].values()
    assert Path(out["report"]).is_file() and "<html" in Path(out["report"]).read_text()[:500].lower()
    # every stage ran as a subflow of the pipeline run, and the metrics are tables in the UI
    parent = _flow_runs(api, "pipeline-demo")[0]
    assert parent["state"]["type"] == "COMPLETED"
    for flow_name in ("demo-data", "split", "extract-image-features", "extract-text-features",
                      "train", "evaluate", "recommend", "report"):
        runs = _flow_runs(api, flow_name)
        assert runs and runs[0]["state"]["type"] == "COMPLETED", flow_name
    tables = api.api("POST", "/artifacts/filter",
                     json={"artifacts": {"type": {"any_": ["table"]}}})
    metric_tables = [t for t in tables if (t["key"] or "").startswith("metrics-")]
    assert {t["key"] for t in metric_tables} >= {"metrics-fism", "metrics-nais-prod"}
    row = json.loads(metric_tables[0]["data"])[0]
    assert {"model", "protocol", "hr@10", "ndcg@10"} <= set(row)
    api.demo_out, api.demo_store = out, store_uri


def test_train_flow_alone_on_existing_artifacts_then_reuses_the_version(api):
    from flows.train import train_flow

    out, store_uri = api.demo_out, api.demo_store
    ref = train_flow(split=out["split"], model="mf", model_settings={"emb": 8},
                     train_settings={"epochs": 1}, store=store_uri)
    store = ArtifactStore(store_uri)
    m = store.manifest(ref)
    assert m.kind == "model" and m.parents == [out["split"]]
    assert m.params["model_config"]["emb"] == 8
    again = train_flow(split="t-split@latest", model="mf", model_settings={"emb": 8},
                       train_settings={"epochs": 1}, store=store_uri)
    assert again == ref and len(store.versions("model-mf")) == 1
    run = _flow_runs(api, "train")[0]
    text = _run_logs(api, run["id"])
    assert f"reused existing {ref}" in text and "not retraining" in text, text


def test_bad_input_fails_the_run_once_without_retries(api):
    from flows.split import split_flow
    from mmiris.errors import MmirisError

    items = api.demo_out["items"]
    with pytest.raises(MmirisError, match="expected interactions"):
        split_flow(interactions=items, store=api.demo_store)
    run = _flow_runs(api, "split")[0]
    assert run["state"]["type"] == "FAILED"
    tasks = api.api("POST", "/task_runs/filter",
                    json={"flow_runs": {"id": {"any_": [run["id"]]}}})
    assert [t["run_count"] for t in tasks] == [1]  # not retried: the same input fails the same way
