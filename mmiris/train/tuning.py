"""The Optuna side of a hyperparameter study (the stage is ``mmiris.pipelines.tune``).

``Objective`` runs one trial: the fixed configs with the trial's sampled fields, a fresh
model, ``mmiris.train.trainer.train`` in memory, scored on the validation items (best HR@10
over its epochs), reporting each epoch to the pruner. ``ProgressLog`` logs a line per
finished trial. ``recover_killed_trials`` marks trials left ``running`` by a dead process as
failed and queues their parameters again. ``study_summary`` is the artifact's table and stats.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.errors import MmirisError
from mmiris.models.build import build_model
from mmiris.train.config import TrainConfig
from mmiris.train.trainer import train

log = logging.getLogger("mmiris.tune")

WORKER_ATTR = "worker"  # host:pid:start of the process running a trial (to spot killed ones)
ORPHAN_S = 30.0  # a running trial that names no worker after this long was left by a killed process


class Objective:
    """One trial: the configs with its sampled fields, a fresh model, ``train`` in memory."""

    def __init__(self, model_name, params, base_mc, base_tc, split, feats, init_models, dist):
        self.model_name, self.params, self.base_mc, self.base_tc = model_name, params, base_mc, base_tc
        self.split, self.feats, self.init_models, self.dist = split, feats, init_models, dist

    def __call__(self, trial) -> float:
        import optuna

        trial.set_user_attr(WORKER_ATTR, _worker_id())
        values = {p.name: p.suggest(trial) for p in self.params}
        mc = {**self.base_mc, **{p.name: values[p.name] for p in self.params if p.target == "model"}}
        tc = TrainConfig.from_dict(
            {**self.base_tc.to_dict(), **{p.name: values[p.name] for p in self.params if p.target == "train"}}
        )
        torch.manual_seed(tc.seed)  # every trial starts from the same initial draw as `mmiris train`
        split = self.split
        model = build_model(self.model_name, mc, split.n_users, split.n_items, split.history(), self.feats)
        if self.init_models:
            try:
                model.init_from(*self.init_models)  # type: ignore[operator]  # checked in tune_model
            except ValueError as exc:
                raise MmirisError(f"init_from: {exc}") from None
        best = {"hr10": -math.inf}

        def on_validation(epoch: int, m: dict, step: int) -> None:
            # the pruner compares trials at equal report steps: epochs, or optimiser steps where
            # the trials validate inside epochs (eval_steps)
            trial.report(float(m["hr10"]), step if tc.eval_steps else epoch)
            if m["hr10"] > best["hr10"]:
                best.update(hr10=float(m["hr10"]), ndcg10=float(m.get("ndcg10", math.nan)), epoch=epoch)
                trial.set_user_attr("best", dict(best))
            trial.set_user_attr("epochs", epoch)
            if model.trainable and trial.should_prune():  # a closed-form fit has nothing left to stop
                raise optuna.TrialPruned(
                    f"validation HR@10 {m['hr10']:.4f} at epoch {epoch} is below the median of earlier trials"
                )

        res = train(model, self.split, tc, self.dist, checkpoint_dir=None, on_validation=on_validation)
        return float(res.best_metrics["hr10"])


class ProgressLog:
    """A log line per finished trial: its value, the best so far, trials per minute, ETA."""

    def __init__(self, todo: int, n_trials: int, finished_before: int):
        self.todo, self.n_trials, self.before = todo, n_trials, finished_before
        self.done, self.t0 = 0, time.perf_counter()

    def __call__(self, study, trial) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed * 60 if elapsed > 0 else 0.0
        eta = (self.todo - self.done) / (rate / 60) if rate > 0 else math.inf
        best = best_trial(study)
        got = trial.user_attrs.get("best", {}).get("hr10")
        secs = trial.duration.total_seconds() if trial.duration else math.nan
        log.info(
            "trial %d %s: HR@10 %s after %s epoch(s) in %.1fs (%s); best %s; %d/%d this run, %.2f trials/min, ETA %s",
            trial.number,
            trial.state.name.lower(),
            "–" if got is None else f"{got:.4f}",
            trial.user_attrs.get("epochs", 0),
            secs,
            ", ".join(f"{k}={fmt(v)}" for k, v in trial.params.items()),
            "–" if best is None else f"{best.value:.4f} (trial {best.number})",
            self.done,
            self.todo,
            rate,
            "–" if math.isinf(eta) else f"{eta:.0f}s",
        )


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def trials_table(study) -> pa.Table:
    """The ``trials`` table of a tune artifact (schemas/tune.json): one row per started trial."""
    import optuna

    S = optuna.trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == S.WAITING:
            continue  # enqueued, never started
        best = t.user_attrs.get("best") or {}
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": best.get("hr10"),
                "ndcg10": None if best.get("ndcg10") is None or math.isnan(best["ndcg10"]) else best["ndcg10"],
                "best_epoch": best.get("epoch"),
                "epochs": int(t.user_attrs.get("epochs", 0)),
                "params": json.dumps(t.params, sort_keys=True),
                "seconds": t.duration.total_seconds() if t.duration else None,
            }
        )
    schema = pa.schema(
        [
            ("number", pa.int64()),
            ("state", pa.string()),
            ("value", pa.float64()),
            ("ndcg10", pa.float64()),
            ("best_epoch", pa.int32()),
            ("epochs", pa.int32()),
            ("params", pa.string()),
            ("seconds", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def best_params(store: ArtifactStore, tune_ref: ArtifactRef | str, model_name: str | None = None) -> tuple[dict, dict]:
    """(model config fields, training config fields) of a tune artifact's best trial."""
    m = store.manifest(store.resolve(tune_ref))
    if m.kind != "tune":
        raise MmirisError(f"artifact {m.ref} is a {m.kind!r} artifact, expected a tune artifact")
    if model_name is not None and m.params.get("model") != model_name:
        raise MmirisError(f"{m.ref} tuned model {m.params.get('model')!r}, not {model_name!r}")
    if "best_model_config" not in m.stats:
        raise MmirisError(f"{m.ref} has no complete trial, so no best parameters")
    return dict(m.stats["best_model_config"]), dict(m.stats["best_train_config"])


