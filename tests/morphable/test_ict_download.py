"""The download path, against an HTTP server on 127.0.0.1 serving archives built here (no internet)."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from morphable import ICT_COMMIT, ModelLoadError, load_ict
from morphable import ict

NO_LENGTH = -1  # a route's declared length: send no Content-Length (the body ends when the connection closes)


class _Server:
    """Serves ``routes[path] = (status, body, declared_length or None or NO_LENGTH)`` on 127.0.0.1 (HTTP/1.0)."""

    def __init__(self):
        self.routes = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                status, body, length = routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                if length != NO_LENGTH:
                    self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch):
    """The download path is only taken when no model folder is named (CI names one)."""
    monkeypatch.delenv("FACEFIT_ICT_DIR", raising=False)


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _tar_bytes(members):
    """A .tar.gz with ``members = [(name, bytes)]``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_download_builds_model_and_cache(server, ict_archive_path, tmp_path):
    # The archive service sends .tar.gz; tarfile reads the stored .tar.xz the same way.
    server.routes["/ict.tar.gz"] = (200, ict_archive_path.read_bytes(), None)
    m = load_ict(None, cache_dir=tmp_path, url=server.url("/ict.tar.gz"), progress=False)
    assert m.n_id == 100 and m.n_exp == 53 and m.n_vertices == 9409
    assert (tmp_path / f"ICT-FaceKit-{ICT_COMMIT}.tar.gz").is_file()
    assert not list(tmp_path.glob("*.part"))
    server.routes.clear()  # the second load needs no server
    again = load_ict(None, cache_dir=tmp_path, url=server.url("/ict.tar.gz"), progress=False)
    assert again.source.startswith("cache")


def test_download_http_error(server, tmp_path):
    with pytest.raises(ModelLoadError, match="cannot download the ICT Face Model"):
        load_ict(None, cache_dir=tmp_path, url=server.url("/missing.tar.gz"), progress=False)
    assert not list(tmp_path.iterdir())


def test_download_cut_short(server, tmp_path):
    server.routes["/short.tar.gz"] = (200, b"x" * 1000, 5000)
    with pytest.raises(ModelLoadError, match="cannot download|cut short"):
        load_ict(None, cache_dir=tmp_path, url=server.url("/short.tar.gz"), progress=False)
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.tar.gz"))


def test_download_not_an_archive(server, tmp_path):
    server.routes["/junk.tar.gz"] = (200, b"this is not a tar archive" * 100, None)
    with pytest.raises(ModelLoadError, match="cannot read model archive"):
        load_ict(None, cache_dir=tmp_path, url=server.url("/junk.tar.gz"), progress=False)
    assert not list(tmp_path.glob("*.tar.gz")), "a bad download must be removed"


def test_download_rejects_member_outside_target(server, tmp_path):
    evil = _tar_bytes([("ICT-FaceKit-x/FaceXModel/generic_neutral_mesh.obj", b"v 0 0 0\n"),
                       ("../../escape.txt", b"gotcha")])
    server.routes["/evil.tar.gz"] = (200, evil, None)
    with pytest.raises(ModelLoadError, match="unsafe archive member '../../escape.txt'"):
        load_ict(None, cache_dir=tmp_path, url=server.url("/evil.tar.gz"), progress=False)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_download_tampered_file_fails_checksum(server, tmp_path, ict_dir):
    # A small archive with a wrong neutral mesh and nothing else: the loader
    # must stop at the checksum or completeness check, never build a model.
    fx = ict_dir / "FaceXModel"
    members = [(f"ICT-FaceKit-{ICT_COMMIT}/FaceXModel/vertex_indices.json", (fx / "vertex_indices.json").read_bytes()),
               (f"ICT-FaceKit-{ICT_COMMIT}/FaceXModel/generic_neutral_mesh.obj", b"v 1 2 3\nf 1 1 1\n")]
    server.routes["/small.tar.gz"] = (200, _tar_bytes(members), None)
    with pytest.raises(ModelLoadError, match="incomplete"):
        load_ict(None, cache_dir=tmp_path, url=server.url("/small.tar.gz"), progress=False)


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


