"""Sparse-user and cold-item settings derived from a leave-one-out split (mmiris/splits/settings.py)."""

import numpy as np
import pytest

from mmiris.data.split import SplitData
from mmiris.errors import InputError
from mmiris.splits.leave_one_out import leave_one_out
from mmiris.splits.settings import cold_items, sparse_users

N_USERS, N_ITEMS = 40, 400


def _split(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 60, N_USERS)
    users = np.repeat(np.arange(N_USERS), lengths)
    items = np.concatenate([rng.choice(N_ITEMS, n, replace=False) for n in lengths])
    loo = leave_one_out(users, items, None, N_USERS, N_ITEMS, mode="random", n_negatives=20, seed=seed)
    return SplitData(
        None,
        N_USERS,
        N_ITEMS,
        loo.train_user,
        loo.train_item,
        loo.valid.user,
        loo.valid.item,
        loo.valid.negatives,
        loo.test.user,
        loo.test.item,
        loo.test.negatives,
    )


def test_sparse_keeps_a_fraction_per_user_and_the_same_held_out_rows():
    split = _split()
    out = sparse_users(split, keep=0.2, seed=1)
    full_counts = np.bincount(split.train_users, minlength=N_USERS)
    kept_counts = np.bincount(out.train_user, minlength=N_USERS)
    has = full_counts > 0
    assert (kept_counts[has] == np.maximum(1, np.ceil(0.2 * full_counts[has]))).all()
    full_pairs = set(zip(split.train_users.tolist(), split.train_items.tolist()))
    assert set(zip(out.train_user.tolist(), out.train_item.tolist())) <= full_pairs
    np.testing.assert_array_equal(out.test.item, split.test_items)
    np.testing.assert_array_equal(out.test.negatives, split.test_negatives)
    np.testing.assert_array_equal(out.valid.negatives, split.valid_negatives)
    assert out.stats["setting"] == "sparse" and out.stats["keep"] == 0.2
    again = sparse_users(split, keep=0.2, seed=1)
    np.testing.assert_array_equal(again.train_item, out.train_item)  # deterministic for a seed
    other = sparse_users(split, keep=0.2, seed=2)
    assert not np.array_equal(other.train_item, out.train_item)


def test_cold_items_are_absent_from_train_and_every_interaction_is_a_test_case():
    split = _split()
    out = cold_items(split, fraction=0.25, seed=0, n_negatives=20)
    cold = set(out.test.item.tolist())
    assert out.stats["n_cold_items"] >= len(cold) and out.stats["setting"] == "cold"
    assert not cold & set(out.train_item.tolist())
    assert not cold & set(out.valid.item.tolist())
    everything = set(
        zip(
            np.concatenate([split.train_users, split.valid_users, split.test_users]).tolist(),
            np.concatenate([split.train_items, split.valid_items, split.test_items]).tolist(),
        )
    )
    want = sorted((u, i) for u, i in everything if i in cold)
    got = sorted(zip(out.test.user.tolist(), out.test.item.tolist()))
    assert got == want  # each cold interaction exactly once
    positives = {}
    for u, i in everything:
        positives.setdefault(u, set()).add(i)
    cold_all = set(np.unique(out.test.negatives).tolist()) | cold
    assert len(cold_all) <= out.stats["n_cold_items"]
    for u, _i, negs in zip(out.test.user, out.test.item, out.test.negatives):
        assert len(set(negs.tolist())) == 20  # distinct
        assert not set(negs.tolist()) & positives[int(u)]  # never a positive of the user (nor the case)
    # warm rows are untouched
    warm_train = [(u, i) for u, i in zip(split.train_users.tolist(), split.train_items.tolist()) if i not in cold]
    assert sorted(zip(out.train_user.tolist(), out.train_item.tolist())) == sorted(warm_train)


def test_cold_negatives_are_cold_items_only():
    split = _split(seed=2)
    out = cold_items(split, fraction=0.3, seed=5, n_negatives=10)
    train_items = set(out.train_item.tolist())
    assert not set(out.test.negatives.ravel().tolist()) & train_items  # negatives never warm


def test_bad_fractions_are_clear_errors():
    split = _split()
    with pytest.raises(InputError, match="--keep"):
        sparse_users(split, keep=0.0)
    with pytest.raises(InputError, match="--cold-items"):
        cold_items(split, fraction=1.0)
    with pytest.raises(InputError, match="cannot give each case"):
        cold_items(split, fraction=0.01, n_negatives=99)


