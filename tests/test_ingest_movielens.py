"""MovieLens 100K / 1M / CSV ingestion from folders and zip archives into artifacts."""

import zipfile

import pytest

from mmiris.ingest.items import imdb_tt, year_from_title
from mmiris.pipelines.ingest import ingest_movielens

ML1M_RATINGS = """\
1::10::5::978300760
1::20::3::978302109
1::30::4::978301968
2::10::4::978298709
2::40::2::978299000
2::20::5::978299100
3::30::1::978297000
3::10::3::978297100
3::99::4::978297200
"""
ML1M_MOVIES = (
    "10::Toy Story (1995)::Animation|Children's|Comedy\n"
    "20::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n"
    "30::Heat (1995)::Action|Crime|Thriller\n"
    "40::Sabrina (1995)::Comedy|Romance\n"
    "50::Never Rated (1999)::Drama\n"
)


def write_ml1m(folder, ratings=ML1M_RATINGS, movies=ML1M_MOVIES, links=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(ratings, encoding="iso-8859-1")
    (folder / "movies.dat").write_text(movies, encoding="iso-8859-1")
    (folder / "users.dat").write_text("1::F::1::10::48067\n", encoding="iso-8859-1")
    if links:
        (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n10,0114709,862\n30,113277,\n")
    return folder


def test_ml1m_folder_dense_ids_metadata_and_stats(store, tmp_path):
    res = ingest_movielens(store, write_ml1m(tmp_path / "ml-1m"))
    inter = store.read_table(res.interactions, "interactions").to_pylist()
    users = store.read_table(res.interactions, "users").to_pylist()
    items = {r["source_id"]: r for r in store.read_table(res.items).to_pylist()}
    assert len(inter) == 9
    # dense ids in sorted source order; the mapping back is kept
    assert [u["source_id"] for u in users] == ["1", "2", "3"]
    assert sorted(items) == ["10", "20", "30", "40", "99"]
    assert [items[s]["item_id"] for s in ["10", "20", "30", "40", "99"]] == [0, 1, 2, 3, 4]
    first = inter[0]
    assert (first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == (0, 0, 5.0, 978300760)
    # ISO-8859-1 decoded, year parsed, genres split, IMDb id from links.csv
    assert items["20"]["title"] == "Cité des enfants perdus, La (1995)"
    assert items["10"]["year"] == 1995 and items["10"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert items["10"]["imdb_id"] == "tt0114709" and items["30"]["imdb_id"] == "tt0113277"
    assert items["10"]["metadata_exact"] is True
    # a rated movie missing from movies.dat keeps a row without metadata (counted)
    assert items["99"]["title"] is None
    m_items, m_inter = store.manifest(res.items), store.manifest(res.interactions)
    assert m_items.stats["items_without_metadata"] == 1
    assert m_items.stats["movies_without_interactions"] == 1  # movie 50
    assert m_inter.stats["n_users"] == 3 and m_inter.stats["n_items"] == 5
    assert m_inter.stats["duplicates_dropped"] == 0
    assert m_items.parents == [str(res.interactions)]


def test_same_files_same_versions_without_reparsing(store, tmp_path, monkeypatch):
    folder = write_ml1m(tmp_path / "ml-1m")
    a = ingest_movielens(store, folder)
    import mmiris.ingest.movielens as ml

    monkeypatch.setattr(ml, "read_movielens", lambda *a, **k: pytest.fail("re-parsed"))
    assert ingest_movielens(store, folder) == a
    monkeypatch.undo()
    (folder / "ratings.dat").write_text(ML1M_RATINGS + "4::10::5::978300000\n", encoding="iso-8859-1")
    b = ingest_movielens(store, folder)
    assert b.interactions != a.interactions and store.latest("interactions") == b.interactions


def test_official_zip_with_nested_folder_and_prefix(store, tmp_path):
    folder = write_ml1m(tmp_path / "src" / "ml-1m")
    zpath = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in folder.iterdir():
            z.write(p, f"ml-1m/{p.name}")
    res = ingest_movielens(store, zpath, name_prefix="ml1m-")
    assert res.interactions.name == "ml1m-interactions" and res.items.name == "ml1m-items"
    assert store.read_table(res.interactions, "interactions").num_rows == 9
    assert store.manifest(res.interactions).info["source"] == str(zpath.resolve())


def test_ml100k(store, tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t878887116\n")
    genres = [
        "unknown",
        "Action",
        "Adventure",
        "Animation",
        "Children's",
        "Comedy",
        "Crime",
        "Documentary",
        "Drama",
        "Fantasy",
        "Film-Noir",
        "Horror",
        "Musical",
        "Mystery",
        "Romance",
        "Sci-Fi",
        "Thriller",
        "War",
        "Western",
    ]
    (d / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)))
    flags242 = ["0"] * 19
    flags242[3] = flags242[5] = "1"
    flags302 = ["0"] * 19
    flags302[8] = "1"
    (d / "u.item").write_bytes(
        (
            "242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|"
            + "|".join(flags242)
            + "\n"
            + "302|L.A. Confidential|01-Jan-1997||http://x|"
            + "|".join(flags302)
            + "\n"
        ).encode("iso-8859-1")
    )
    (d / "u.user").write_text("1|24|M|technician|85711\n")
    res = ingest_movielens(store, d / "u.data")  # a file inside the folder works too
    items = {r["source_id"]: r for r in store.read_table(res.items).to_pylist()}
    assert items["242"]["genres"] == ["Animation", "Comedy"] and items["242"]["year"] == 1996
    assert items["302"]["year"] == 1997  # from the release date when the title has none
    assert items["302"]["imdb_id"] is None
    users = store.read_table(res.interactions, "users").column("source_id").to_pylist()
    assert users == ["186", "196"]


def test_csv_release_with_quotes_and_links(store, tmp_path):
    d = tmp_path / "ml-latest-small"
    d.mkdir()
    (d / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,2.5,964982224\n"
    )
    (d / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n"
        '3,"American President, The (1995)",(no genres listed)\n'
    )
    (d / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n3,0112346,\n")
    res = ingest_movielens(store, d)
    items = {r["source_id"]: r for r in store.read_table(res.items).to_pylist()}
    assert items["3"]["title"] == "American President, The (1995)" and items["3"]["genres"] is None
    assert items["3"]["imdb_id"] == "tt0112346"
    ratings = store.read_table(res.interactions, "interactions").column("rating").to_pylist()
    assert ratings == [4.0, 4.5, 2.5]


def test_title_helpers():
    assert year_from_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == 1995
    assert year_from_title("unknown") is None
    assert imdb_tt("114709") == "tt0114709" and imdb_tt("tt1234567") == "tt1234567" and imdb_tt("") is None
