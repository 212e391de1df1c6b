"""ensure_files: verify present files, download missing ones (.part + rename), clear errors, hash cache.

Downloads use file:// URLs and a local http.server on 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from cdrbench.data import download as dl
from cdrbench.data.download import ensure_files
from cdrbench.data.sources.base import RawFile
from cdrbench.errors import DataFileError

PAYLOAD = b"user,item\n" + b"".join(f"u{i},i{i % 7}\n".encode() for i in range(5000))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def source_file(tmp_path) -> Path:
    src = tmp_path / "upstream" / "ratings.csv"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src


@pytest.fixture
def server(tmp_path):
    """Local HTTP server: /ok (payload), /short (announces more bytes than it sends), else 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/ok":
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD)
            elif self.path == "/short":
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[:1000])
                self.wfile.flush()
                self.close_connection = True
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


# --------------------------------------------------------------------------- download


def test_download_file_url_verifies_and_renames(tmp_path, source_file):
    root = tmp_path / "data"
    raw = RawFile("sub/ratings.csv", url=source_file.as_uri(), sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    result = ensure_files([raw], root, download=True, progress=False)
    assert result == {"sub/ratings.csv": PAYLOAD_SHA}
    assert (root / "sub" / "ratings.csv").read_bytes() == PAYLOAD
    assert listing(root) == ["sub", "sub/ratings.csv"]  # no .part left behind


def test_download_over_http(tmp_path, server):
    root = tmp_path / "data"
    raw = RawFile("a/ratings.csv", url=f"{server}/ok", sha256=PAYLOAD_SHA.upper())
    assert ensure_files([raw], root, download=True, progress=False) == {"a/ratings.csv": PAYLOAD_SHA}
    assert (root / "a" / "ratings.csv").read_bytes() == PAYLOAD
    assert listing(root) == ["a", "a/ratings.csv"]


def test_download_sha_mismatch_removes_part_and_names_both_hashes(tmp_path, source_file):
    root = tmp_path / "data"
    wrong = "0" * 64
    raw = RawFile("ratings.csv", url=source_file.as_uri(), sha256=wrong)
    with pytest.raises(DataFileError) as info:
        ensure_files([raw], root, download=True, progress=False)
    message = str(info.value)
    assert wrong in message and PAYLOAD_SHA in message
    assert str(root / "ratings.csv") in message
    assert listing(root) == []  # neither the .part nor the final file


def test_download_size_mismatch_is_discarded(tmp_path, source_file):
    root = tmp_path / "data"
    raw = RawFile("ratings.csv", url=source_file.as_uri(), size=len(PAYLOAD) + 1)
    with pytest.raises(DataFileError) as info:
        ensure_files([raw], root, download=True, progress=False)
    assert str(len(PAYLOAD) + 1) in str(info.value) and str(len(PAYLOAD)) in str(info.value)
    assert listing(root) == []


def test_download_truncated_transfer_is_discarded(tmp_path, server):
    root = tmp_path / "data"
    raw = RawFile("ratings.csv", url=f"{server}/short")
    with pytest.raises(DataFileError) as info:
        ensure_files([raw], root, download=True, progress=False)
    assert f"{server}/short" in str(info.value)
    assert listing(root) == []


def test_network_error_names_url_and_hints(tmp_path, server):
    root = tmp_path / "data"
    raw = RawFile("x/ratings.csv", url=f"{server}/missing", page="https://example.org/data")
    with pytest.raises(DataFileError) as info:
        ensure_files([raw], root, download=True, progress=False)
    message = str(info.value)
    assert f"{server}/missing" in message and "404" in message
    assert str(root / "x" / "ratings.csv") in message
    assert "by hand" in message and "data.download" in message
    assert not (root / "x" / "ratings.csv").exists()
    assert not (root / "x" / "ratings.csv.part").exists()


# --------------------------------------------------------------------------- missing files


def test_missing_file_without_download_names_path_url_and_switch(tmp_path):
    root = tmp_path / "data"
    url = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Books_5.json.gz"
    raw = RawFile("amazon2014/reviews_Books_5.json.gz", url=url)
    with pytest.raises(DataFileError) as info:
        ensure_files([raw], root, download=False, progress=False)
    message = str(info.value)
    assert str((root / "amazon2014" / "reviews_Books_5.json.gz").absolute()) in message
    assert url in message
    assert "data.download=true" in message and "by hand" in message
    assert not root.exists()  # nothing created under the data root


def test_missing_file_without_url_points_to_page(tmp_path):
    raw = RawFile("x/file.csv", page="https://example.org/get-it")
    with pytest.raises(DataFileError) as info:
        ensure_files([raw], tmp_path, download=True, progress=False)
    message = str(info.value)
    assert str(tmp_path / "x" / "file.csv") in message
    assert "https://example.org/get-it" in message and "by hand" in message


def test_relative_root_is_reported_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataFileError) as info:
        ensure_files([RawFile("f.csv", url="http://x/f.csv")], Path("rel"), download=False)
    assert str(tmp_path / "rel" / "f.csv") in str(info.value)