def study_summary(study, params: list) -> tuple[pa.Table, dict]:
    """The ``trials`` table of a tune artifact and its stats: trials by state, and the best
    trial with its model and training config fields (what ``--params-from`` applies)."""
    table = trials_table(study)
    rows = table.to_pylist()
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")}
    best = best_trial(study)
    stats = {f"n_{s}": n for s, n in counts.items()}
    if best is not None:
        stats.update(
            best_trial=best.number,
            best_value=best.value,
            best_epoch=(best.user_attrs.get("best") or {}).get("epoch"),
            best_params=best.params,
            best_model_config={p.name: best.params[p.name] for p in params if p.target == "model"},
            best_train_config={p.name: best.params[p.name] for p in params if p.target == "train"},
        )
        log.info(
            "best of %d finished trials: trial %d, validation HR@10 %.4f, %s",
            counts["complete"] + counts["pruned"],
            best.number,
            best.value,
            ", ".join(f"{k}={fmt(v)}" for k, v in best.params.items()),
        )
    return table, stats


def recover_killed_trials(study, fail_running: bool) -> None:
    """Mark trials left ``running`` by a dead process (this machine) or, with ``fail_running``,
    all of them, as failed, and enqueue their parameters again (once)."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR, "")
        # No worker yet: its process died between creating the trial and starting it (a live
        # one records itself within milliseconds).
        orphan = (
            not worker
            and t.datetime_start is not None
            and (datetime.now() - t.datetime_start).total_seconds() > ORPHAN_S
        )
        if not (fail_running or orphan or _dead_here(worker)):
            log.warning(
                "trial %d is running on %s; leaving it (pass --fail-running if that run died)",
                t.number,
                worker or "an unknown worker",
            )
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        retry = bool(t.params) and "retry_of" not in t.user_attrs  # once: they may be what kills it (OOM)
        if retry:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        log.warning(
            "trial %d was left running by %s, which is gone: marked fail; %s",
            t.number,
            worker or "an unknown worker",
            "its parameters are tried again"
            if retry
            else "not retried (it was already a retry)"
            if t.params
            else "it had no parameters yet",
        )


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _dead_here(worker: str) -> bool:
    host, _, rest = worker.partition(":")
    pid_s, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    pid = int(pid_s)
    if pid == os.getpid():
        return True  # this process is starting the study: no trial of it can be running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        text = stat.read_text().rsplit(")", 1)[1].split()
        return text[0] == "Z" or (bool(started) and text[19] != started)  # zombie, or pid reused
    return False


def safe_url(url: str) -> str:
    """The storage URL without a password (it goes to logs and the manifest)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show it as given
        return url
