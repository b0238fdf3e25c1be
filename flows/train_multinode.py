"""Flow: train a model on several nodes — launch the torchrun Indexed Job on Kubernetes, wait.

The flow run itself is small (a CPU pod of the ``mmiris-k8s`` work pool, or any machine with
``kubectl`` and a kubeconfig); the training runs in the Job it creates: ``max nodes`` pods,
one torchrun each, elastic ``--nnodes MIN:MAX`` over a c10d rendezvous on pod 0 (reached
through a headless Service), ``nproc_per_node`` GPUs per pod. The store is the shared one
(Secret ``mmiris-store``, an S3 URI), so the checkpoints are too (``<store>/_checkpoints``):
ranks on machines with no shared disk resume from them after a torchrun restart or a lost
node. The manifests are those of ``infra/training/torchrun-job.yaml`` with this run's name,
sizes, image and trainer arguments (``job_manifests``; tests check the two agree).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.errors import MmirisError
from mmiris.flows.torchrun import train_argv
from mmiris.pipelines.train import model_artifact_name
from mmiris.train.config import TrainConfig

RDZV_PORT = 29400


def job_manifests(
    name: str,
    argv: list[str],
    *,
    min_nodes: int,
    max_nodes: int,
    nproc_per_node: int,
    image: str,
    namespace: str,
    gpus_per_node: int | None = None,
) -> list[dict]:
    """The headless Service and the Indexed Job of one multi-node run."""
    gpus = nproc_per_node if gpus_per_node is None else gpus_per_node
    labels = {"app.kubernetes.io/name": "mmiris-train", "mmiris/run": name}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"job-name": name},
            "ports": [{"name": "c10d", "port": RDZV_PORT, "targetPort": RDZV_PORT}],
        },
    }
    torchrun = [
        f"--nnodes={min_nodes}:{max_nodes}",
        f"--nproc-per-node={nproc_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={name}-0.{name}:{RDZV_PORT}",
        f"--rdzv-id={name}",
        "--max-restarts=3",
        "-m",
        "mmiris.train.launch",
        *argv,
    ]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": max_nodes,
            "parallelism": max_nodes,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "subdomain": name,
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": image,
                            "command": ["torchrun"],
                            "args": torchrun,
                            "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
                            "envFrom": [{"secretRef": {"name": "mmiris-store"}}],
                            "ports": [{"containerPort": RDZV_PORT, "name": "c10d"}],
                            "resources": {"limits": {"nvidia.com/gpu": gpus}},
                            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                        }
                    ],
                    "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}],
                },
            },
        },
    }
    return [service, job]


def parse_nnodes(nnodes: str | int) -> tuple[int, int]:
    """``"1:4"`` -> (1, 4); ``2`` -> (2, 2)."""
    lo, _, hi = str(nnodes).partition(":")
    try:
        lo_n, hi_n = int(lo), int(hi or lo)
    except ValueError:
        raise MmirisError(f"nnodes {nnodes!r}: expected N or MIN:MAX (e.g. 1:4)") from None
    if not 1 <= lo_n <= hi_n:
        raise MmirisError(f"nnodes {nnodes!r}: expected 1 <= MIN <= MAX")
    return lo_n, hi_n


def _kubectl(*args: str, stdin: str | None = None) -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        raise MmirisError("kubectl is not on PATH: the multi-node train flow creates its Job with kubectl")
    res = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True)
    if res.returncode != 0:
        raise MmirisError(f"kubectl {' '.join(args[:2])} failed: {res.stderr.strip()[-500:]}")
    return res.stdout


@task(name="train-multinode-job", cache_policy=NO_CACHE)
def run_job(manifests: list[dict], namespace: str, poll_s: float, timeout_s: float) -> None:
    apply_and_wait(manifests, namespace, poll_s, timeout_s, get_run_logger())


def apply_and_wait(manifests: list[dict], namespace: str, poll_s: float, timeout_s: float, log: Any) -> None:
    """``kubectl apply`` the manifests, then poll the Job until Complete (or Failed: error)."""
    name = manifests[-1]["metadata"]["name"]
    _kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests))
    log.info("created Job %s in namespace %s (kubectl -n %s logs -f job/%s)", name, namespace, namespace, name)
    t0 = time.monotonic()
    while True:
        status = json.loads(_kubectl("get", "job", name, "-n", namespace, "-o", "json")).get("status", {})
        conditions = {c["type"]: c.get("status") for c in status.get("conditions", [])}
        if conditions.get("Complete") == "True":
            log.info("Job %s completed in %.0fs", name, time.monotonic() - t0)
            return
        if conditions.get("Failed") == "True":
            raise MmirisError(
                f"Job {name} failed (kubectl -n {namespace} logs job/{name}); its checkpoints stay in the store"
            )
        if time.monotonic() - t0 > timeout_s:
            raise MmirisError(f"Job {name} did not finish in {timeout_s:.0f}s; it keeps running")
        time.sleep(poll_s)


@flow(name="train-multinode")
def train_multinode_flow(
    split: str = "split@latest",
    model: str = "multimodal_iris",
    model_settings: dict[str, Any] | None = None,
    train_settings: dict[str, Any] | None = None,
    image_features: str | None = None,
    text_features: str | None = None,
    nnodes: str = "1:4",
    nproc_per_node: int = 1,
    image: str = "ghcr.io/your-org/mmiris:cuda",
    namespace: str = "mmiris",
    resume: bool = True,
    store: str | None = None,
    poll_s: float = 15.0,
    timeout_s: float = 7 * 86400.0,
) -> str:
    """Train ``model`` with DDP on ``nnodes`` Kubernetes pods (``MIN:MAX``, elastic) of
    ``nproc_per_node`` GPUs each; returns the published model ref (``name@version``)."""
    TrainConfig.from_dict(train_settings or {})  # a bad field fails here, before any pod starts
    lo, hi = parse_nnodes(nnodes)
    argv = train_argv(
        split,
        model,
        model_settings,
        train_settings,
        image_features=image_features,
        text_features=text_features,
        resume=resume,
    )  # the pods' store is MMIRIS_STORE from the Secret
    name = f"mmiris-train-{uuid.uuid4().hex[:8]}"
    manifests = job_manifests(
        name, argv, min_nodes=lo, max_nodes=hi, nproc_per_node=nproc_per_node, image=image, namespace=namespace
    )
    run_job(manifests, namespace, poll_s, timeout_s)
    st = ArtifactStore(store)
    return str(st.latest(model_artifact_name(model)))