# --------------------------------------------------------------------------- present files


def test_present_file_verified_and_returned(tmp_path):
    (tmp_path / "f.csv").write_bytes(PAYLOAD)
    raw = RawFile("f.csv", url="http://unreachable.invalid/f.csv", sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    assert ensure_files([raw], tmp_path, download=True, progress=False) == {"f.csv": PAYLOAD_SHA}


def test_present_file_with_wrong_sha_is_kept_and_reported(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(PAYLOAD)
    wrong = "ab" * 32
    with pytest.raises(DataFileError) as info:
        ensure_files([RawFile("f.csv", sha256=wrong)], tmp_path, download=True, progress=False)
    message = str(info.value)
    assert wrong in message and PAYLOAD_SHA in message and str(path) in message
    assert path.read_bytes() == PAYLOAD  # a hand-placed file is never deleted


def test_present_file_with_wrong_size_is_kept_and_reported(tmp_path, monkeypatch):
    path = tmp_path / "f.csv"
    path.write_bytes(PAYLOAD[:100])
    monkeypatch.setattr(dl, "sha256_file", lambda p: pytest.fail("size is checked before hashing"))
    with pytest.raises(DataFileError) as info:
        ensure_files([RawFile("f.csv", size=len(PAYLOAD))], tmp_path, download=True, progress=False)
    assert f"{len(PAYLOAD)} bytes" in str(info.value) and "100 bytes" in str(info.value)
    assert path.read_bytes() == PAYLOAD[:100]


# --------------------------------------------------------------------------- hash cache


def _counting_hash(monkeypatch) -> list:
    calls = []
    real = dl.sha256_file

    def counted(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(dl, "sha256_file", counted)
    return calls


def test_hash_cache_skips_rehashing_unchanged_files(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    path = root / "f.csv"
    path.write_bytes(PAYLOAD)
    cache = tmp_path / "cache" / "raw-sha256.json"
    calls = _counting_hash(monkeypatch)
    raw = RawFile("f.csv", sha256=PAYLOAD_SHA)

    assert ensure_files([raw], root, download=False, hash_cache=cache) == {"f.csv": PAYLOAD_SHA}
    assert len(calls) == 1
    stat = path.stat()
    assert json.loads(cache.read_text()) == {str(path): [stat.st_size, stat.st_mtime_ns, PAYLOAD_SHA]}

    assert ensure_files([raw], root, download=False, hash_cache=cache) == {"f.csv": PAYLOAD_SHA}
    assert len(calls) == 1  # served from the cache

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: re-hash
    ensure_files([raw], root, download=False, hash_cache=cache)
    assert len(calls) == 2
    assert listing(root) == ["f.csv"]  # nothing written next to the data
    assert [p.name for p in cache.parent.iterdir()] == ["raw-sha256.json"]  # no temp files left


def test_hash_cache_detects_a_changed_file(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    path = root / "f.csv"
    path.write_bytes(PAYLOAD)
    cache = tmp_path / "raw-sha256.json"
    ensure_files([RawFile("f.csv")], root, download=False, hash_cache=cache)
    path.write_bytes(PAYLOAD + b"extra\n")  # size changes
    with pytest.raises(DataFileError, match="sha256 mismatch"):
        ensure_files([RawFile("f.csv", sha256=PAYLOAD_SHA)], root, download=False, hash_cache=cache)


def test_downloaded_file_enters_the_cache(tmp_path, source_file, monkeypatch):
    root = tmp_path / "data"
    cache = tmp_path / "cache.json"
    raw = RawFile("ratings.csv", url=source_file.as_uri(), sha256=PAYLOAD_SHA)
    calls = _counting_hash(monkeypatch)
    ensure_files([raw], root, download=True, hash_cache=cache, progress=False)
    ensure_files([raw], root, download=True, hash_cache=cache, progress=False)
    assert calls == []  # hashed while downloading, then served from the cache
    assert json.loads(cache.read_text())[str(root / "ratings.csv")][2] == PAYLOAD_SHA


def test_corrupt_hash_cache_is_ignored_and_rewritten(tmp_path):
    (tmp_path / "f.csv").write_bytes(PAYLOAD)
    cache = tmp_path / "cache" / "c.json"
    cache.parent.mkdir()
    cache.write_text("{not json")
    assert ensure_files([RawFile("f.csv")], tmp_path, download=False, hash_cache=cache) == {"f.csv": PAYLOAD_SHA}
    assert json.loads(cache.read_text())[str(tmp_path / "f.csv")][2] == PAYLOAD_SHA
