"""Leave-one-out splits: held-out rows, stored negatives, determinism, short users, stage + CLI."""

import numpy as np
import pyarrow as pa
import pytest

from mmiris.artifacts import Output
from mmiris.cli import main
from mmiris.data.split import load_split
from mmiris.errors import InputError
from mmiris.pipelines.split import split_leave_one_out
from mmiris.splits.leave_one_out import leave_one_out, sample_negatives


def random_interactions(n_users=40, n_items=150, seed=0, min_len=3, max_len=30):
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u in range(n_users):
        k = int(rng.integers(min_len, max_len))
        users += [u] * k
        items += rng.choice(n_items, k, replace=False).tolist()
        ts += rng.choice(10**6, k, replace=False).tolist()
    perm = rng.permutation(len(users))  # row order must not matter
    return (np.array(users)[perm], np.array(items)[perm], np.array(ts)[perm], n_users, n_items)


def test_every_user_one_test_one_valid_and_train_is_the_rest():
    u, i, ts, nu, ni = random_interactions()
    s = leave_one_out(u, i, ts, nu, ni, mode="random", n_negatives=20, seed=1)
    assert sorted(s.test.user.tolist()) == list(range(nu)) == sorted(s.valid.user.tolist())
    all_pairs = sorted(zip(u.tolist(), i.tolist()))
    parts = (
        list(zip(s.train_user.tolist(), s.train_item.tolist()))
        + list(zip(s.valid.user.tolist(), s.valid.item.tolist()))
        + list(zip(s.test.user.tolist(), s.test.item.tolist()))
    )
    assert sorted(parts) == all_pairs  # a partition: nothing lost, nothing twice
    pos = set(all_pairs)
    for held in (s.valid, s.test):
        assert held.negatives.shape == (nu, 20)
        for user, negs in zip(held.user, held.negatives):
            assert len(set(negs.tolist())) == 20 and negs.min() >= 0 and negs.max() < ni
            assert not any((user, j) in pos for j in negs)
    assert s.stats["n_users"] == nu and s.stats["n_items"] == ni


def test_latest_mode_matches_a_slow_reference():
    u, i, ts, nu, ni = random_interactions(seed=2)
    s = leave_one_out(u, i, ts, nu, ni, mode="latest", n_negatives=5, seed=0)
    for user in range(nu):
        rows = sorted((t, it) for uu, it, t in zip(u, i, ts) if uu == user)
        assert s.test.item[s.test.user == user][0] == rows[-1][1]
        assert s.valid.item[s.valid.user == user][0] == rows[-2][1]


def test_deterministic_for_a_seed_and_row_order():
    u, i, ts, nu, ni = random_interactions(seed=3)
    a = leave_one_out(u, i, ts, nu, ni, seed=7)
    b = leave_one_out(u, i, ts, nu, ni, seed=7)
    c = leave_one_out(u, i, ts, nu, ni, seed=8)
    for x, y in ((a.test, b.test), (a.valid, b.valid)):
        assert np.array_equal(x.item, y.item) and np.array_equal(x.negatives, y.negatives)
    assert not np.array_equal(a.test.negatives, c.test.negatives)


def test_random_choices_and_negatives_are_uniform():
    # one user with items 0..9 repeated as 2,000 users; 30 items in all
    n_users, n_items = 2000, 30
    u = np.repeat(np.arange(n_users), 10)
    i = np.tile(np.arange(10), n_users)
    s = leave_one_out(u, i, None, n_users, n_items, n_negatives=5, seed=0)
    held = np.bincount(s.test.item, minlength=10)
    assert held.min() > 150 and held.max() < 250  # ~200 each
    neg = np.bincount(s.test.negatives.ravel(), minlength=n_items)
    assert neg[:10].sum() == 0
    assert neg[10:].min() > 400 and neg[10:].max() < 600  # 10,000 draws over 20 items: ~500


def test_sampling_needs_enough_free_items():
    with pytest.raises(InputError, match=r"user 0 interacted with 8 of 10 items: fewer than n_negatives=5"):
        sample_negatives(np.array([0]), np.zeros(8, int), np.arange(8), 10, 5, np.random.default_rng(0))
    # users who hold most items still get their negatives (the retry path)
    negs = sample_negatives(np.array([0]), np.zeros(95, int), np.arange(95), 100, 5, np.random.default_rng(0))
    assert sorted(negs[0].tolist()) == [95, 96, 97, 98, 99]


def test_short_users_drop_train_or_error():
    u, i, ts, nu, ni = random_interactions(n_users=10, seed=4)
    u = np.concatenate([u, [10, 10, 11]])
    i = np.concatenate([i, [0, 1, 2]])
    ts = np.concatenate([ts, [1, 2, 3]])
    dropped = leave_one_out(u, i, ts, 12, ni, n_negatives=5, short_users="drop")
    assert dropped.stats["short_users_dropped"] == 2 and dropped.stats["interactions_dropped"] == 3
    assert not set(dropped.train_user.tolist()) & {10, 11}
    assert not set(dropped.test.user.tolist()) & {10, 11}
    train_only = leave_one_out(u, i, ts, 12, ni, n_negatives=5, short_users="train")
    assert train_only.stats["short_users_train_only"] == 2
    assert (train_only.train_user == 10).sum() == 2 and 10 not in train_only.test.user
    with pytest.raises(InputError, match=r"user 10 has 2 interaction\(s\) and 2 user\(s\) have fewer than 3"):
        leave_one_out(u, i, ts, 12, ni, short_users="error")
    with pytest.raises(InputError, match="'latest' needs timestamps"):
        leave_one_out(u, i, None, 12, ni, mode="latest")


def _publish_interactions(store, u, i, ts, nu, ni):
    return store.publish(
        "interactions",
        "interactions",
        Output(
            tables={
                "interactions": pa.table(
                    {"user_id": u, "item_id": i, "rating": pa.nulls(len(u), pa.float32()), "timestamp": ts}
                ),
                "users": pa.table({"user_id": np.arange(nu), "source_id": [f"u{k}" for k in range(nu)]}),
            },
            stats={"n_users": nu, "n_items": ni},
        ),
    )


def test_stage_publishes_once_and_loads(store, tmp_path):
    u, i, ts, nu, ni = random_interactions(seed=5)
    ref = _publish_interactions(store, u, i, ts, nu, ni)
    a = split_leave_one_out(store, ref, mode="latest", n_negatives=30, seed=0)
    assert split_leave_one_out(store, "interactions@latest", mode="latest", n_negatives=30, seed=0) == a
    s = load_split(store, a)
    assert s.n_users == nu and s.n_items == ni and s.test_negatives.shape == (nu, 30)
    m = store.manifest(a)
    assert m.parents == [str(ref)] and m.params["mode"] == "latest"
    assert m.stats["n_train"] + m.stats["n_valid"] + m.stats["n_test"] == len(u)


def test_cli_split(store, capsys):
    u, i, ts, nu, ni = random_interactions(seed=6)
    _publish_interactions(store, u, i, ts, nu, ni)
    assert main(["--store", store.root, "split", "--negatives", "10", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    ref = out.split()[1]
    assert ref.startswith("split@") and load_split(store, ref).valid_negatives.shape == (nu, 10)
    assert main(["--store", store.root, "split", "--negatives", "1000"]) == 2
    assert "fewer than n_negatives=1000" in capsys.readouterr().err
