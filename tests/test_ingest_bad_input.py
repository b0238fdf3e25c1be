"""Bad input: a clear error naming file, line and field, or a counted treatment in stats;
never a deep traceback, never a half-published artifact."""

import pytest

from mmiris.cli import main
from mmiris.errors import InputError
from mmiris.pipelines.ingest import ingest_movielens
from tests.test_ingest_movielens import ML1M_MOVIES, ML1M_RATINGS, write_ml1m


def _lines(n_bad_at, bad):
    lines = ML1M_RATINGS.splitlines()
    lines.insert(n_bad_at - 1, bad)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            "1::10::5",
            r"ratings.dat:3: expected 4 fields \(user::item::rating::timestamp\) separated by "
            r"'::', found 3",
        ),
        ("1::10::five::978300760", r"ratings.dat:3: field 'rating' \(column 3\): expected a number, got 'five'"),
        ("x1::10::5::978300760", r"ratings.dat:3: field 'user' \(column 1\): expected an integer, got 'x1'"),
    ],
)
def test_malformed_line_names_file_line_field(store, tmp_path, bad, message):
    folder = write_ml1m(tmp_path / "ml", ratings=_lines(3, bad))
    with pytest.raises(InputError, match=message):
        ingest_movielens(store, folder)
    assert store.names() == []


def test_malformed_lines_skipped_and_counted(store, tmp_path):
    folder = write_ml1m(tmp_path / "ml", ratings=_lines(3, "1::10::5") + "garbage\n")
    res = ingest_movielens(store, folder, on_bad_lines="skip")
    assert store.manifest(res.interactions).stats["malformed_lines_skipped"] == 2
    assert store.read_table(res.interactions, "interactions").num_rows == 9


def test_wrong_separator_says_so(store, tmp_path):
    folder = write_ml1m(tmp_path / "ml", ratings=ML1M_RATINGS.replace("::", ","))
    with pytest.raises(
        InputError,
        match=r"ratings.dat:1: expected 4 fields .* separated by '::', "
        r"found 1 — is the separator right\? Line starts '1,10,5",
    ):
        ingest_movielens(store, folder)


def test_unknown_and_wrong_encodings(store, tmp_path):
    folder = write_ml1m(tmp_path / "ml")
    with pytest.raises(InputError, match=r"unknown encoding 'klingon'"):
        ingest_movielens(store, folder, encoding="klingon")
    # movies.dat is ISO-8859-1: line 2 holds 'é' as byte 0xe9, which is not UTF-8
    with pytest.raises(InputError, match=r"movies.dat:2: byte b'\\xe9' cannot be decoded as utf-8"):
        ingest_movielens(store, folder, encoding="utf-8")
    assert store.names() == []
    # the default detects it and reads the title right
    res = ingest_movielens(store, folder)
    titles = store.read_table(res.items).column("title").to_pylist()
    assert "Cité des enfants perdus, La (1995)" in titles


def test_duplicate_interactions_kept_once_latest_wins(store, tmp_path):
    ratings = ML1M_RATINGS + "1::10::2::978400000\n1::10::1::978200000\n"
    res = ingest_movielens(store, write_ml1m(tmp_path / "ml", ratings=ratings))
    t = store.read_table(res.interactions, "interactions").to_pylist()
    assert len(t) == 9
    (row,) = [r for r in t if (r["user_id"], r["item_id"]) == (0, 0)]
    assert (row["rating"], row["timestamp"]) == (2.0, 978400000)
    assert store.manifest(res.interactions).stats["duplicates_dropped"] == 2


def test_not_movielens_and_missing_path(store, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.txt").write_text("x")
    with pytest.raises(InputError, match=r"not a MovieLens dataset; expected one of"):
        ingest_movielens(store, tmp_path / "other")
    with pytest.raises(InputError, match=r"nowhere: no such file or folder"):
        ingest_movielens(store, tmp_path / "nowhere")


def test_malformed_metadata_fails_before_anything_is_published(store, tmp_path):
    folder = write_ml1m(tmp_path / "ml", movies=ML1M_MOVIES + "60|Pipe Separated (1999)|Drama\n")
    with pytest.raises(InputError, match=r"movies.dat:6: expected 3 fields"):
        ingest_movielens(store, folder)
    assert store.names() == []


def test_cli_prints_one_line_error_and_exits_2(store, tmp_path, capsys):
    folder = write_ml1m(tmp_path / "ml", ratings=_lines(2, "1::10"))
    assert main(["--store", store.root, "ingest", "movielens", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmiris ingest: error: ") and "ratings.dat:2:" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    folder = write_ml1m(tmp_path / "ok")
    assert main(["--store", store.root, "ingest", "movielens", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "interactions  interactions@" in out and "items         items@" in out
