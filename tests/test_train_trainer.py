"""The trainer, the train/evaluate stages and the model loader, in one process."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from mmiris.artifacts import Output
from mmiris.data.split import load_split
from mmiris.models import MODELS
from mmiris.models.base import Recommender
from mmiris.train.config import TrainConfig


def publish_tiny_split(store, n_users=60, n_items=30, n_neg=20, seed=0):
    """Users in 3 taste groups of 10 items each: learnable, and fast to train."""
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for u in range(n_users):
        own = np.arange(10) + 10 * (u % 3)
        liked = rng.choice(own, size=8, replace=False).tolist()
        others = rng.choice(np.setdiff1d(np.arange(n_items), own), size=2, replace=False).tolist()
        items = liked + others
        seen = set(items)

        def negs(seen=seen):
            return rng.choice(sorted(set(range(n_items)) - seen), size=n_neg, replace=False).tolist()

        test.append((u, items[0], negs()))
        valid.append((u, items[1], negs()))
        train += [(u, i) for i in items[2:]]
    tabs = {
        "train": pa.table({"user_id": [p[0] for p in train], "item_id": [p[1] for p in train]}),
        "valid": pa.table(
            {"user_id": [r[0] for r in valid], "item_id": [r[1] for r in valid], "negatives": [r[2] for r in valid]}
        ),
        "test": pa.table(
            {"user_id": [r[0] for r in test], "item_id": [r[1] for r in test], "negatives": [r[2] for r in test]}
        ),
    }
    return store.publish(
        "split", "split", Output(tables=tabs, stats={"n_users": n_users, "n_items": n_items}), params={"tiny": seed}
    )


class TinyMF(Recommender):
    """A test-only MF so trainer tests do not depend on the models package."""

    name = "tiny_mf"

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.P = nn.Parameter(torch.randn(n_users, config.emb) * 0.1)
        self.Q = nn.Parameter(torch.randn(n_items, config.emb) * 0.1)

    def scores(self, users, items):
        return (self.P[users][:, None, :] * self.Q[items]).sum(-1)

    def regularization(self):
        return 1e-4 * (self.P.square().sum() + self.Q.square().sum())

    @torch.no_grad()
    def init_from(self, other):
        self.P.copy_(other.P)
        self.Q.copy_(other.Q)


class TinyPop(Recommender):
    """A closed-form test model: item popularity from fit()."""

    name = "tiny_pop"
    trainable = False

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.register_buffer("pop", torch.zeros(n_items))

    def fit(self, split):
        self.pop = torch.from_numpy(np.bincount(split.train_items, minlength=self.n_items).astype(np.float32))

    def scores(self, users, items):
        return self.pop[items]


MODELS.setdefault("tiny_mf", TinyMF)
MODELS.setdefault("tiny_pop", TinyPop)


def _cfg(**kw):
    base = dict(epochs=6, batch_size=64, lr=0.05, patience=10, seed=3, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_train_publishes_best_model_log_and_loader_roundtrip(store):
    from mmiris.models.build import load_model
    from mmiris.pipelines.evaluate import evaluate_model, read_metrics
    from mmiris.pipelines.train import train_model

    split = publish_tiny_split(store)
    ref = train_model(store, split, "tiny_mf", model_config={"emb": 8}, train_config=_cfg())
    m = store.manifest(ref)
    assert ref.name == "model-tiny_mf" and m.kind == "model"
    assert m.params["model_config"] == {"emb": 8} and m.params["train_config"]["lr"] == 0.05
    assert "threads" not in m.params["train_config"]  # how to run is not part of the version key
    # "auto" resolved into the key: tiny_mf reads no histories, so its batches mix users
    assert m.params["train_config"]["batch_order"] == "shuffled"
    log = store.read_table(ref, "training_log").to_pylist()
    steps = [r for r in log if r["loss"] is not None]
    sampler_batches = math.ceil(len(load_split(store, split).train_items) / (64 // 5))
    assert len(steps) == 6 * sampler_batches and [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    hr = {r["epoch"]: r["value"] for r in log if r["metric"] == "hr10"}
    assert sorted(hr) == [1, 2, 3, 4, 5, 6]
    assert m.stats["best_epoch"] == max(hr, key=lambda e: (hr[e], -e))
    assert hr[m.stats["best_epoch"]] > 0.6  # learnable data: far above random (10/21)
    first = np.mean([r["loss"] for r in steps[:sampler_batches]])
    last = np.mean([r["loss"] for r in steps[-sampler_batches:]])
    assert last < first

    model = load_model(store, ref)  # the published model is the best epoch's
    ev = evaluate_model(store, ref, protocols=("sampled",), part="valid")
    assert read_metrics(store, ev)["sampled"]["hr10"] == pytest.approx(m.stats["valid_hr10"])
    assert isinstance(model, TinyMF) and not model.training

    # same inputs and configs: found, not retrained
    again = train_model(store, split, "tiny_mf", model_config={"emb": 8}, train_config=_cfg(threads=2))
    assert again == ref and len(store.versions("model-tiny_mf")) == 1


def test_early_stopping_stops_and_keeps_the_best_epoch(store):
    from mmiris.pipelines.train import train_model

    split = publish_tiny_split(store)
    ref = train_model(
        store, split, "tiny_mf", model_config={"emb": 8}, train_config=_cfg(epochs=40, patience=2, lr=0.3)
    )
    m = store.manifest(ref)
    log = store.read_table(ref, "training_log").to_pylist()
    hr = {r["epoch"]: r["value"] for r in log if r["metric"] == "hr10"}
    assert m.stats["stopped_early"] is True and m.stats["epochs_run"] < 40
    last = max(hr)
    best = m.stats["best_epoch"]
    assert last - best == 2 and all(hr[e] <= hr[best] for e in hr)
    assert max(hr[e] for e in hr if e > best) <= hr[best]


def test_closed_form_model_goes_through_the_same_stage(store):
    from mmiris.pipelines.evaluate import evaluate_model, read_metrics, read_ranks
    from mmiris.pipelines.train import train_model

    split = publish_tiny_split(store)
    ref = train_model(store, split, "tiny_pop", train_config=_cfg())
    m = store.manifest(ref)
    assert m.stats["epochs_run"] == 1 and m.stats["best_epoch"] == 1
    res = read_metrics(store, evaluate_model(store, ref))
    assert set(res) == {"sampled", "full"}
    t = read_ranks(store, evaluate_model(store, ref))
    assert t.num_rows == 120 and set(t.column("protocol").to_pylist()) == {"sampled", "full"}
    assert 0.0 <= res["full"]["hr10"] <= 1.0


def test_bad_configs_are_clear_errors(store):
    from mmiris.errors import MmirisError
    from mmiris.pipelines.train import train_model

    split = publish_tiny_split(store)
    with pytest.raises(MmirisError, match="loss 'hinge'"):
        TrainConfig(loss="hinge")
    with pytest.raises(MmirisError, match=r"unknown field\(s\) \['embedding'\]; known: \['emb'\]"):
        train_model(store, split, "tiny_mf", model_config={"embedding": 8}, train_config=_cfg())
    with pytest.raises(MmirisError, match="unknown model 'no_such_model'"):
        train_model(store, split, "no_such_model", train_config=_cfg())


def test_cli_train_evaluate_and_init_from(store, monkeypatch, capsys):
    from mmiris import cli
    from mmiris.models.build import load_model

    publish_tiny_split(store)
    monkeypatch.setenv("MMIRIS_STORE", store.uri)
    common = [
        "--store",
        store.uri,
        "train",
        "--split",
        "split",
        "--model",
        "tiny_mf",
        "--emb",
        "4",
        "--batch-size",
        "64",
        "--threads",
        "1",
    ]
    assert cli.main([*common, "--epochs", "2", "--lr", "0.05"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert first.startswith("model-tiny_mf@")
    assert cli.main([*common, "--epochs", "1", "--lr", "1e-9", "--init-from", first]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second != first and first in store.manifest(second).parents
    a, b = load_model(store, first), load_model(store, second)
    assert torch.allclose(a.P, b.P, atol=1e-6)  # started from the first model, barely moved

    assert cli.main(["--store", store.uri, "evaluate", "--model", "model-tiny_mf@" + second.split("@")[1]]) == 0
    out = capsys.readouterr().out
    assert "sampled" in out and "full" in out and "metrics-tiny_mf@" in out
    # a user's mistake: one clear line, exit 2
    assert cli.main(["--store", store.uri, "train", "--split", "nosuch", "--model", "tiny_mf"]) == 2
    assert "no published version of artifact 'nosuch'" in capsys.readouterr().err
    assert cli.main(["--store", store.uri, "train", "--split", "split", "--model", "mf", "--init-from", first]) == 2
    capsys.readouterr()
    assert cli.main([*common, "--epochs", "1", "--select-on", "cold"]) == 2  # tiny_mf has no content path
    assert "select_on 'cold'" in capsys.readouterr().err
    assert cli.main([*common, "--epochs", "1", "--negatives-from", "trained"]) == 0
    third = capsys.readouterr().out.strip().splitlines()[-1]
    assert store.manifest(third).params["train_config"]["negatives_from"] == "trained"


@pytest.mark.parametrize("name", ["itempop", "ease", "fism", "nais_prod"])
def test_registry_models_train_evaluate_and_reload(store, name):
    from mmiris.models.build import load_model
    from mmiris.pipelines.evaluate import evaluate_model, read_metrics
    from mmiris.pipelines.train import train_model

    split = publish_tiny_split(store)
    ref = train_model(store, split, name, model_config={"emb": 8}, train_config=_cfg(epochs=2, lr=0.01))
    m = store.manifest(ref)
    res = read_metrics(store, evaluate_model(store, ref))
    assert set(res) == {"sampled", "full"} and 0.0 <= m.stats["valid_hr10"] <= 1.0
    if name in ("fism", "nais_prod"):  # item-similarity models keep the NAIS paper's user batches
        assert m.params["train_config"]["batch_order"] == "user"
    # taste groups are easy for personalised models: far above random (10/21); popularity is not
    assert res["sampled"]["hr10"] > (0.3 if name == "itempop" else 0.6)
    model = load_model(store, ref)
    users = torch.arange(5)
    items = torch.arange(12).expand(5, -1)
    fresh = load_model(store, ref)
    assert torch.equal(model.scores(users, items), fresh.scores(users, items))
    assert model.score_all(users).shape == (5, 30)


def test_neumf_pretrained_from_gmf_and_mlp_through_the_cli(store, monkeypatch, capsys):
    """The NCF paper's pretraining: GMF and MLP trained alone, NeuMF starts from both."""
    from mmiris import cli
    from mmiris.models.build import load_model

    publish_tiny_split(store)
    common = [
        "--store",
        store.uri,
        "train",
        "--split",
        "split",
        "--model",
        "neumf",
        "--emb",
        "4",
        "--batch-size",
        "64",
        "--threads",
        "1",
    ]
    refs = {}
    for mode in ("gmf", "mlp"):
        assert cli.main([*common, "--epochs", "2", "--lr", "0.05", "--set", f'mode="{mode}"']) == 0
        refs[mode] = capsys.readouterr().out.strip().splitlines()[-1]
    # lr ~ 0: the published NeuMF is its initialisation, 0.5·GMF + 0.5·MLP (NCF §3.4.1)
    assert (
        cli.main([*common, "--epochs", "1", "--lr", "1e-12", "--init-from", refs["mlp"], "--init-from", refs["gmf"]])
        == 0
    )
    fused_ref = capsys.readouterr().out.strip().splitlines()[-1]
    assert {refs["gmf"], refs["mlp"]} <= set(store.manifest(fused_ref).parents)
    gmf, mlp, fused = (load_model(store, r) for r in (refs["gmf"], refs["mlp"], fused_ref))
    users, items = torch.arange(6), torch.arange(10).expand(6, -1)
    with torch.no_grad():
        want = 0.5 * gmf.scores(users, items) + 0.5 * mlp.scores(users, items)
        torch.testing.assert_close(fused.scores(users, items), want, atol=1e-5, rtol=1e-4)
    # one of the two, or the wrong kind: one clear line, exit 2
    assert cli.main([*common, "--init-from", refs["gmf"]]) == 2
    assert "one with mode 'gmf' and one with mode 'mlp'" in capsys.readouterr().err


