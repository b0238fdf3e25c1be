"""NCF pre-split ingestion: given test items and negatives kept exactly, item map joins."""

import numpy as np
import pytest

from mmiris.cli import main
from mmiris.data.split import load_split
from mmiris.errors import InputError
from mmiris.pipelines.ingest import ingest_ncf

N_USERS, N_ITEMS, N_NEG = 6, 30, 5


def write_ncf(folder, seed=0, negatives=None):
    """Tiny NCF files: 6 users, 30 items, 5 negatives per test row (user 0's test item is
    among its own negatives, like the published ML-1M file's quirk)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train, test, neg_lines, truth = [], [], [], {}
    for u in range(N_USERS):
        items = rng.choice(N_ITEMS - 1, size=6, replace=False)
        if u == 0:
            items[0] = N_ITEMS - 1  # every id 0..29 can be valid: the highest is in train
        for i in items[:-1]:
            train.append(f"{u}\t{i}\t{int(rng.integers(1, 6))}\t0")
        t = int(items[-1])
        test.append(f"{u}\t{t}\t5\t{978300000 + u}")
        pool = [j for j in range(N_ITEMS) if j not in set(items.tolist())]
        negs = [int(x) for x in rng.choice(pool, N_NEG, replace=False)]
        if u == 0:
            negs[0] = t
        truth[u] = (t, negs)
        neg_lines.append(f"({u},{t})\t" + "\t".join(map(str, negs)))
    (folder / "tiny.train.rating").write_text("\n".join(train) + "\n")
    (folder / "tiny.test.rating").write_text("\n".join(test) + "\n")
    (folder / "tiny.test.negative").write_text("\n".join(negatives or neg_lines) + "\n")
    return folder, truth


def files(folder):
    return folder / "tiny.train.rating", folder / "tiny.test.rating", folder / "tiny.test.negative"


def test_split_keeps_given_test_items_and_negatives_exactly(store, tmp_path):
    folder, truth = write_ncf(tmp_path / "ncf")
    res = ingest_ncf(store, *files(folder), seed=3)
    s = load_split(store, res.split)
    assert s.n_users == N_USERS and s.n_items == N_ITEMS
    for u, t, negs in zip(s.test_users, s.test_items, s.test_negatives):
        assert (t, negs.tolist()) == truth[int(u)]
    stats = store.manifest(res.split).stats
    assert stats["test_item_in_negatives"] == 1 and stats["test_negatives_from_file"] is True
    # validation: one train row per user, removed from train, negatives never the user's items
    assert sorted(s.valid_users.tolist()) == list(range(N_USERS))
    inter = store.read_table(res.interactions, "interactions")
    assert inter.num_rows == N_USERS * 6  # train + test rows
    seen = set(zip(inter.column("user_id").to_pylist(), inter.column("item_id").to_pylist()))
    train = set(zip(s.train_users.tolist(), s.train_items.tolist()))
    assert len(train) == N_USERS * 4
    for u, v, negs in zip(s.valid_users, s.valid_items, s.valid_negatives):
        assert (u, v) in seen and (u, v) not in train
        assert len(set(negs.tolist())) == N_NEG and not any((u, j) in seen for j in negs)
    # deterministic for the seed; another seed, another validation choice (same test)
    again = load_split(store, ingest_ncf(store, *files(folder), seed=3).split)
    assert np.array_equal(again.valid_negatives, s.valid_negatives)
    other = load_split(store, ingest_ncf(store, *files(folder), seed=4).split)
    assert np.array_equal(other.test_negatives, s.test_negatives)
    assert not np.array_equal(other.valid_negatives, s.valid_negatives)


def test_item_map_joins_movielens_metadata(store, tmp_path):
    folder, _ = write_ncf(tmp_path / "ncf")
    imap = tmp_path / "items.tsv"
    imap.write_text("ncf_item\tmovie_id\texact\n0\t1193\tTrue\n1\t661\tFalse\n2\t-1\tFalse\n")
    movies = tmp_path / "movies.dat"
    movies.write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n".encode("iso-8859-1")
    )
    links = tmp_path / "links.csv"
    links.write_text("movieId,imdbId,tmdbId\n1193,0073486,510\n")
    res = ingest_ncf(store, *files(folder), item_map=imap, movies=movies, links=links)
    items = store.read_table(res.items).to_pylist()
    assert len(items) == N_ITEMS and [r["item_id"] for r in items] == list(range(N_ITEMS))
    assert items[0]["source_id"] == "1193" and items[0]["title"].startswith("One Flew")
    assert items[0]["imdb_id"] == "tt0073486" and items[0]["metadata_exact"] is True
    assert items[1]["genres"] == ["Animation", "Children's", "Musical"]
    assert items[1]["metadata_exact"] is False  # a best-guess mapping
    assert items[2]["source_id"] == "ncf:2" and items[2]["title"] is None
    stats = store.manifest(res.items).stats
    assert stats["items_metadata_inexact"] == 1 and stats["items_without_metadata"] == N_ITEMS - 2


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "(0,{t})\t1\t2\t3\t4\t30",
            r"tiny.test.negative:1: field 6: negative item id 30 is out of range; "
            r"expected 0..29",
        ),
        ("(0,{t})\t1\tx\t3\t4\t5", r"tiny.test.negative:1: field 3: expected an integer item id, got 'x'"),
        ("(0,{wrong})\t1\t2\t3\t4\t5", r"tiny.test.negative:1: field 1: \(0,\d+\) does not match the test file"),
        ("0,{t} 1 2 3 4 5", r"tiny.test.negative:1: field 1: expected '\(user,item\)'"),
    ],
)
def test_bad_negatives_file_names_file_line_field(store, tmp_path, line, message):
    folder, truth = write_ncf(tmp_path / "ncf")
    t = truth[0][0]
    lines = (folder / "tiny.test.negative").read_text().splitlines()
    lines[0] = line.format(t=t, wrong=(t + 1) % N_ITEMS)
    (folder / "tiny.test.negative").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message):
        ingest_ncf(store, *files(folder))
    assert store.names() == []  # nothing half-published


def test_negatives_width_missing_line_and_duplicate_test_user(store, tmp_path):
    folder, _ = write_ncf(tmp_path / "ncf")
    neg = folder / "tiny.test.negative"
    lines = neg.read_text().splitlines()
    neg.write_text("\n".join([lines[0], lines[1].rsplit("\t", 1)[0], *lines[2:]]) + "\n")
    with pytest.raises(InputError, match=r"tiny.test.negative:2: 4 negatives, expected 5"):
        ingest_ncf(store, *files(folder))
    neg.write_text("\n".join(lines) + "\n")
    neg.write_text("\n".join(neg.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(InputError, match=r"no negatives line for 1 test user\(s\), e.g. user 5"):
        ingest_ncf(store, *files(folder))
    folder, _ = write_ncf(tmp_path / "ncf2")
    test = folder / "tiny.test.rating"
    test.write_text(test.read_text() + "0\t3\t5\t0\n")
    with pytest.raises(InputError, match=r"user 0 has test rows 1 and 7; expected one test item per user"):
        ingest_ncf(store, *files(folder))


def test_cli_folder_prints_refs(store, tmp_path, capsys):
    folder, _ = write_ncf(tmp_path / "ncf")
    assert main(["--store", store.root, "ingest", "ncf", str(folder), "--name-prefix", "tiny-"]) == 0
    out = capsys.readouterr().out.split()
    refs = dict(zip(out[::2], out[1::2]))
    assert set(refs) == {"interactions", "items", "split"}
    assert refs["split"].startswith("tiny-split@")
    assert load_split(store, refs["split"]).test_negatives.shape == (N_USERS, N_NEG)
    # --movies without --item-map is refused with one line, exit 2
    assert main(["--store", store.root, "ingest", "ncf", str(folder), "--movies", "x.dat"]) == 2
    assert "need --item-map" in capsys.readouterr().err
