"""The training loop: sampled instances → loss → Adam, validation HR@10 every epoch (and every
``eval_steps`` steps inside one, if asked; of a moving average of the parameters with ``ema``),
early stopping, atomic checkpoints and exact resume. Runs alone or as one rank of a DDP group.

Equal results on 1 or N ranks: every rank builds the same global batches (sampler.py) and
takes its slice; its loss is weighted by ``world_size · n_local / n_global`` so that DDP's
gradient average equals the single-process gradient of the whole global batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmiris.data.split import SplitData
from mmiris.errors import MmirisError
from mmiris.eval.metrics import metrics_from_sums
from mmiris.eval.protocols import sampled_ranks
from mmiris.models import get_model_class, model_names
from mmiris.models.base import Recommender, targets_as_new
from mmiris.progress import Progress
from mmiris.train import distributed as D
from mmiris.train.checkpoint import load_checkpoint, save_checkpoint
from mmiris.train.config import TrainConfig, autocast, resolve_config
from mmiris.train.sampler import TrainSampler

log = logging.getLogger("mmiris.train")


@dataclass
class TrainResult:
    state_dict: dict  # the best model's parameters (CPU)
    log: list[dict]  # training_log rows
    best_epoch: int  # the epoch the best validation ran in (its last step, unless eval_steps)
    best_metrics: dict
    epochs_run: int
    epoch_seconds: list[float] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from: dict | None = None  # {"epoch", "batch"} when a checkpoint was continued
    best_step: int = 0  # optimiser steps before the best validation


@dataclass
class TrainState:
    """Where a run stands: what a checkpoint holds besides the tensors' owners (model,
    optimiser, RNG), so a killed run continues exactly here. Saved as a plain dict of these
    fields (``torch.load(weights_only=True)`` reads no classes)."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # next batch of the current epoch
    step: int = 0  # optimiser steps so far
    best_hr10: float = -math.inf
    best_epoch: int = 0
    best_step: int = 0
    best_metrics: dict = field(default_factory=dict)
    bad: int = 0  # validations in a row without a better HR@10 (early stopping)
    stopped: bool = False
    log: list[dict] = field(default_factory=list)  # training_log rows so far
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_elapsed: float = 0.0  # seconds of the current epoch before a mid-epoch checkpoint
    seconds: float = 0.0  # wall seconds of the whole run at the last checkpoint
    best_state: dict | None = None  # the best validation's parameters (CPU)
    ema: dict | None = None  # ParamAverage.state() where cfg.ema is set

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: tensors are not copied

    @classmethod
    def from_dict(cls, d: dict, where: str | Path | None) -> TrainState:
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) != known:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise MmirisError(
                f"checkpoint in {where} holds a training state with fields {got}, expected {sorted(known)} "
                "(written by another mmiris version); delete it to start over"
            )
        return cls(**d)


class ParamAverage:
    """An exponential moving average of ``params`` (Polyak averaging): after each step
    avg ← d·avg + (1 − d)·p with d = min(decay, (1 + t) / (10 + t)) at update t, so the
    starting values fade out within the first tens of steps (as timm's ModelEmaV2 warm-up).
    ``swapped()`` puts the average into the parameters for a validation and restores them."""

    def __init__(self, params: list[nn.Parameter], decay: float):
        self.params, self.decay, self.updates = params, decay, 0
        self.avg = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for a, p in zip(self.avg, self.params):
            a.lerp_(p.detach(), 1.0 - d)

    @contextmanager
    def swapped(self):
        with torch.no_grad():
            own = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.avg):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(self.params, own):
                    p.copy_(o)

    def state(self) -> dict:
        return {"updates": self.updates, "avg": [a.detach().cpu().clone() for a in self.avg]}

    def load(self, state: dict) -> None:
        self.updates = int(state["updates"])
        with torch.no_grad():
            for a, v in zip(self.avg, state["avg"]):
                a.copy_(v)


