"""``mmiris tune``: the search space grammar, a study that prunes and publishes its trials
table, a ``mmiris tune`` process SIGKILLed mid-trial then resumed, ``mmiris train
--params-from``, the report's table and one-line errors. On a tiny generated demo catalogue
(60 users × 40 items, 20 sampled negatives), FISM trained for a few epochs per trial."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.artifacts.schema import load_contract, validate
from mmiris.train.config import TrainConfig
from tests.waiting import PATIENCE_S, output_tail, wait_until

ENV = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MMIRIS_KERNEL_THREADS": "1"}
FAST = ["--batch-size", "256", "--threads", "1", "--emb", "8"]  # CLI options shared by the tests


def _demo_split(store: ArtifactStore):
    from mmiris.pipelines.demo_data import generate_demo_dataset
    from mmiris.pipelines.split import split_leave_one_out

    refs = generate_demo_dataset(store, n_users=60, n_items=40)
    return split_leave_one_out(store, refs.interactions, n_negatives=20)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    store = ArtifactStore(tmp_path_factory.mktemp("tune") / "store")
    return store, _demo_split(store)


def test_search_space_defaults_and_grammar():
    from mmiris.errors import MmirisError
    from mmiris.train.search_space import default_space, parse_spec, search_space

    assert set(default_space("fism")) == {"lr", "batch_size", "reg_emb"}
    assert set(default_space("nais_prod")) == {"lr", "batch_size", "reg_emb", "reg_attention", "beta", "attention_size"}
    assert {"reg_feature", "reg_share", "beta"} <= set(default_space("multimodal_iris"))
    assert set(default_space("ease")) == {"l2"}  # closed form: no learning rate or batches
    assert parse_spec("lr", "1e-4:1e-2:log") == {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
    assert parse_spec("beta", "0.5,0.8") == {"type": "categorical", "choices": [0.5, 0.8]}
    assert parse_spec("loss", "log") == {"type": "categorical", "choices": ["log"]}
    assert parse_spec("reg_emb", "off") is None
    space = {
        p.name: p
        for p in search_space(
            "nais_prod", {"attention_size": "8:64:int", "reg_emb": "off", "negatives": "2,4"}, only=None
        )
    }
    assert space["attention_size"].type == "int" and "reg_emb" not in space
    assert space["negatives"].target == "train" and space["beta"].target == "model"
    assert [p.name for p in search_space("nais_prod", only=["lr", "beta"])] == ["lr", "beta"]
    for bad, match in [
        ({"nosuch": "1:2"}, "unknown parameter 'nosuch'"),
        ({"lr": "0:1:log"}, "LOW > 0"),
        ({"lr": "2:1"}, "below HIGH"),
        ({"batch_size": "0,512"}, "batch_size must be >= 1"),
        ({"attention_size": "8.5:9"}, "integer"),
        ({"lr": "1:x"}, "numbers"),
    ]:
        with pytest.raises(MmirisError, match=match):
            search_space("nais_prod", bad)


def test_tune_prunes_publishes_the_trials_table_and_finds_it_again(data):
    from mmiris.pipelines.tune import tune_model
    from mmiris.report.collect import SplitSection, collect_tunes
    from mmiris.report.html import render

    store, split = data
    kw = dict(
        n_trials=2,
        space={"lr": [0.05, 1e-9]},
        only=["lr"],
        model_config={"emb": 8},
        train_config=TrainConfig(epochs=3, lr=0.05, batch_size=256, threads=1),
        enqueue=[{"lr": 1e-9}],
        startup_trials=1,
        study_name="prune",
    )
    t0 = time.perf_counter()
    ref = tune_model(store, split, "fism", **kw)  # trial 0: the baseline (lr 0.05); trial 1: lr ≈ 0
    print(f"2 trials: {time.perf_counter() - t0:.1f} s")
    m = store.manifest(ref)
    assert ref.name == "tune-fism" and m.kind == "tune" and m.parents == [str(split)]
    table = store.read_table(ref, "trials")  # validated against schemas/tune.json on read
    validate(table, load_contract("tune"), "trials", where=str(ref))
    rows = {r["number"]: r for r in table.to_pylist()}
    assert rows[0]["state"] == "complete" and rows[0]["epochs"] == 3
    assert rows[1]["state"] == "pruned" and rows[1]["epochs"] == 1  # stopped after its first epoch
    assert json.loads(rows[1]["params"]) == {"lr": 1e-9} and rows[1]["value"] < rows[0]["value"]
    assert m.stats["best_trial"] == 0 and m.stats["best_value"] == rows[0]["value"]
    assert m.stats["best_train_config"] == {"lr": 0.05} and m.stats["best_model_config"] == {}
    assert m.params["model"] == "fism" and m.params["split"] == str(split) and m.params["n_trials"] == 2
    assert m.params["space"] == {"lr": {"type": "categorical", "choices": [0.05, 1e-9]}}
    assert m.params["sampler_seed"] == 0
    assert (store.root + "/_tune/prune.db").endswith(".db") and os.path.exists(store.root + "/_tune/prune.db")
    assert "_tune" not in store.names()

    again = tune_model(store, split, "fism", **kw)  # nothing left to run: the same artifact
    assert again == ref and len(store.versions("tune-fism")) == 1

    tunes = collect_tunes(store, str(split))
    assert [(t.model, t.best_value, t.trials["pruned"]) for t in tunes] == [("fism", rows[0]["value"], 1)]
    page = render([SplitSection(str(split), "demo", 60, 40, tunes=tunes)], {}, title="t", store_uri=store.uri)
    assert "Hyperparameter search" in page and f"{rows[0]['value']:.4f}" in page and "lr=0.05" in page


def test_cli_tune_then_train_with_params_from(data, capsys):
    from mmiris import cli

    store, split = data
    common = ["--store", store.uri]
    assert (
        cli.main(
            [
                *common,
                "tune",
                "--split",
                str(split),
                "--model",
                "fism",
                "--trials",
                "3",
                "--epochs",
                "2",
                "--space",
                "lr=1e-3:5e-2:log",
                "--space",
                "reg_emb=1e-7,1e-4",
                "--only",
                "lr,reg_emb",
                *FAST,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    tune_ref = out[-1]
    assert tune_ref.startswith("tune-fism@") and out[-2].startswith("best: trial")
    best = store.manifest(tune_ref).stats
    assert set(best["best_params"]) == {"lr", "reg_emb"}

    train = [*common, "train", "--split", str(split), "--model", "fism", "--epochs", "2", *FAST]
    assert cli.main([*train, "--params-from", tune_ref]) == 0
    m = store.manifest(capsys.readouterr().out.strip().splitlines()[-1])
    assert m.params["model_config"]["reg_emb"] == best["best_model_config"]["reg_emb"]
    assert m.params["train_config"]["lr"] == best["best_train_config"]["lr"]
    # the same training as the best trial: the trial's score is this model's validation HR@10
    assert m.stats["valid_hr10"] == pytest.approx(best["best_value"])

    # explicit flags win over --params-from
    assert cli.main([*train, "--params-from", "tune-fism@latest", "--lr", "0.02", "--epochs", "1"]) == 0
    m = store.manifest(capsys.readouterr().out.strip().splitlines()[-1])
    assert m.params["train_config"]["lr"] == 0.02
    assert m.params["model_config"]["reg_emb"] == best["best_model_config"]["reg_emb"]
    # a tune artifact of another model is refused
    assert cli.main([*common, "train", "--split", str(split), "--model", "mf", "--params-from", tune_ref]) == 2
    assert "tuned model 'fism', not 'mf'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "fism", "--space", "nosuch=1:2"], "unknown parameter 'nosuch' for model fism"),
        (["--model", "no_such_model"], "unknown model 'no_such_model'"),
        (["--model", "fism", "--space", "lr"], "expected NAME=SPEC"),
        (["--model", "fism", "--space", "lr=1e-4:1e-2:cubic"], "unknown flag(s) ['cubic']"),
        (["--model", "fism", "--only", "beta"], "not tunable for model fism"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(data, capsys, args, message):
    from mmiris import cli

    store, split = data
    assert cli.main(["--store", store.uri, "tune", "--split", str(split), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmiris tune: error:") and "\n" not in err and message in err


def _trials(db: str) -> list[tuple[int, str, int]]:
    """(number, state, validated epochs) of each trial, read from Optuna's SQLite tables."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(
                "SELECT number, state, (SELECT count(*) FROM trial_intermediate_values v "
                "WHERE v.trial_id = t.trial_id) FROM trials t ORDER BY number"
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