def _damaged(archive_bytes: bytes, how: str) -> bytes:
    """The model archive with three bytes inverted in its middle, or cut to its first half."""
    if how == "truncated":
        return archive_bytes[:len(archive_bytes) // 2]
    data = bytearray(archive_bytes)
    for offset in (len(data) // 4, len(data) // 2, len(data) // 2 + 1):
        data[offset] ^= 0xFF
    return bytes(data)


def test_download_cut_short_without_content_length(server, ict_archive_path, tmp_path):
    # No Content-Length: a dropped connection looks like the end of the file. The
    # half archive used to be renamed into the cache and fail every later run.
    server.routes["/ict.tar.gz"] = (200, ict_archive_path.read_bytes()[:ict_archive_path.stat().st_size // 2],
                                    NO_LENGTH)
    with pytest.raises(ModelLoadError) as exc_info:
        load_ict(None, cache_dir=tmp_path, url=server.url("/ict.tar.gz"), progress=False)
    message = _one_line(exc_info)
    assert "cannot read model archive downloaded from" in message and "cut short" in message, message
    assert sorted(tmp_path.iterdir()) == [], "neither the archive nor its .part may stay in the cache"


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_damaged_archive_in_cache_is_removed(ict_archive_path, tmp_path, how):
    # e.g. left by a version that did not check its downloads
    cached = tmp_path / f"ICT-FaceKit-{ICT_COMMIT}.tar.gz"
    cached.write_bytes(_damaged(ict_archive_path.read_bytes(), how))
    with pytest.raises(ModelLoadError) as exc_info:
        load_ict(None, cache_dir=tmp_path, download=False, progress=False)
    message = _one_line(exc_info)
    assert message.startswith(f"cannot read model archive {cached}:") and "removed it from the cache" in message
    assert not cached.exists()


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_damaged_user_archive_is_reported_and_kept(ict_archive_path, tmp_path, how):
    own = tmp_path / "mine" / ict_archive_path.name
    own.parent.mkdir()
    own.write_bytes(_damaged(ict_archive_path.read_bytes(), how))
    before = own.read_bytes()
    with pytest.raises(ModelLoadError) as exc_info:
        load_ict(own, cache_dir=tmp_path / "cache", progress=False)
    message = _one_line(exc_info)
    assert message.startswith(f"cannot read model archive {own}:") and "removed" not in message, message
    assert own.read_bytes() == before, "a user's own archive is never deleted or changed"


def test_not_an_archive_is_one_line(tmp_path):
    # tarfile lists each compression it tried, one a line
    junk = tmp_path / "ICT-FaceKit-junk.tar.gz"
    junk.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(ModelLoadError) as exc_info:
        load_ict(junk, cache_dir=tmp_path / "cache", progress=False)
    assert _one_line(exc_info) == \
        f"cannot read model archive {junk}: not a tar archive (tried gzip, bzip2, xz and plain tar)"


def test_offline_says_how_to_use_a_local_copy(tmp_path):
    with socket.socket() as s:  # a loopback port with nothing listening: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ModelLoadError) as exc_info:
        load_ict(None, cache_dir=tmp_path, url=f"http://127.0.0.1:{port}/ict.tar.gz", progress=False)
    message = _one_line(exc_info)
    assert message.startswith("cannot download the ICT Face Model")
    assert "--model-dir" in message and "FACEFIT_ICT_DIR" in message, message
    assert sorted(tmp_path.iterdir()) == []


def test_download_with_an_altered_file_is_refused(server, tmp_path, monkeypatch):
    # A complete archive whose one model file differs from upstream: the check is
    # on the files' SHA-256 (the list cut to one file so the archive stays small).
    monkeypatch.setattr(ict, "known_checksums",
                        lambda: {"FaceXModel/generic_neutral_mesh.obj": hashlib.sha256(b"v 0 0 0\n").hexdigest()})
    altered = _tar_bytes([(f"ICT-FaceKit-{ICT_COMMIT}/FaceXModel/generic_neutral_mesh.obj", b"v 0 0 1\n")])
    server.routes["/altered.tar.gz"] = (200, altered, None)
    with pytest.raises(ModelLoadError, match="checksum mismatch for FaceXModel/generic_neutral_mesh.obj"):
        load_ict(None, cache_dir=tmp_path, url=server.url("/altered.tar.gz"), progress=False)
    assert sorted(tmp_path.iterdir()) == []