class LossModule(nn.Module):
    """What DDP wraps: forward = weighted loss of one shard + the L2 terms of eq. 12."""

    def __init__(self, model: Recommender, loss: str):
        super().__init__()
        from mmiris.models import losses

        self.model, self.loss = model, loss
        self.fn = {"log": losses.pointwise_log_loss, "bpr": losses.bpr_loss, "squared": losses.squared_loss}[loss]

    def forward(self, users, items, labels, mask, group, weight: float) -> torch.Tensor:
        logits = self.model.scores(users, items)
        if self.loss == "bpr":
            data = self.fn(logits, labels, mask, group)
        else:
            data = self.fn(logits, labels, mask)
        return weight * data + self.model.regularization().to(logits.device)


def validate(model: Recommender, split: SplitData, dist: D.Dist, cfg: TrainConfig) -> dict:
    """Sampled-protocol metrics on the validation items, users sharded over ranks."""
    if not len(split.valid_users):
        return {}
    lengths = model.train_history.lengths(split.valid_users)
    idx = np.argsort(lengths, kind="stable")[dist.rank :: dist.world_size]  # balanced shards
    # select_on "cold": the candidates are scored as items the model never saw
    with targets_as_new(model) if cfg.select_on == "cold" else nullcontext():
        res = sampled_ranks(
            model,
            split.valid_users[idx],
            split.valid_items[idx],
            split.valid_negatives[idx],
            device=dist.device,
            pair_budget=cfg.eval_batch_pairs,
        )
    return metrics_from_sums(D.all_reduce_sum(res.sums(), dist, "validation all-reduce"))


def _headline(m: dict) -> str:
    """A validation's @10 and @20 metrics for a log line."""
    return " ".join(f"{k} {v:.4f}" for k, v in m.items() if k.endswith(("10", "20")))


def _rows(epoch: int, metrics: dict, step: int, seconds: float) -> list[dict]:
    return [
        {"epoch": epoch, "step": step, "loss": None, "metric": k, "value": float(v), "seconds": seconds}
        for k, v in metrics.items()
    ]


