"""infra/: every file parses, and the names that must agree across files agree.

No cluster here: these checks catch what breaks first when a team applies the files —
a worker pointed at a Service that does not exist, a rendezvous endpoint off by a name,
an entry point that is not in the package, an image that does not install the project.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BIN = Path(sys.executable).parent


def _docs(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    return docs


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def _argv(c: dict) -> list[str]:
    return [*c.get("command", []), *c.get("args", [])]


def _pool_names() -> set[str]:
    conf = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["work_pool"]["name"] for d in conf["deployments"]}


def test_every_yaml_file_parses_and_k8s_objects_have_required_fields():
    files = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert len(files) >= 4
    for f in files:
        for doc in _docs(f):
            if "apiVersion" in doc:  # a Kubernetes object
                assert {"apiVersion", "kind", "metadata"} <= set(doc), f
                assert doc["metadata"].get("name"), f"{f}: {doc['kind']} without a name"
                if doc["kind"] in ("Deployment", "Job"):
                    for c in _containers(doc):
                        assert c.get("image") and c.get("name"), f"{f}: container without image/name"


def test_dask_cluster_has_scheduler_and_cpu_and_gpu_worker_groups():
    docs = _docs(INFRA / "dask" / "dask-cluster.yaml")
    svc = _by_kind(docs, "Service")[0]
    ports = {p["port"] for p in svc["spec"]["ports"]}
    assert 8786 in ports
    deps = {d["metadata"]["name"]: d for d in _by_kind(docs, "Deployment")}
    scheduler = [d for d in deps.values() if _argv(_containers(d)[0])[:2] == ["dask", "scheduler"]]
    assert len(scheduler) == 1
    # the Service selects the scheduler pods
    labels = scheduler[0]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    workers = [d for d in deps.values() if _argv(_containers(d)[0])[:2] == ["dask", "worker"]]
    gpu = [w for w in workers if "--resources" in _argv(_containers(w)[0])]
    cpu = [w for w in workers if w not in gpu]
    assert len(gpu) == 1 and len(cpu) >= 1
    address = f"tcp://{svc['metadata']['name']}:8786"
    for w in workers:
        argv = _argv(_containers(w)[0])
        assert argv[2] == address, f"{w['metadata']['name']} connects to {argv[2]}, not {address}"
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    g = _containers(gpu[0])[0]
    argv = _argv(g)
    assert argv[argv.index("--resources") + 1] == "GPU=1"
    assert g["resources"]["limits"]["nvidia.com/gpu"] == 1
    for w in cpu:
        assert "nvidia.com/gpu" not in _containers(w)[0]["resources"].get("limits", {})
    # workers import mmiris: they run the mmiris image and read the shared store
    for w in workers:
        c = _containers(w)[0]
        assert "mmiris" in c["image"]
        assert {"secretRef": {"name": "mmiris-store"}} in c["envFrom"]


def test_store_secret_points_at_s3():
    secret = _docs(INFRA / "k8s" / "store-secret.yaml")[0]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "mmiris-store"
    env = secret["stringData"]
    assert env["MMIRIS_STORE"].startswith("s3://")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)


def test_prefect_compose_runs_server_and_a_worker_for_the_deployments_pool():
    compose = _docs(INFRA / "prefect" / "docker-compose.yml")[0]
    services = compose["services"]
    server = services["prefect-server"]
    assert server["command"][:3] == ["prefect", "server", "start"]
    assert server["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "postgres" in server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    worker = services["prefect-worker"]
    script = " ".join(worker["command"])
    pool = re.search(r"prefect worker start --pool (\S+)", script).group(1)
    assert pool in _pool_names()
    assert f"prefect work-pool create {pool} --type process" in script
    assert "prefect --no-prompt deploy --all" in script
    assert worker["environment"]["PREFECT_API_URL"].startswith("http://prefect-server:")
    assert worker["build"]["dockerfile"] == "infra/docker/Dockerfile"
    assert (INFRA / "prefect" / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()
    # every depends_on names a service
    for name, svc in services.items():
        assert set(svc.get("depends_on", {})) <= set(services), name
    dask_worker = services["dask-worker"]["command"]
    assert dask_worker[:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]


def _torchrun_args(argv: list[str]) -> dict[str, str]:
    out = {}
    for a in argv:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            out[k.replace("_", "-")] = v
    return out


def test_torchrun_job_rendezvous_is_consistent_and_uses_the_s3_store():
    docs = _docs(INFRA / "training" / "torchrun-job.yaml")
    svc = _by_kind(docs, "Service")[0]
    job = _by_kind(docs, "Job")[0]
    assert svc["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    c = pod["containers"][0]
    argv = _argv(c)
    assert argv[0] == "torchrun"
    opts = _torchrun_args(argv)
    assert opts["rdzv-backend"] == "c10d"
    lo, _, hi = opts["nnodes"].partition(":")  # elastic MIN:MAX; MAX = the Job's pods
    assert 1 <= int(lo) <= int(hi) == spec["completions"]
    host, port = opts["rdzv-endpoint"].rsplit(":", 1)
    assert host == f"{job['metadata']['name']}-0.{svc['metadata']['name']}"
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}
    module = argv[argv.index("-m") + 1]
    assert importlib.util.find_spec(module) is not None, f"{module} is not an importable module"
    assert {"secretRef": {"name": "mmiris-store"}} in c["envFrom"]
    # checkpoints go to the store (S3), not to a volume: no pod shares a disk with another
    assert "checkpoint-dir" not in opts and not _by_kind(docs, "PersistentVolumeClaim")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == int(opts["nproc-per-node"])


def test_multinode_flow_builds_the_job_of_the_infra_file():
    """flows/train_multinode.py creates, per run, the objects infra/training/torchrun-job.yaml
    describes: the same rendezvous wiring, elastic node counts, GPUs and trainer module."""
    from mmiris.flows.train_multinode import job_manifests, parse_nnodes

    docs = _docs(INFRA / "training" / "torchrun-job.yaml")
    want_job = _by_kind(docs, "Job")[0]
    want_c = want_job["spec"]["template"]["spec"]["containers"][0]
    svc, job = job_manifests(
        "mmiris-train-x1", ["--split", "s"], min_nodes=1, max_nodes=4, nproc_per_node=1, image="img", namespace="ns"
    )
    assert svc["spec"]["selector"] == {"job-name": "mmiris-train-x1"} and svc["spec"]["clusterIP"] == "None"
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"]
    c = pod["containers"][0]
    got, want = _torchrun_args(_argv(c)), _torchrun_args(_argv(want_c))
    assert got["rdzv-endpoint"] == f"mmiris-train-x1-0.mmiris-train-x1:{svc['spec']['ports'][0]['port']}"
    assert {k: got[k] for k in ("nnodes", "nproc-per-node", "rdzv-backend", "max-restarts")} == {
        k: want[k] for k in ("nnodes", "nproc-per-node", "rdzv-backend", "max-restarts")
    }
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == want_job["spec"]["completions"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == want_c["resources"]["limits"]["nvidia.com/gpu"]
    assert c["envFrom"] == want_c["envFrom"] and _argv(c)[_argv(c).index("-m") + 1] == "mmiris.train.launch"
    assert parse_nnodes("2:8") == (2, 8) and parse_nnodes(3) == (3, 3)


def test_multinode_flow_applies_the_job_and_waits_with_kubectl(tmp_path, monkeypatch):
    """A fake kubectl on PATH: the flow's task applies the manifests and polls the Job until
    it reports Complete."""
    import json
    import logging
    import os

    from mmiris.flows.train_multinode import apply_and_wait, job_manifests

    log, applied = tmp_path / "kubectl.log", tmp_path / "applied.json"
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$@" >> {log}\n'
        f'if [ "$1" = apply ]; then cat > {applied}; exit 0; fi\n'
        """echo '{"status": {"conditions": [{"type": "Complete", "status": "True"}]}}'\n"""
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    manifests = job_manifests(
        "mmiris-train-y", ["--split", "s"], min_nodes=1, max_nodes=3, nproc_per_node=2, image="i", namespace="ns"
    )
    apply_and_wait(manifests, "ns", 0.01, 30, logging.getLogger("test"))
    calls = log.read_text().splitlines()
    assert calls == ["apply -f -", "get job mmiris-train-y -n ns -o json"]
    job = json.loads(applied.read_text().split("\n---\n")[1])
    assert job["kind"] == "Job" and job["spec"]["completions"] == 3
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--nnodes=1:3" in args and "--nproc-per-node=2" in args


def test_trainer_module_accepts_the_options_the_launchers_pass():
    job = _by_kind(_docs(INFRA / "training" / "torchrun-job.yaml"), "Job")[0]
    argv = _argv(job["spec"]["template"]["spec"]["containers"][0])
    module = argv[argv.index("-m") + 1]
    res = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr
    for a in argv[argv.index("-m") + 2 :]:
        opt = a.split("=", 1)[0]
        assert opt in res.stdout, f"{module} --help does not list {opt}"
    slurm = (INFRA / "training" / "torchrun.slurm").read_text()
    for opt in re.findall(r"^\s+(--[a-z-]+)=", slurm.split("-m mmiris.train.launch", 1)[1], re.M):
        assert opt in res.stdout, f"{module} --help does not list {opt} (slurm script)"


def test_slurm_script_is_valid_bash_with_c10d_rendezvous():
    path = INFRA / "training" / "torchrun.slurm"
    assert shutil.which("bash")
    res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = path.read_text()
    assert re.search(r"^#SBATCH --nodes=\d+", text, re.M)
    assert re.search(r"^#SBATCH --ntasks-per-node=1$", text, re.M)  # one torchrun per node
    for opt in (
        '--nnodes="${MIN_NODES:-1}:$SLURM_NNODES"',
        "--rdzv-backend=c10d",
        '--rdzv-endpoint="$HEAD_NODE:',
        "--rdzv-id=",
        "-m mmiris.train.launch",
    ):
        assert opt in text, opt
    assert "MMIRIS_STORE:?" in text  # refuses to start without the shared store


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_builds_cpu_and_cuda_variants_and_installs_the_project_like_the_readme():
    ins = _dockerfile_instructions(INFRA / "docker" / "Dockerfile")
    ops = [op for op, _ in ins]
    assert ops.count("FROM") == 1 and "ENTRYPOINT" in ops
    args = {rest.split("=")[0] for op, rest in ins if op == "ARG"}
    assert "VARIANT" in args
    run = " ".join(rest for op, rest in ins if op == "RUN")
    assert re.search(r"\bcpu\)", run) and re.search(r"\bcuda\)", run)
    # torch pinned exactly as pyproject pins it
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in [d for d in deps if d.startswith(("torch==", "torchvision=="))]:
        assert run.count(pin) == 2, f"{pin} not pinned in both variants"
    # the README's setup (scripts/setup): a virtualenv, then an editable install of the project
    assert "scripts/setup" in (ROOT / "README.md").read_text()
    setup = (ROOT / "scripts" / "setup").read_text()
    assert re.search(r'-m venv "\$VENV"', setup) and re.search(r'"\$VENV/bin/pip" install -e', setup)
    assert "python3 -m venv .venv" in run and ".venv/bin/pip install -e" in run
    # every COPY source exists, and every package pyproject installs is copied
    copied = set()
    for op, rest in ins:
        if op == "COPY":
            parts = shlex.split(rest)
            for src in parts[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: no such path"
                copied.add(src.rstrip("/"))
    pkgs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pkg in pkgs:
        assert pkg.split(".")[0].rstrip("*") in copied, f"package {pkg} is not copied into the image"
    # mmiris/pipelines, mmiris/flows and mmiris/schemas link to the top-level folders: copy those too
    for link in sorted(p for p in (ROOT / "mmiris").iterdir() if p.is_symlink()):
        target = (ROOT / "mmiris" / link.readlink()).resolve().relative_to(ROOT).as_posix()
        assert target in copied, f"mmiris/{link.name} links to {target}, which is not copied into the image"
    assert "schemas" in copied and "prefect.yaml" in copied
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    default_extra = next(rest.split("=", 1)[1] for op, rest in ins if op == "ARG" and rest.startswith("EXTRAS="))
    assert default_extra in extras  # the s3 extra: the image can use an S3 store


@pytest.mark.parametrize("path", ["dask/dask-cluster.yaml", "training/torchrun-job.yaml", "prefect/docker-compose.yml"])
def test_commands_the_configs_run_exist_in_the_environment(path):
    docs = _docs(INFRA / path)
    argvs = []
    for d in docs:
        if d.get("kind") in ("Deployment", "Job"):
            argvs += [_argv(c) for c in _containers(d)]
        for svc in d.get("services", {}).values():
            cmd = svc.get("command")
            if isinstance(cmd, list):
                argvs.append(cmd if cmd[0] != "bash" else shlex.split(cmd[-1].replace("&&", " ")))
    assert argvs
    for argv in argvs:
        exe = argv[0]
        assert (BIN / exe).exists() or shutil.which(exe), f"{path}: {exe} is not installed"
        if exe == "prefect" and "worker" in argv:
            assert argv[argv.index("worker") + 1] == "start"


def test_kubernetes_work_pool_template_and_deployments_agree():
    """infra/prefect: the Kubernetes pool's base job template declares every job variable the
    deployments set and uses each in the Job manifest; extract and train ask for GPUs; every
    entry point exists with the parameters given; the pod gets the store Secret."""
    import inspect
    import json

    template = json.loads((INFRA / "prefect" / "k8s-base-job-template.json").read_text())
    declared = template["variables"]["properties"]
    text = json.dumps(template["job_configuration"])
    for name in declared:
        assert "{{ " + name + " }}" in text, f"variable {name} is declared but not used"
    manifest = template["job_configuration"]["job_manifest"]
    c = manifest["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "mmiris-store"}} in c["envFrom"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu }}"
    sa = manifest["spec"]["template"]["spec"]["serviceAccountName"]
    assert sa == "{{ service_account_name }}"
    rbac = _docs(INFRA / "prefect" / "k8s-rbac.yaml")
    assert declared["service_account_name"]["default"] == _by_kind(rbac, "ServiceAccount")[0]["metadata"]["name"]
    verbs = {r: set(rule["verbs"]) for rule in _by_kind(rbac, "Role")[0]["rules"] for r in rule["resources"]}
    assert {"create", "get"} <= verbs["jobs"] and "create" in verbs["services"]

    conf = yaml.safe_load((INFRA / "prefect" / "prefect-k8s.yaml").read_text())
    assert conf["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/mmiris"
    docker = (INFRA / "docker" / "Dockerfile").read_text()
    assert "WORKDIR /opt/mmiris" in docker and "kubectl" in docker
    gpus = {}
    for d in conf["deployments"]:
        pool = d["work_pool"]
        assert pool["name"] == conf["name"] == "mmiris-k8s"
        assert set(pool["job_variables"]) <= set(declared), d["name"]
        path, func = d["entrypoint"].split(":")
        spec = importlib.util.spec_from_file_location(f"_k8s_{func}", ROOT / path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        params = inspect.signature(getattr(mod, func).fn).parameters
        assert set(d.get("parameters", {})) <= set(params), f"{d['entrypoint']}: unknown parameters"
        gpus[func] = pool["job_variables"]["gpu"]
    assert gpus["extract_image_features_flow"] >= 1 and gpus["extract_text_features_flow"] >= 1
    assert gpus["train_flow"] >= 1
    assert gpus["new_items_pipeline_flow"] >= 1  # the new items' features are extracted in the pod
    assert gpus["train_multinode_flow"] == 0  # the launcher pod; the Job's pods hold the GPUs
