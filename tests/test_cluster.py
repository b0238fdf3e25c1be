"""mmiris.cluster, the one Dask client factory: dask-cuda only where GPUs are, imported lazily."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

from mmiris import cluster


class FakeCluster:
    made: list[dict] = []

    def __init__(self, **kwargs):
        FakeCluster.made.append(kwargs)

    def close(self):
        pass


@pytest.fixture(autouse=True)
def _reset():
    FakeCluster.made = []


def test_gpu_machine_gets_one_dask_cuda_worker_per_gpu_with_the_gpu_resource(monkeypatch):
    fake = types.ModuleType("dask_cuda")
    fake.LocalCUDACluster = FakeCluster  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    monkeypatch.setattr(cluster, "cuda_devices", lambda: 2)
    with cluster.local_cluster() as c:
        assert isinstance(c, FakeCluster)
    assert FakeCluster.made == [
        {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0", "resources": {"GPU": 1}}
    ]


def test_cpu_machine_never_imports_dask_cuda(monkeypatch):
    import distributed

    monkeypatch.setattr(cluster, "cuda_devices", lambda: 0)
    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    monkeypatch.delitem(sys.modules, "dask_cuda", raising=False)
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # importing it would raise
    with cluster.local_cluster(workers=3):
        pass
    assert FakeCluster.made[0]["n_workers"] == 3 and "resources" not in FakeCluster.made[0]
    with cluster.local_cluster(workers=2, processes=False, threads_per_worker=4):
        pass
    assert FakeCluster.made[1]["processes"] is False and FakeCluster.made[1]["threads_per_worker"] == 4


def test_gpus_without_dask_cuda_fall_back_to_plain_gpu_workers(monkeypatch):
    import distributed

    monkeypatch.setattr(cluster, "cuda_devices", lambda: 2)
    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    with cluster.local_cluster():
        pass
    assert FakeCluster.made[0]["resources"] == {"GPU": 1} and FakeCluster.made[0]["n_workers"] == 2
    with cluster.local_cluster(gpu=False, workers=1):  # gpu=False: CPU workers even here
        pass
    assert "resources" not in FakeCluster.made[1]


def test_scheduler_address_comes_from_the_argument_then_dask_config(monkeypatch):
    import dask

    assert cluster.scheduler_address("tcp://a:1") == "tcp://a:1"
    with dask.config.set({"scheduler-address": "tcp://b:2"}):
        assert cluster.scheduler_address(None) == "tcp://b:2"


def test_no_other_module_makes_a_dask_client_or_cluster():
    """mmiris.cluster is the one factory: no other source file (stages, CLIs, flows,
    benchmarks, tests) calls ``Client(...)``, ``LocalCluster(...)`` or ``LocalCUDACluster(...)``."""
    root = Path(__file__).resolve().parents[1]
    factory = root / "mmiris" / "cluster.py"
    files = {
        p.resolve()
        for folder in ("mmiris", "pipelines", "flows", "benchmarks", "tests")
        for p in (root / folder).rglob("*.py")
    }
    assert factory in files and len(files) > 100
    made = []
    for path in sorted(files - {factory}):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name in {"Client", "LocalCluster", "LocalCUDACluster"}:
                    made.append(f"{path.relative_to(root)}:{node.lineno} {name}(...)")
    assert not made, "use mmiris.cluster.dask_client / local_cluster instead:\n" + "\n".join(made)