def train(
    model: Recommender,
    split: SplitData,
    cfg: TrainConfig,
    dist: D.Dist | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_validation: Callable[[int, dict, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` (or ``fit`` it, if closed-form) and return the best state and the log.

    ``on_validation(epoch, metrics, step)`` is called after each validation (and after the
    checkpoint that follows it), with the epoch it ran in and the optimiser steps so far; an
    exception it raises (e.g. ``optuna.TrialPruned``) ends training."""
    dist = dist or D.Dist()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # "auto" becomes the concrete dtype (it is part of the key: checkpoints compare it)
    cfg = resolve_config(cfg, type(model), dist.device)
    if cfg.select_on == "cold" and not type(model).target_rows:
        raise MmirisError(
            f"train config: select_on 'cold' scores the validation items as new items, but {model.name} has no "
            f"content path for items without interactions; models that have one: "
            + ", ".join(n for n in model_names() if get_model_class(n).target_rows)
        )
    model.to(dist.device)
    t_start = time.perf_counter()

    if not model.trainable:  # closed form: fit once, validate once, same artifacts
        model.fit(split)
        secs = time.perf_counter() - t_start
        m = validate(model, split, dist, cfg)
        if m and on_validation is not None:
            on_validation(1, m, 0)
        rows = _rows(1, {**m, "epoch_seconds": secs}, 0, secs)
        return TrainResult({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, rows, 1, m, 1, [secs])

    # the model's parameter groups, each at the run's lr times its lr_scale
    groups = [{"params": g["params"], "lr": cfg.lr * float(g.get("lr_scale", 1.0))} for g in model.optimizer_groups()]
    grouped = [id(p) for g in groups for p in g["params"]]
    if sorted(grouped) != sorted(id(p) for p in model.parameters()):
        raise MmirisError(
            f"{model.name}.optimizer_groups() must hold every parameter exactly once: it holds "
            f"{len(set(grouped))} distinct of {len(grouped)} entries, the model has {len(list(model.parameters()))}"
        )
    opt = torch.optim.Adam(groups, lr=cfg.lr, foreach=True)  # foreach: one kernel per op for all parameters
    sampler = TrainSampler(
        model.train_history,
        cfg.negatives,
        cfg.batch_size,
        cfg.seed,
        dist.rank,
        dist.world_size,
        negatives_from=cfg.negatives_from,
        by_user=cfg.batch_order == "user",
        bucket=bool(getattr(model, "needs_history", False)),
    )
    avg = ParamAverage([p for p in model.parameters() if p.requires_grad], cfg.ema) if cfg.ema else None
    averaged = avg.swapped if avg is not None else nullcontext  # what validations and the result read
    st = TrainState()
    resumed = None
    ckpt = None
    if resume and checkpoint_dir is not None:
        ckpt = D.broadcast_object(
            load_checkpoint(checkpoint_dir) if dist.is_main else None, dist, "checkpoint broadcast"
        )
    if ckpt is not None:
        if ckpt["train_config"] != cfg.key_params() or ckpt["model"] != model.name:
            raise MmirisError(
                f"checkpoint in {checkpoint_dir} is for {ckpt['model']} with "
                f"{ckpt['train_config']}, not {model.name} with {cfg.key_params()}"
            )
        model.load_state_dict(ckpt["model_state"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if torch.cuda.is_available() and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        st = TrainState.from_dict(ckpt["state"], checkpoint_dir)
        if avg is not None and st.ema is not None:
            avg.load(st.ema)
        resumed = {"epoch": st.epoch, "batch": st.batch}
        log.info("resuming from %s: epoch %d, batch %d, step %d", checkpoint_dir, st.epoch + 1, st.batch, st.step)
    step_module = D.wrap(LossModule(model, cfg.loss), dist)
    t_offset = st.seconds  # wall seconds already spent before a resume

    def now() -> float:
        return t_offset + time.perf_counter() - t_start

    def checkpoint() -> None:
        st.seconds = now()
        if checkpoint_dir is not None and dist.is_main:
            st.ema = avg.state() if avg is not None else None
            save_checkpoint(
                checkpoint_dir,
                {
                    "model": model.name,
                    "train_config": cfg.key_params(),
                    "model_state": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    },
                    "state": st.to_dict(),
                },
            )

    def flush(losses: list, times: list, epoch: int, first_step: int) -> None:
        """All-reduce this stretch's step losses (one collective) into log rows."""
        if not losses:
            return
        vals = D.all_reduce_sum(torch.stack(losses).double().cpu(), dist, "loss all-reduce") / dist.world_size
        st.log.extend(
            {"epoch": epoch, "step": first_step + i + 1, "loss": float(v), "metric": None, "value": None, "seconds": t}
            for i, (v, t) in enumerate(zip(vals.tolist(), times))
        )
        losses.clear()
        times.clear()

    def consider(m: dict, epoch: int) -> None:
        """Keep the model if validation ``m`` is the best so far; else count towards stopping."""
        if m["hr10"] > st.best_hr10:
            st.best_hr10, st.best_epoch, st.best_step, st.best_metrics, st.bad = m["hr10"], epoch, st.step, m, 0
            with averaged():  # the state that was validated
                st.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return
        st.bad += 1
        if st.bad >= cfg.patience:
            st.stopped = True
            log.info(
                "early stopping: validation HR@10 has not improved for %d validations; best %.4f at epoch %d, step %d",
                cfg.patience,
                st.best_hr10,
                st.best_epoch,
                st.best_step,
            )

    while st.epoch < cfg.epochs and not st.stopped:
        e = st.epoch
        plan = sampler.plan(e)
        n_b = plan.n_batches
        per_inst = 1 + cfg.negatives
        done_inst = int(plan.bounds[st.batch]) * per_inst
        t_epoch = time.perf_counter() - st.epoch_elapsed
        losses: list[torch.Tensor] = []
        times: list[float] = []
        first_step = st.step
        model.train()
        with Progress(
            int(plan.bounds[-1]) * per_inst - done_inst,
            f"{model.name} epoch {e + 1}/{cfg.epochs}",
            log,
            unit="instances",
        ) as prog:
            for b, shard in sampler.shards(e, st.batch):
                bt = shard.batch.to(dist.device)
                weight = dist.world_size * shard.n_local / shard.n_global
                with autocast(cfg.precision, dist.device):  # bf16 matmuls; backward follows the forward's dtypes
                    loss = step_module(bt.users, bt.items, bt.labels, bt.mask, bt.group, weight)
                opt.zero_grad(set_to_none=True)
                # Only a group's backward talks to peers (DDP's gradient all-reduce); alone, an
                # error in it is an ordinary one (a bug, out of memory) and keeps its traceback.
                D.collective(loss.backward, dist, f"backward of epoch {e + 1} batch {b}")
                opt.step()
                if avg is not None:
                    avg.update()
                losses.append(loss.detach())
                times.append(now())
                st.step += 1
                st.batch = b + 1
                prog.update(shard.n_global * per_inst)
                mid = b + 1 < n_b  # the epoch's last step has its own validation and checkpoint
                val_now = bool(cfg.eval_steps) and st.step % cfg.eval_steps == 0 and mid
                if not (val_now or (cfg.checkpoint_steps and st.step % cfg.checkpoint_steps == 0 and mid)):
                    continue
                flush(losses, times, e + 1, first_step)
                first_step = st.step
                m = {}
                if val_now:
                    t_val = time.perf_counter()
                    with averaged():
                        m = validate(model, split, dist, cfg)
                    model.train()
                    t_epoch += time.perf_counter() - t_val  # epoch seconds are training seconds
                    if m:
                        st.log.extend(_rows(e + 1, m, st.step, now()))
                        log.info(
                            "epoch %d step %d: valid %s",
                            e + 1,
                            st.step,
                            _headline(m),
                        )
                        consider(m, e + 1)
                st.epoch_elapsed = time.perf_counter() - t_epoch
                checkpoint()
                if m and on_validation is not None:
                    on_validation(e + 1, m, st.step)
                if st.stopped:
                    break
        flush(losses, times, e + 1, first_step)
        secs = time.perf_counter() - t_epoch
        st.epoch_seconds.append(secs)
        epoch_loss = [r["loss"] for r in st.log if r["epoch"] == e + 1 and r["loss"] is not None]
        m = {}
        if not st.stopped and ((e + 1) % cfg.eval_every == 0 or e + 1 == cfg.epochs):
            with averaged():
                m = validate(model, split, dist, cfg)
        st.log.extend(
            _rows(
                e + 1,
                {**m, "train_loss": float(np.mean(epoch_loss)) if epoch_loss else math.nan, "epoch_seconds": secs},
                st.step,
                now(),
            )
        )
        if m:
            log.info(
                "epoch %d: loss %.4f, valid %s (%.1fs)",
                e + 1,
                float(np.mean(epoch_loss or [math.nan])),
                _headline(m),
                secs,
            )
            consider(m, e + 1)
        st.epoch, st.batch, st.epoch_elapsed = e + 1, 0, 0.0
        checkpoint()
        if m and on_validation is not None:
            on_validation(e + 1, m, st.step)

    best = st.best_state
    if best is None:  # no validation data: the last epoch is the model (its average, with ema)
        with averaged():
            best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        st.best_epoch, st.best_step = st.epoch, st.step
    return TrainResult(
        best, st.log, st.best_epoch, st.best_metrics, st.epoch, st.epoch_seconds, st.stopped, resumed, st.best_step
    )
