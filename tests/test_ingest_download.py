"""Downloads against a real HTTP server on 127.0.0.1: checksum (GroupLens-style .md5 files),
resume with HTTP Range after a dropped connection, cache, clear errors."""

import hashlib
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmiris.errors import InputError
from mmiris.ingest.download import fetch
from mmiris.pipelines.ingest import ingest_movielens
from tests.test_ingest_movielens import write_ml1m


class Files(BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with Range support; drops the first transfer of each
    path in ``drop_once`` halfway through; logs (path, Range header)."""

    files: dict = {}
    drop_once: set = set()
    log: list = []

    def do_GET(self):
        path = self.path.split("?")[0]
        self.log.append((path, self.headers.get("Range")))
        body = self.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if path in self.drop_once:
            self.drop_once.discard(path)
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Files.files, Files.drop_once, Files.log = {}, set(), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield Files, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _zip(tmp_path):
    folder = write_ml1m(tmp_path / "src" / "ml-1m")
    zpath = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(folder.iterdir()):
            z.write(p, f"ml-1m/{p.name}")
        z.writestr("ml-1m/padding.bin", bytes(range(256)) * 4096)  # 1 MiB, stored: dropped halfway
    return zpath.read_bytes()


def test_url_zip_verified_resumed_and_cached(store, tmp_path, server):
    handler, base = server
    data = _zip(tmp_path)
    md5 = hashlib.md5(data).hexdigest()
    handler.files = {"/ml-1m.zip": data, "/ml-1m.zip.md5": f"MD5 (ml-1m.zip) = {md5}\n".encode()}
    handler.drop_once = {"/ml-1m.zip"}
    cache = tmp_path / "cache"
    res = ingest_movielens(store, f"{base}/ml-1m.zip", cache=cache)
    assert store.read_table(res.interactions, "interactions").num_rows == 9
    gets = [r for p, r in handler.log if p == "/ml-1m.zip"]
    assert gets[0] is None and gets[1] is not None and gets[1].startswith("bytes=")
    assert int(gets[1][6:-1]) > 0  # resumed where the dropped transfer stopped
    assert store.manifest(res.interactions).info["source"] == f"{base}/ml-1m.zip"
    # cached: no second download, same artifacts
    n = len(handler.log)
    assert ingest_movielens(store, f"{base}/ml-1m.zip", cache=cache) == res
    assert len(handler.log) == n


def test_checksum_mismatch_deletes_and_fails(tmp_path, server):
    handler, base = server
    handler.files = {"/d.zip": b"x" * 1000, "/d.zip.md5": b"0" * 32 + b"  d.zip\n"}
    with pytest.raises(InputError, match=r"d.zip: md5 checksum mismatch, expected 0{32}, got "):
        fetch(f"{base}/d.zip", cache=tmp_path / "c")
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


def test_explicit_checksum_and_unpublished_checksum(tmp_path, server):
    handler, base = server
    handler.files = {"/a.bin": b"abc" * 100}
    path = fetch(f"{base}/a.bin", cache=tmp_path / "c")  # no .md5/.sha256: not verified, still works
    assert path.read_bytes() == b"abc" * 100
    sha = hashlib.sha256(b"abc" * 100).hexdigest()
    handler.files["/b.bin"] = b"abc" * 100
    assert fetch(f"{base}/b.bin", cache=tmp_path / "c", checksum=f"sha256:{sha}").exists()
    with pytest.raises(InputError, match=r"checksum 'crc:1': expected 'md5:<32 hex>'"):
        fetch(f"{base}/b.bin", cache=tmp_path / "d", checksum="crc:1")


def test_http_error_is_clear_and_redacted(tmp_path, server):
    _, base = server
    with pytest.raises(InputError) as exc:
        fetch(f"{base}/missing.zip?apikey=SECRET123", cache=tmp_path / "c")
    assert "HTTP 404" in str(exc.value) and "apikey=***" in str(exc.value)
    assert "SECRET123" not in str(exc.value)


def test_part_file_of_an_earlier_run_is_resumed(tmp_path, server):
    handler, base = server
    body = bytes(range(256)) * 64
    handler.files = {"/big.bin": body, "/big.bin.md5": hashlib.md5(body).hexdigest().encode()}
    url = f"{base}/big.bin"
    folder = tmp_path / "c" / hashlib.sha256(url.encode()).hexdigest()[:16]
    folder.mkdir(parents=True)
    (folder / "big.bin.part").write_bytes(body[:5000])  # what a killed run left behind
    assert fetch(url, cache=tmp_path / "c").read_bytes() == body
    assert ("/big.bin", "bytes=5000-") in handler.log
    assert not (folder / "big.bin.part").exists()
