"""The training sampler: K uniform negatives outside each history, deterministic epochs,
batches of the configured size grouped by user, identical global batches on any world size."""

import numpy as np
import pytest
import torch

from mmiris.data.split import UserHistory
from mmiris.train.sampler import TrainSampler, make_batch, sample_negatives


def _history(n_users=50, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        k = int(rng.integers(1, 30)) if u else n_items - 2  # user 0 has nearly everything
        users += [u] * k
        items += rng.choice(n_items, size=k, replace=False).tolist()
    return UserHistory.from_pairs(np.array(users), np.array(items), n_users, n_items)


def test_negatives_never_in_history_and_uniform_over_the_rest():
    h = _history()
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(h.n_users), 400)
    negs = sample_negatives(h, users, 4, rng)
    for u in range(h.n_users):
        assert not set(negs[users == u].ravel().tolist()) & set(h.items_of(u).tolist())
    # user 0 may only get the 2 items it lacks, each about half the time
    allowed = sorted(set(range(h.n_items)) - set(h.items_of(0).tolist()))
    vals, counts = np.unique(negs[users == 0], return_counts=True)
    assert vals.tolist() == allowed and abs(counts[0] / counts.sum() - 0.5) < 0.06
    # a user with a short history: frequencies close to uniform over its non-items
    u = int(np.argmin(h.lengths()))
    big = sample_negatives(h, np.full(20000, u), 4, rng).ravel()
    freq = np.bincount(big, minlength=h.n_items)[sorted(set(range(h.n_items)) - set(h.items_of(u).tolist()))]
    assert freq.min() > 0 and freq.max() / freq.min() < 1.25