@pytest.mark.timeout(3 * PATIENCE_S)  # waits are on the study's own database, not the clock
def test_sigkill_mid_trial_then_rerun_finishes_the_study(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    split = _demo_split(store)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from mmiris.cli import main; sys.exit(main())",
        "--store",
        store.uri,
        "tune",
        "--split",
        str(split),
        "--model",
        "fism",
        "--trials",
        "3",
        "--study",
        "killed",
        "--pruner",
        "none",
        "--epochs",
        "6",
        "--patience",
        "6",
        "--only",
        "lr,reg_emb",
        "--batch-size",
        "64",
        "--threads",
        "1",
        "--emb",
        "8",
    ]
    db = f"{store.root}/_tune/killed.db"

    def trial_1_mid_way() -> bool:  # trial 0 complete, trial 1 has validated an epoch of its 6
        states = {n: (s, epochs) for n, s, epochs in _trials(db)}
        return states.get(0, ("",))[0] == "COMPLETE" and states.get(1, ("",))[0] == "RUNNING" and states[1][1] > 0

    log = tmp_path / "first.log"  # a file, not a pipe nobody reads while the study runs
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(trial_1_mid_way, "trial 1 running after trial 0 completed", proc=proc, log=log)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, output_tail(proc, log)
    assert not store.versions("tune-fism")  # nothing published by the killed run
    before = {n: s for n, s, _ in _trials(db)}
    assert before[0] == "COMPLETE" and before[1] == "RUNNING"

    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=PATIENCE_S)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "trial 1 was left running by" in res.stderr and "marked fail" in res.stderr
    assert "1 of 3 trials finished, 2 to run" in res.stderr
    ref = res.stdout.strip().splitlines()[-1]
    rows = store.read_table(ref, "trials").to_pylist()
    by_state = {s: [r for r in rows if r["state"] == s] for s in ("complete", "pruned", "fail")}
    assert len(by_state["complete"]) + len(by_state["pruned"]) == 3  # the requested total, no more
    assert [r["number"] for r in by_state["fail"]] == [1]
    assert sorted(r["number"] for r in rows) == list(range(len(rows)))  # each trial once
    # trial 0 was not repeated: only trials 2 and 3 ran after the restart, and trial 2 retried
    # the killed trial's parameters
    assert [r["number"] for r in by_state["complete"]] == [0, 2, 3]
    assert rows[2]["params"] == rows[1]["params"]
    assert store.manifest(ref).stats["n_fail"] == 1


def test_trials_that_validate_inside_epochs_report_to_the_pruner_by_optimiser_step(data):
    """With eval_steps a trial validates several times an epoch; each report's step is the
    optimiser step it ran after (unique, so none is dropped), not the epoch."""
    import optuna

    from mmiris.pipelines.tune import tune_model

    store, split = data
    tune_model(
        store,
        split,
        "fism",
        n_trials=1,
        space={"lr": [0.05]},
        only=["lr"],
        model_config={"emb": 8},
        train_config=TrainConfig(epochs=2, lr=0.05, batch_size=256, threads=1, eval_steps=3),
        study_name="steps",
    )
    (trial,) = optuna.load_study(study_name="steps", storage=f"sqlite:///{store.root}/_tune/steps.db").trials
    steps = sorted(trial.intermediate_values)
    inside = [s for s in steps if s % 3 == 0]
    ends = [s for s in steps if s % 3]
    assert len(steps) > 2 and inside[:3] == [3, 6, 9]  # more reports than epochs, at steps 3, 6, 9, …
    assert len(ends) <= 2 and all(s > 9 for s in ends)  # the rest: epoch ends that are not multiples of 3