def test_cold_validation_holds_out_other_items_and_leaves_the_test_as_it_was():
    split = _split(seed=3)
    plain = cold_items(split, fraction=0.25, seed=4, n_negatives=20)
    out = cold_items(split, fraction=0.25, seed=4, n_negatives=20, valid_fraction=0.2)
    # the test: the same cases and negatives as without cold validation
    for field in ("user", "item", "negatives"):
        np.testing.assert_array_equal(getattr(out.test, field), getattr(plain.test, field))
    test_items = set(plain.test.item.tolist()) | set(plain.test.negatives.ravel().tolist())
    vcold = set(out.valid.item.tolist()) | set(out.valid.negatives.ravel().tolist())
    assert len(vcold) <= out.stats["n_cold_valid_items"] == round(0.2 * len(np.unique(split.train_items)))
    assert not vcold & test_items  # disjoint from the test's cold items
    assert not vcold & set(out.train_item.tolist())  # and never trained on
    # train: the plain cold split's, less every interaction with a validation item
    want = sorted((u, i) for u, i in zip(plain.train_user.tolist(), plain.train_item.tolist()) if i not in vcold)
    assert sorted(zip(out.train_user.tolist(), out.train_item.tolist())) == want
    # validation: one case per user who interacted with a validation item, one of that user's
    positives: dict[int, set] = {}
    for u, i in zip(
        np.concatenate([split.train_users, split.valid_users, split.test_users]).tolist(),
        np.concatenate([split.train_items, split.valid_items, split.test_items]).tolist(),
    ):
        positives.setdefault(u, set()).add(i)
    pool = {i for i in range(N_ITEMS) if i not in test_items} & set(np.unique(split.train_items).tolist())
    held = {u for u, items in positives.items() if items & set(out.valid.item.tolist())}
    assert sorted(out.valid.user.tolist()) == sorted(set(out.valid.user.tolist()))  # one case per user
    assert set(out.valid.user.tolist()) == held and len(out.valid.user) > 0
    for u, i, negs in zip(out.valid.user.tolist(), out.valid.item.tolist(), out.valid.negatives):
        assert i in positives[u] and i in pool
        assert len(set(negs.tolist())) == 20 and not set(negs.tolist()) & positives[u]
        assert set(negs.tolist()) <= vcold
    assert out.stats["validation"] == "cold" and out.stats["n_valid"] == len(out.valid.user)
    again = cold_items(split, fraction=0.25, seed=4, n_negatives=20, valid_fraction=0.2)
    np.testing.assert_array_equal(again.valid.item, out.valid.item)  # deterministic for a seed
    assert out.stats["valid_users_without_negatives"] == 0
    # few validation items: a user with so many of them that fewer than 20 are left gets no
    # validation case, and is counted
    n_warm = len(np.unique(split.train_items))
    tight = cold_items(split, fraction=0.25, seed=4, n_negatives=20, valid_fraction=23 / n_warm)
    assert tight.stats["n_cold_valid_items"] == 23
    # the reference: the 23 items drawn as the docstring says (its own generator, from the warm
    # items that are not the test's cold items), then per user "a case iff 20 are left"
    cold = set(plain.test.item.tolist())  # every cold item has interactions, so all are test items
    pool = np.array([i for i in np.unique(split.train_items).tolist() if i not in cold])
    vitems = set(np.random.default_rng([4, 1]).choice(pool, 23, replace=False).tolist())
    counts = {u: len(items & vitems) for u, items in positives.items() if items & vitems}
    dropped = {u for u, c in counts.items() if 23 - c < 20}
    assert dropped and set(tight.valid.user.tolist()) == set(counts) - dropped
    assert tight.stats["valid_users_without_negatives"] == len(dropped)
    for u, i, negs in zip(tight.valid.user.tolist(), tight.valid.item.tolist(), tight.valid.negatives):
        assert i in vitems and set(negs.tolist()) <= vitems and not set(negs.tolist()) & positives[u]
    with pytest.raises(InputError, match="--cold-valid 0.8: expected a fraction in"):
        cold_items(split, fraction=0.25, valid_fraction=0.8)
    with pytest.raises(InputError, match="--cold-valid 0.01: .* cannot give each case 20 negatives"):
        cold_items(split, fraction=0.25, n_negatives=20, valid_fraction=0.01)
