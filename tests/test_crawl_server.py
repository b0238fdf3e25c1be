"""The local OMDb-compatible server: API shapes, errors, posters, faults, request log."""

import json
import logging

import pytest
import requests

from mmiris.testing.crawl import record, write_posters
from mmiris.testing.omdb_server import Catalogue, Faults, OmdbServer

KEY = "server-test-key-93a1"


@pytest.fixture()
def catalogue(tmp_path):
    write_posters(tmp_path / "posters")
    recs = [
        record(1, "The Shawshank Redemption", 1994, "tt0111161", plot="Two men bond. Over years."),
        record(2, "Shawshank", 2001, "tt7000002", poster=None),
        record(3, "Toy Story", 1995),
    ]  # no imdbID: synthetic tt9 + movie id
    return Catalogue(recs, tmp_path / "posters")


def get(srv, **params):
    r = requests.get(srv.url, params=params, timeout=5)
    return r.status_code, r.json()


def test_lookup_shapes_and_errors(catalogue):
    with OmdbServer(catalogue, {KEY}) as srv:
        s, obj = get(srv, apikey=KEY, i="tt0111161", plot="full")
        assert s == 200 and obj["Title"] == "The Shawshank Redemption" and obj["Response"] == "True"
        assert obj["Plot"] == "Two men bond. Over years." and "movie_id" not in obj
        assert "poster_file" not in obj and obj["Poster"].startswith(srv.url + "posters/")
        assert get(srv, apikey=KEY, i="tt0111161")[1]["Plot"] == "Two men bond."  # short default
        assert get(srv, apikey=KEY, i="tt0000001") == (200, {"Response": "False", "Error": "Incorrect IMDb ID."})
        assert get(srv, apikey=KEY, i="123") == (200, {"Response": "False", "Error": "Incorrect IMDb ID."})
        assert get(srv, apikey=KEY, t="the shawshank redemption!", y="1994")[1]["imdbID"] == "tt0111161"
        assert get(srv, apikey=KEY, t="The Shawshank Redemption", y="1995") == (
            200,
            {"Response": "False", "Error": "Movie not found!"},
        )
        assert get(srv, apikey=KEY, t="Toy Story")[1]["imdbID"] == "tt90000003"
        assert get(srv, apikey=KEY, i="tt0111161", plot="full")[1]["Poster"] != "N/A"
        assert get(srv, apikey=KEY, t="Shawshank")[1]["Poster"] == "N/A"
        s, obj = get(srv, apikey=KEY, s="shawshank")
        assert s == 200 and obj["totalResults"] == "2" and obj["Response"] == "True"
        assert [h["imdbID"] for h in obj["Search"]] == ["tt0111161", "tt7000002"]
        assert set(obj["Search"][0]) == {"Title", "Year", "imdbID", "Type", "Poster"}
        assert get(srv, apikey=KEY, s="shawshank", y="2001")[1]["Search"][0]["Year"] == "2001"
        assert get(srv, apikey=KEY, s="nothing like it")[1]["Error"] == "Movie not found!"
        assert get(srv, apikey=KEY, s="a")[1]["Error"] == "Too many results."
        assert get(srv, apikey="wrong", i="tt0111161") == (401, {"Response": "False", "Error": "Invalid API key!"})
        assert get(srv, i="tt0111161") == (401, {"Response": "False", "Error": "No API key provided."})
        poster = requests.get(get(srv, apikey=KEY, i="tt0111161")[1]["Poster"], timeout=5)
        assert poster.status_code == 200 and poster.content[:3] == b"\xff\xd8\xff"
        assert requests.get(srv.url + "posters/nope.jpg", timeout=5).status_code == 404


def test_daily_limit_and_request_log(catalogue):
    with OmdbServer(catalogue, {KEY}, daily_limit=2) as srv:
        assert get(srv, apikey=KEY, i="tt0111161")[0] == 200
        assert get(srv, apikey=KEY, i="tt0111161")[0] == 200
        assert get(srv, apikey=KEY, i="tt0111161") == (401, {"Response": "False", "Error": "Request limit reached!"})
        stats = requests.get(srv.url + "__stats", timeout=5).json()
        assert stats["requests"] == 3 and stats["by_outcome"] == {"401": 1, "ok": 2}
        assert stats["successful_requests_repeated"] == 1 and stats["repeated_keys"] == ["/?i=tt0111161"]
        assert KEY not in json.dumps(srv.log.per_key())
        srv.set_limit(None)
        assert get(srv, apikey=KEY, i="tt0111161")[0] == 200


def test_faults_are_seeded_per_key_and_attempt(catalogue):
    faults = Faults(http_5xx=0.3, http_429=0.1, timeout=0.1, truncated=0.1, invalid_json=0.1, hang_s=0.3, seed=7)
    a = OmdbServer(catalogue, faults=faults)
    draws = [a.draw_fault(f"/?i=tt{i}", n) for i in range(200) for n in (1, 2)]
    b = OmdbServer(catalogue, faults=faults)
    assert draws == [b.draw_fault(f"/?i=tt{i}", n) for i in range(200) for n in (1, 2)]
    kinds = {d[0] for d in draws}
    assert {"5xx", "429", "timeout", "truncated", "invalid_json", None} <= kinds
    share = sum(d[0] is not None for d in draws) / len(draws)
    assert 0.55 < share < 0.85
    a._httpd.server_close()
    b._httpd.server_close()


def test_fault_kinds_on_the_wire(catalogue):
    cases = {
        "5xx": Faults(http_5xx=1.0),
        "429": Faults(http_429=1.0),
        "invalid_json": Faults(invalid_json=1.0),
        "truncated": Faults(truncated=1.0),
        "timeout": Faults(timeout=1.0, hang_s=0.5),
    }
    for kind, faults in cases.items():
        with OmdbServer(catalogue, faults=faults) as srv:
            url = srv.url + "?apikey=k&i=tt0111161"
            if kind == "timeout":
                with pytest.raises(requests.Timeout):
                    requests.get(url, timeout=0.2)
            elif kind == "truncated":
                with pytest.raises(requests.exceptions.ChunkedEncodingError):
                    _ = requests.get(url, timeout=2).content
            else:
                r = requests.get(url, timeout=2)
                if kind == "invalid_json":
                    assert r.status_code == 200
                    with pytest.raises(ValueError):
                        r.json()
                else:
                    assert r.status_code == int(kind[:3].replace("5xx", "500")) or r.status_code == 503
            assert srv.log.stats()["by_outcome"] == {f"fault:{kind}": 1}


def test_server_log_lines_hide_the_key(catalogue, caplog):
    caplog.set_level(logging.DEBUG)
    with OmdbServer(catalogue, {KEY}) as srv:
        get(srv, apikey=KEY, i="tt0111161")
    server_lines = [r.getMessage() for r in caplog.records if r.name == "mmiris.testing.omdb_server"]
    assert any("i=tt0111161" in line for line in server_lines)
    assert not any(KEY in line for line in server_lines)