class _FailingBackward(torch.autograd.Function):
    """Identity forward; a RuntimeError in backward, like an out-of-memory or an autograd bug."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("deliberate failure in backward")


class TinyBroken(TinyMF):
    name = "tiny_broken"

    def scores(self, users, items):
        return _FailingBackward.apply(super().scores(users, items))


def test_a_runtime_error_in_single_process_training_is_a_bug_with_its_traceback(store, monkeypatch, capsys):
    """Alone there is no peer to blame: the error is not dressed up as "another rank died"
    (a user error, exit 2) but reported as what it is, with its traceback, exit 1."""
    from mmiris import cli

    publish_tiny_split(store)
    monkeypatch.setitem(MODELS, "tiny_broken", TinyBroken)
    argv = ["--store", store.uri, "train", "--split", "split", "--model", "tiny_broken", "--emb", "4", "--epochs", "1"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: deliberate failure in backward" in err
    assert "internal error (RuntimeError)" in err
    assert "another rank" not in err


def test_history_models_train_on_mixed_batches(store):
    """batch_order "shuffled" for an attentive model: every batch row is one positive with its
    own history (users mixed, bucketed by length); it learns the taste groups as well."""
    from mmiris.pipelines.evaluate import evaluate_model, read_metrics
    from mmiris.pipelines.train import train_model

    split = publish_tiny_split(store)
    ref = train_model(
        store, split, "nais_prod", model_config={"emb": 8}, train_config=_cfg(epochs=6, lr=0.01, batch_order="shuffled")
    )
    assert store.manifest(ref).params["train_config"]["batch_order"] == "shuffled"
    assert read_metrics(store, evaluate_model(store, ref))["sampled"]["hr10"] > 0.6


def test_select_on_cold_picks_the_epoch_by_new_item_scoring(store):
    """select_on "cold": the validation that early stopping reads scores every candidate as a new
    item (targets_as_new), it is part of the version key, and a model without a content path
    for items it never saw is refused with a clear error."""
    from mmiris.errors import MmirisError
    from mmiris.eval.metrics import metrics_from_sums
    from mmiris.eval.protocols import sampled_ranks
    from mmiris.models.base import targets_as_new
    from mmiris.models.build import load_model
    from mmiris.pipelines.train import train_model

    assert TrainConfig().key_params()["select_on"] == "warm"
    assert TrainConfig(select_on="cold").key_params()["select_on"] == "cold"
    with pytest.raises(MmirisError, match="select_on 'lukewarm'"):
        TrainConfig(select_on="lukewarm")

    split = publish_tiny_split(store)
    with pytest.raises(MmirisError, match=r"tiny_mf has no content path.*hybrid_iris.*vbpr"):
        train_model(store, split, "tiny_mf", model_config={"emb": 8}, train_config=_cfg(select_on="cold"))

    # image features that carry the taste groups (one direction per group) plus noise
    rng = np.random.default_rng(0)
    vecs = (np.eye(3)[np.arange(30) // 10] * 2 + rng.normal(scale=0.5, size=(30, 3))).astype(np.float32)
    table = pa.table(
        {
            "item_id": pa.array(np.arange(30), pa.int64()),
            "feature": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel(), pa.float32()), 3),
            "present": pa.array([True] * 30),
            "reason": pa.array([None] * 30, pa.string()),
        }
    )
    img = store.publish("img", "image_features", Output({"features": table}), params={"tiny": 0})
    cfg = _cfg(epochs=3, lr=0.01, select_on="cold")
    kw = dict(model_config={"emb": 8}, train_config=cfg, image_features=img)
    ref = train_model(store, split, "vbpr", **kw)
    m = store.manifest(ref)
    assert m.params["train_config"]["select_on"] == "cold"
    model = load_model(store, ref)
    sp = load_split(store, split)

    def valid_metrics():
        res = sampled_ranks(model, sp.valid_users, sp.valid_items, sp.valid_negatives, device=torch.device("cpu"))
        return metrics_from_sums(res.sums())

    warm = valid_metrics()
    with targets_as_new(model):
        cold = valid_metrics()
    log = store.read_table(ref, "training_log").to_pylist()
    logged = {r["metric"]: r["value"] for r in log if r["epoch"] == m.stats["best_epoch"] and r["loss"] is None}
    assert {k: logged[k] for k in cold} == pytest.approx(cold)  # the best epoch was judged as new items
    assert cold["ndcg10"] != pytest.approx(warm["ndcg10"])  # ... which is not how the model scores them
    warm_ref = train_model(store, split, "vbpr", **{**kw, "train_config": _cfg(epochs=3, lr=0.01)})
    assert warm_ref != ref and store.manifest(warm_ref).params["train_config"]["select_on"] == "warm"


def test_eval_steps_validates_inside_epochs_and_keeps_the_best_state_wherever_it_falls(store):
    """eval_steps: a validation after every N-th optimiser step inside an epoch, besides each
    epoch's end; the published model is the best of all of them (its metrics reproduce), its
    step is recorded, patience counts these validations, and the config is refused beside
    eval_every > 1 or when negative."""
    from mmiris.errors import MmirisError
    from mmiris.models.build import load_model
    from mmiris.pipelines.evaluate import evaluate_model, read_metrics
    from mmiris.pipelines.train import train_model

    with pytest.raises(MmirisError, match="eval_steps must be >= 0"):
        TrainConfig(eval_steps=-1)
    with pytest.raises(MmirisError, match="eval_steps 5 .* eval_every 2"):
        TrainConfig(eval_steps=5, eval_every=2)
    assert TrainConfig(eval_steps=5).key_params()["eval_steps"] == 5  # it decides the model kept

    split = publish_tiny_split(store)
    n_b = math.ceil(len(load_split(store, split).train_items) / (64 // 5))  # batches per epoch
    ref = train_model(store, split, "tiny_mf", model_config={"emb": 8}, train_config=_cfg(epochs=3, eval_steps=7))
    m = store.manifest(ref)
    log = store.read_table(ref, "training_log").to_pylist()
    val = [(r["epoch"], r["step"], r["value"]) for r in log if r["metric"] == "hr10"]
    inside = [s for s in range(7, 3 * n_b, 7) if s % n_b]  # multiples of 7 that do not end an epoch
    assert sorted(s for _, s, _ in val) == sorted(inside + [n_b, 2 * n_b, 3 * n_b])
    assert all((s - 1) // n_b + 1 == e for e, s, _ in val)  # each row names the epoch it ran in
    steps = [r["step"] for r in log if r["loss"] is not None]
    assert steps == list(range(1, 3 * n_b + 1))  # every step's loss, once, in order
    assert [r["step"] for r in log] == sorted(r["step"] for r in log)  # validations after their step's loss
    best = max(val, key=lambda v: (v[2], -v[1]))  # the first of the best
    assert (m.stats["best_epoch"], m.stats["best_step"]) == best[:2]
    assert best[1] % n_b, "this data's best falls inside an epoch; else the test proves less"
    ev = evaluate_model(store, ref, protocols=("sampled",), part="valid")
    assert read_metrics(store, ev)["sampled"]["hr10"] == pytest.approx(best[2])  # the published state is that one
    assert isinstance(load_model(store, ref), TinyMF)
    assert len(m.info["epoch_seconds"]) == 3

    # what the report plots (validations at fractional epochs) and the flow's table show
    from mmiris.flows.ui_artifacts import validation_rows
    from mmiris.report.collect import collect_curves, model_info

    (curve,) = collect_curves(store, [model_info(store, str(ref))])
    assert curve.val_epochs.tolist() == pytest.approx([s / n_b for _, s, _ in val])
    assert curve.val_hr10.tolist() == pytest.approx([v for _, _, v in val])
    table = validation_rows(log)
    assert [(r["epoch"], r["step"]) for r in table] == [(e, s) for e, s, _ in val]
    assert [r["hr10"] for r in table] == pytest.approx([v for _, _, v in val], abs=1e-4)
    assert [r["step"] for r in table if "mean_loss" in r] == [n_b, 2 * n_b, 3 * n_b]  # on each epoch's last row

    # patience counts validations: lr 0.3 overfits, so it stops inside an epoch
    ref = train_model(
        store,
        split,
        "tiny_mf",
        model_config={"emb": 8},
        train_config=_cfg(epochs=40, lr=0.3, patience=2, eval_steps=5),
    )
    m = store.manifest(ref)
    val = [(r["step"], r["value"]) for r in store.read_table(ref, "training_log").to_pylist() if r["metric"] == "hr10"]
    assert m.stats["stopped_early"] is True
    after = [v for s, v in val if s > m.stats["best_step"]]
    assert len(after) == 2 and max(after) <= dict(val)[m.stats["best_step"]]


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_run_stopped_after_a_validation_inside_an_epoch_resumes_to_the_identical_model(store, tmp_path, ema):
    """The checkpoint that follows a validation inside an epoch holds it (and the parameter
    average, with ema): a run stopped right after it continues to the same log, best step and
    parameters as one run straight through."""
    from mmiris.models.build import build_model
    from mmiris.train.trainer import train

    sp = load_split(store, publish_tiny_split(store))
    cfg = _cfg(epochs=2, eval_steps=9, ema=ema)

    def fresh():
        torch.manual_seed(0)
        return build_model("tiny_mf", {"emb": 8}, sp.n_users, sp.n_items, sp.history())

    whole = train(fresh(), sp, cfg)

    class Stop(Exception):
        pass

    seen = []

    def stop_at_second(epoch, m, step):
        seen.append((epoch, step))
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        train(fresh(), sp, cfg, checkpoint_dir=tmp_path / "ck", on_validation=stop_at_second)
    assert seen == [(1, 9), (1, 18)]  # stopped inside the first epoch
    resumed = train(fresh(), sp, cfg, checkpoint_dir=tmp_path / "ck", resume=True)
    assert resumed.resumed_from == {"epoch": 0, "batch": 18}
    assert (resumed.best_epoch, resumed.best_step) == (whole.best_epoch, whole.best_step)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.log if r["metric"] != "epoch_seconds"] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in whole.log if r["metric"] != "epoch_seconds"
    ]
    for k, v in whole.state_dict.items():
        assert torch.equal(resumed.state_dict[k], v), k


def test_optimizer_groups_set_each_groups_learning_rate(store, tmp_path):
    """A model's optimizer_groups: the trainer's Adam gives each group the run's lr times its
    lr_scale (read back from the checkpoint), and on the first step Adam moves every entry by
    at most its group's lr."""
    from mmiris.models.build import build_model
    from mmiris.train.trainer import train

    class SlowQ(TinyMF):
        def optimizer_groups(self):
            return [{"params": [self.P]}, {"params": [self.Q], "lr_scale": 0.1}]

    sp = load_split(store, publish_tiny_split(store))
    torch.manual_seed(0)
    config = build_model("tiny_mf", {"emb": 8}, sp.n_users, sp.n_items).config
    model = SlowQ(config, sp.n_users, sp.n_items, sp.history())
    P0, Q0 = model.P.detach().clone(), model.Q.detach().clone()

    class Stop(Exception):
        pass

    def stop(epoch, m, step):
        raise Stop

    # one optimiser step: eval_steps 1 validates after it, and the callback stops the run there
    with pytest.raises(Stop):
        train(model, sp, _cfg(epochs=1, lr=0.05, eval_steps=1), checkpoint_dir=tmp_path / "ck", on_validation=stop)
    from mmiris.train.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "ck")
    assert [g["lr"] for g in ck["optimizer"]["param_groups"]] == pytest.approx([0.05, 0.005])
    assert ck["state"]["step"] == 1
    dP, dQ = (model.P.detach() - P0).abs(), (model.Q.detach() - Q0).abs()
    assert float(dP.max()) == pytest.approx(0.05, rel=1e-3)  # Adam's first step: lr · g/(|g| + eps)
    assert float(dQ.max()) == pytest.approx(0.005, rel=1e-3) and float(dQ.max()) > 0


