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
    """``prefect deployment run NAME --params JSON --watch``; returns the finished flow run."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [PREFECT, "deployment", "run", name, "--params", json.dumps(params), "--watch",
         "--watch-timeout", str(timeout)],
        env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60)
    runs = server.api("POST", "/flow_runs/filter",
                      json={"sort": "EXPECTED_START_TIME_DESC", "limit": 1,
                            "deployments": {"name": {"any_": [name.split("/", 1)[1]]}}})
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
    return "\n".join(l["message"] for l in logs)


def test_deploy_all_registers_every_deployment_with_schedules(server, deployed):
    deployments = server.api("POST", "/deployments/filter", json={})
    names = {d["name"] for d in deployments}
    import yaml

    expected = {d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert expected <= names
    assert all(d["work_pool_name"] == POOL for d in deployments)


def test_demo_deployment_run_publishes_artifacts_and_reuse_is_logged(server, deployed):
    run = _run_deployment(server, "demo-data/demo", {"n_users": 40, "n_items": 30})
    store = ArtifactStore(server.store)
    for kind in ("interactions", "items", "item_images", "item_text"):
        ref = store.latest(f"demo-{kind}")
        assert store.manifest(ref).kind == kind
    items = store.read_table(store.latest("demo-items"), "items")
    assert items.num_rows == 30
    assert "published demo-interactions@" in _run_logs(server, run["id"])
    # Same parameters again: the run reuses the versions and says so in its logs.
    again = _run_deployment(server, "demo-data/demo", {"n_users": 40, "n_items": 30})
    text = _run_logs(server, again["id"])
    assert "reused existing demo-interactions@" in text, text
    assert "not recomputing" in text, text  # the store's own log line reaches the UI too
    arts = server.api("POST", "/artifacts/filter",
                      json={"artifacts": {"flow_run_id": {"any_": [again["id"]]}}})
    assert any(a["type"] == "markdown" and "demo-interactions@" in a["data"] for a in arts)