def test_epoch_plan_deterministic_per_seed_and_epoch_and_covers_every_positive_once():
    h = _history()
    a, b = TrainSampler(h, 4, 64, seed=7), TrainSampler(h, 4, 64, seed=7)
    pa, pb = a.plan(3), b.plan(3)
    assert np.array_equal(pa.negatives, pb.negatives) and np.array_equal(pa.users, pb.users)
    assert not np.array_equal(a.plan(4).negatives, pa.negatives)
    assert not np.array_equal(TrainSampler(h, 4, 64, seed=8).plan(3).users, pa.users)
    got = sorted(zip(pa.users.tolist(), pa.items.tolist()))
    want = sorted((u, int(i)) for u in range(h.n_users) for i in h.items_of(u))
    assert got == want
    assert np.all(np.diff(pa.bounds) <= 64 // 5)


def test_batches_grouped_by_user_with_labels_groups_and_size_limit():
    h = _history()
    s = TrainSampler(h, 4, 512, seed=0)
    n_inst = 0
    for _, sh in s.shards(0):
        bt = sh.batch
        assert bt.n_instances <= 512 and bt.n_instances == sh.n_local * 5
        assert len(set(bt.users.tolist())) == len(bt.users)  # one row per user in a batch
        for r in range(len(bt.users)):
            m = bt.mask[r]
            labels, groups, items = bt.labels[r][m], bt.group[r][m], bt.items[r][m]
            u = int(bt.users[r])
            assert set(items[labels == 1].tolist()) <= set(h.items_of(u).tolist())
            assert not set(items[labels == 0].tolist()) & set(h.items_of(u).tolist())
            for g in groups.unique():  # each group: exactly one positive and its 4 negatives
                assert labels[groups == g].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
        n_inst += bt.n_instances
    assert n_inst == len(h.indices) * 5


def test_bucketing_limits_padding():
    h = _history(n_users=300, seed=3)
    s = TrainSampler(h, 4, 512, seed=0)
    padded = real = 0
    for _, sh in s.shards(0):
        hist, mask = h.padded(sh.batch.users)
        padded += mask.numel()
        real += int(mask.sum())
    # with random user order the history padding of 40-user batches would be near 2x
    assert padded / real < 1.35


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_partition_the_global_batch(world):
    h = _history()
    one = TrainSampler(h, 4, 40, seed=5)
    ranks = [TrainSampler(h, 4, 40, seed=5, rank=r, world_size=world) for r in range(world)]
    for b in range(one.n_batches(2)):
        full = one.shard(2, b)
        parts = [r.shard(2, b) for r in ranks]
        assert sum(p.n_local for p in parts) == full.n_global == full.n_local
        assert {p.n_global for p in parts} == {full.n_global}

        def triples(bt):
            m = bt.mask
            u = bt.users[:, None].expand_as(bt.items)
            return sorted(zip(u[m].tolist(), bt.items[m].tolist(), bt.labels[m].tolist()))

        got = sorted(t for p in parts if p.n_local for t in triples(p.batch))
        assert got == triples(full.batch)


def test_make_batch_layout():
    bt = make_batch(np.array([3, 3, 5]), np.array([10, 11, 12]), np.array([[1, 2], [4, 6], [7, 8]]))
    assert bt.users.tolist() == [3, 5]
    assert bt.items.tolist() == [[10, 1, 2, 11, 4, 6], [12, 7, 8, 0, 0, 0]]
    assert bt.labels.tolist() == [[1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]]
    assert bt.mask.tolist() == [[True] * 6, [True] * 3 + [False] * 3]
    assert bt.group[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert bt.items.dtype == torch.int64


def test_negatives_from_trained_items_never_draws_an_unseen_item():
    from mmiris.data.split import UserHistory

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 6)
    items = rng.choice(30, size=len(users))  # items 30..49 never in training
    keep = np.unique(users * 50 + items)
    h = UserHistory.from_pairs(keep // 50, keep % 50, 20, 50)
    plan = TrainSampler(h, 4, 64, seed=1, negatives_from="trained").plan(0)
    trained = set(h.indices.tolist())
    assert set(plan.negatives.ravel().tolist()) <= trained
    for u, negs in zip(plan.users, plan.negatives):
        assert not set(negs.tolist()) & set(h.items_of(int(u)).tolist())  # never a positive
    everything = TrainSampler(h, 4, 64, seed=1).plan(0)
    assert set(everything.negatives.ravel().tolist()) - trained  # the default draws from all items


def test_shuffled_batches_mix_users_and_keep_every_positive_once():
    """``by_user=False`` (MF, VBPR, NeuMF): a batch mixes many users (user-grouped batches of
    the same size hold one or two), the plan is still a function of (seed, epoch), and every
    positive comes once with valid negatives."""
    h = _history(n_users=300, seed=3)
    grouped, mixed = TrainSampler(h, 4, 200, seed=2), TrainSampler(h, 4, 200, seed=2, by_user=False)
    pm = mixed.plan(1)
    assert np.array_equal(pm.users, TrainSampler(h, 4, 200, seed=2, by_user=False).plan(1).users)
    got = sorted(zip(pm.users.tolist(), pm.items.tolist()))
    assert got == sorted(zip(grouped.plan(1).users.tolist(), grouped.plan(1).items.tolist()))
    for u, negs in zip(pm.users, pm.negatives):
        assert not set(negs.tolist()) & set(h.items_of(int(u)).tolist())

    def users_per_batch(s):
        return np.mean([len(set(sh.batch.users.tolist())) for _, sh in s.shards(1)])

    # 40 positives per batch, users with 1–29 positives: grouped ≈ 3 users, mixed ≈ 36
    assert users_per_batch(grouped) < 5 and users_per_batch(mixed) > 30
    n_inst = sum(sh.batch.n_instances for _, sh in mixed.shards(1))
    assert n_inst == len(h.indices) * 5


def test_batch_order_auto_follows_whether_the_model_reads_histories():
    from mmiris.errors import MmirisError
    from mmiris.models import get_model_class
    from mmiris.train.config import TrainConfig, resolve_batch_order

    for name in ("mf", "vbpr", "neumf"):
        assert resolve_batch_order("auto", get_model_class(name)) == "shuffled"
    for name in ("fism", "nais_prod", "nais_concat", "multimodal_iris", "hybrid_iris"):
        assert resolve_batch_order("auto", get_model_class(name)) == "user"
    assert resolve_batch_order("user", get_model_class("mf")) == "user"
    with pytest.raises(MmirisError, match="batch_order 'random'"):
        TrainConfig(batch_order="random")


def test_bucketed_mixed_batches_mix_users_with_little_padding():
    """Mixed batches for a model that reads histories: many users per batch, yet padding
    close to the user-grouped order's (random mixing would pad to the longest history)."""
    h = _history(n_users=300, seed=3)
    s = TrainSampler(h, 4, 200, seed=0, by_user=False, bucket=True)
    assert sorted(zip(s.plan(0).users.tolist(), s.plan(0).items.tolist())) == sorted(
        zip(
            TrainSampler(h, 4, 200, seed=0).plan(0).users.tolist(),
            TrainSampler(h, 4, 200, seed=0).plan(0).items.tolist(),
        )
    )

    def users_and_padding(sampler):
        users, padded, real = [], 0, 0
        for _, sh in sampler.shards(0):
            users.append(len(set(sh.batch.users.tolist())))
            _, mask = h.padded(sh.batch.users)
            padded += mask.numel()
            real += int(mask.sum())
        return np.mean(users), padded / real

    mixed_users, mixed_pad = users_and_padding(s)
    random_users, random_pad = users_and_padding(TrainSampler(h, 4, 200, seed=0, by_user=False))
    assert mixed_users > 20 and mixed_pad < 1.2 and random_pad > 1.4