def test_ema_validates_and_publishes_the_moving_average_of_the_parameters(store):
    """ema: every validation reads, and the result holds, avg_t = d_t·avg_{t-1} + (1 − d_t)·p_t
    with d_t = min(ema, (1 + t)/(10 + t)) over the optimiser steps (a loop over the raw
    trajectory of the same run without it), while training itself follows the raw parameters."""
    from mmiris.errors import MmirisError
    from mmiris.models.build import build_model
    from mmiris.train import distributed as D
    from mmiris.train.trainer import train, validate

    for bad in (-0.1, 1.0):
        with pytest.raises(MmirisError, match="ema must be in"):
            TrainConfig(ema=bad)
    sp = load_split(store, publish_tiny_split(store))

    def fresh():
        torch.manual_seed(0)
        return build_model("tiny_mf", {"emb": 8}, sp.n_users, sp.n_items, sp.history())

    raw = fresh()
    path = [{k: v.detach().clone() for k, v in raw.state_dict().items()}]  # p_0, p_1, ...

    def record(epoch, m, step):
        path.append({k: v.detach().clone() for k, v in raw.state_dict().items()})

    plain = train(raw, sp, _cfg(epochs=1, eval_steps=1, patience=1000), on_validation=record)
    model = fresh()
    seen = {}
    res = train(
        model,
        sp,
        _cfg(epochs=1, eval_steps=1, patience=1000, ema=0.95),
        on_validation=lambda epoch, m, step: seen.__setitem__(step, m),
    )
    T = len(path) - 1
    assert T == plain.log[-1]["step"] and len(seen) == T
    for k, v in model.state_dict().items():  # training followed the raw parameters
        assert torch.equal(v, path[-1][k]), k
    avg = {k: v.clone() for k, v in path[0].items()}
    avgs = [None]
    for t in range(1, T + 1):
        d = min(0.95, (1 + t) / (10 + t))
        avg = {k: d * avg[k] + (1 - d) * path[t][k] for k in avg}
        avgs.append(avg)
    best = res.best_step
    for k, v in res.state_dict.items():  # the result is the average at the kept step
        torch.testing.assert_close(v, avgs[best][k], rtol=1e-5, atol=1e-6)
    probe = fresh()
    for t in (1, T // 2, T):  # what each validation read was the average at its step
        probe.load_state_dict(avgs[t])
        assert validate(probe, sp, D.Dist(), _cfg()) == pytest.approx(seen[t], abs=1e-9), t
    assert any(
        not torch.allclose(avgs[t]["P"], path[t]["P"]) for t in (T // 2, T)
    )  # the average is not the raw trajectory


def test_optimizer_groups_that_miss_or_repeat_a_parameter_are_refused(store):
    """A parameter left out of every group would silently never train; one in two groups
    would be stepped twice: both are a clear error before the first step."""
    from mmiris.errors import MmirisError
    from mmiris.models.build import build_model
    from mmiris.train.trainer import train

    sp = load_split(store, publish_tiny_split(store))
    config = build_model("tiny_mf", {"emb": 8}, sp.n_users, sp.n_items).config

    class Missing(TinyMF):
        def optimizer_groups(self):
            return [{"params": [self.P]}]

    class Twice(TinyMF):
        def optimizer_groups(self):
            return [{"params": [self.P, self.Q]}, {"params": [self.Q], "lr_scale": 0.5}]

    for cls in (Missing, Twice):
        with pytest.raises(MmirisError, match=r"optimizer_groups\(\) must hold every parameter exactly once"):
            train(cls(config, sp.n_users, sp.n_items, sp.history()), sp, _cfg(epochs=1))
