"""benchmarks/checkpoint_eval.py: a training checkpoint, rebuilt and evaluated, scores what
the model it holds scores (demo data, a FISM, no ../shared/data)."""

import json

import pytest
import torch

from benchmarks import checkpoint_eval
from mmiris.artifacts import ArtifactStore
from mmiris.data.split import load_split
from mmiris.eval.metrics import metrics_from_ranks
from mmiris.eval.protocols import sampled_ranks
from mmiris.models.build import build_model
from mmiris.train.checkpoint import save_checkpoint


def _demo_model(tmp_path, name: str, n_users: int, n_items: int, seed: int):
    """A demo store, its split, and ``name`` built on it with weights far from a rebuilt
    model's init (so loading the checkpoint is what makes the numbers match)."""
    from mmiris.pipelines.demo_data import generate_demo_dataset
    from mmiris.pipelines.split import split_leave_one_out

    store = ArtifactStore(tmp_path / "store")
    refs = generate_demo_dataset(store, n_users=n_users, n_items=n_items)
    split_ref = split_leave_one_out(store, refs.interactions, n_negatives=5)
    split = load_split(store, split_ref)
    torch.manual_seed(seed)
    model = build_model(name, {"emb": 8}, split.n_users, split.n_items, split.history())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    model.eval()
    return store, split_ref, split, model


def test_checkpoint_is_evaluated_as_the_model_it_holds(tmp_path, capsys):
    store, split_ref, split, model = _demo_model(tmp_path, "fism", 60, 40, 0)
    with torch.no_grad():
        want = metrics_from_ranks(sampled_ranks(model, split.test_users, split.test_items, split.test_negatives).ranks)
    ckpt = tmp_path / "ckpt"
    state = {"epoch": 3, "best_epoch": 2}
    save_checkpoint(
        ckpt,
        {
            "model": "fism",
            "train_config": {},
            "model_state": model.state_dict(),
            "optimizer": {},
            "rng": {},
            "state": state,
        },
    )
    out = tmp_path / "rows.jsonl"
    args = [
        "--store",
        str(store.root),
        "--checkpoint",
        str(ckpt),
        "--model",
        "fism",
        "--config",
        '{"emb": 8}',
        "--split",
        str(split_ref),
        "--out",
        str(out),
    ]
    assert checkpoint_eval.main(args) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (row["epoch"], row["best_epoch"]) == (3, 2)
    assert row["hr10"] == round(want["hr10"], 4) and row["ndcg10"] == round(want["ndcg10"], 4)
    assert json.loads(out.read_text()) == row

    with torch.no_grad():  # an ablation: Q zeroed after loading scores every item by its bias alone
        model.Q.weight.zero_()
        want = metrics_from_ranks(sampled_ranks(model, split.test_users, split.test_items, split.test_negatives).ranks)
    assert checkpoint_eval.main([*args, "--zero", "Q.weight"]) == 0
    whole, row = row, json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["zeroed"] == ["Q.weight"] and row["ndcg10"] != whole["ndcg10"]
    assert row["hr10"] == round(want["hr10"], 4) and row["ndcg10"] == round(want["ndcg10"], 4)
    with torch.no_grad():  # the validation cases, as model selection ranks them (a warm split: as they are)
        want = metrics_from_ranks(
            sampled_ranks(model, split.valid_users, split.valid_items, split.valid_negatives).ranks
        )
    assert checkpoint_eval.main([*args, "--zero", "Q.weight", "--cases", "valid"]) == 0
    zeroed_test, row = row, json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["cases"] == "valid" and row["zeroed"] == ["Q.weight"] and "cases" not in zeroed_test
    assert (row["hr10"], row["ndcg10"]) != (zeroed_test["hr10"], zeroed_test["ndcg10"])
    assert row["hr10"] == round(want["hr10"], 4) and row["ndcg10"] == round(want["ndcg10"], 4)
    with pytest.raises(SystemExit, match="--zero nope: not in the fism model"):
        checkpoint_eval.main([*args, "--zero", "nope"])

    with pytest.raises(SystemExit, match="is a fism checkpoint, not mf"):
        checkpoint_eval.main([*args[:5], "mf", *args[6:]])
    with pytest.raises(SystemExit, match="no checkpoint"):
        checkpoint_eval.main([*args[:2], "--checkpoint", str(tmp_path / "none"), *args[4:]])


def test_checkpoint_attention_target_share_is_the_held_models(tmp_path, capsys):
    from benchmarks.attention_spread import model_target_share

    store, split_ref, _, model = _demo_model(tmp_path, "nais_concat", 40, 80, 1)  # a pair-dependent attention
    with torch.no_grad():
        want = model_target_share(model, 10, 20, 0)["target_share"]
    ckpt = tmp_path / "ckpt"
    state = {"model": "nais_concat", "train_config": {}, "model_state": model.state_dict(), "optimizer": {}, "rng": {}}
    save_checkpoint(ckpt, {**state, "state": {"epoch": 1, "best_epoch": 1}})
    args = ["--store", str(store.root), "--checkpoint", str(ckpt), "--model", "nais_concat"]
    assert (
        checkpoint_eval.main([*args, "--config", '{"emb": 8}', "--split", str(split_ref), "--attention-users", "10"])
        == 0
    )
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 < want <= 1.0 and row["target_share"] == want
