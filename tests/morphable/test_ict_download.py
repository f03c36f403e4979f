"""The download path, against an HTTP server on 127.0.0.1 serving archives built here (no internet)."""
from __future__ import annotations

import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from morphable import ICT_COMMIT, ModelLoadError, load_ict


class _Server:
    """Serves ``routes[path] = (status, body, declared_length or None)`` on 127.0.0.1."""

    def __init__(self):
        self.routes = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                status, body, length = routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
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
