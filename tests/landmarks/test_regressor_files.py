"""Finding, downloading and verifying the regressor's files, against an HTTP server on 127.0.0.1 (no internet).

The server serves the upstream files as they are at the pinned commits, rebuilt from the shared folder:
the weights and licences are the upstream bytes; the three text bases written with ``%f`` from the
shared keypoint model are byte for byte the upstream files (the test checks their pinned SHA-256).
Only the pickled normalisation cannot be rebuilt byte for byte (upstream's numpy pickled dtypes
differently), so its pinned checksum is replaced by that of the rebuilt file.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from landmarks import regressor_files as rf
from landmarks.regressor_files import (KEYPOINT_MODEL_DIGEST, RegressorFilesError, find_regressor_files,
                                       keypoint_model_digest)

from shared_3ddfa import DDFA_DIR

PKL = "param_mean_std_62d_120x120.pkl"
TEXT_COLUMNS = {"u_base": 1, "w_shp_base": 40, "w_exp_base": 10}


def _upstream_bytes():
    """Local name -> bytes of every upstream file, rebuilt from the shared folder."""
    z = np.load(DDFA_DIR / "keypoint_model.npz")
    out = {"mb05_120x120.pth": (DDFA_DIR / "mb05_120x120.pth").read_bytes(),
           "LICENSE-3DDFA_V2.txt": (DDFA_DIR / "LICENSE-3DDFA_V2.txt").read_bytes(),
           "LICENSE-3DDFA.txt": (DDFA_DIR / "LICENSE-3DDFA.txt").read_bytes(),
           PKL: pickle.dumps({"mean": z["param_mean"], "std": z["param_std"]}, protocol=3)}
    for name, cols in TEXT_COLUMNS.items():
        buf = io.BytesIO()
        np.savetxt(buf, z[name].reshape(-1, cols), fmt="%f", delimiter=" ")
        out[f"{name}.txt"] = buf.getvalue()
    return out


UPSTREAM = _upstream_bytes()


class _Server:
    """Serves ``routes[path] = body`` on 127.0.0.1; anything else is a 404. Counts requests."""

    def __init__(self):
        self.routes, self.hits = {}, []
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                hits.append(self.path)
                body = routes.get(self.path)
                self.send_response(200 if body is not None else 404)
                body = body if body is not None else b"not found"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.template = f"http://127.0.0.1:{self.httpd.server_address[1]}/{{repo}}/{{commit}}/{{path}}"

    def serve_upstream(self, files=UPSTREAM):
        for name, body in files.items():
            repo, commit, path, _ = rf.UPSTREAM_FILES[name]
            self.routes[f"/{repo}/{commit}/{path}"] = body

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No folder named by the environment; the rebuilt pickle's checksum in place of upstream's."""
    monkeypatch.delenv(rf.ENV_DIR, raising=False)
    monkeypatch.delenv(rf.ENV_URL, raising=False)
    repo, commit, path, _ = rf.UPSTREAM_FILES[PKL]
    monkeypatch.setitem(rf.UPSTREAM_FILES, PKL, (repo, commit, path, hashlib.sha256(UPSTREAM[PKL]).hexdigest()))


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def test_rebuilt_text_bases_are_the_upstream_bytes():
    for name in TEXT_COLUMNS:
        assert hashlib.sha256(UPSTREAM[f"{name}.txt"]).hexdigest() == rf.UPSTREAM_FILES[f"{name}.txt"][3]


def test_shared_folder_is_accepted_as_it_is():
    files = find_regressor_files(DDFA_DIR, download=False)
    assert keypoint_model_digest(files.keypoints) == KEYPOINT_MODEL_DIGEST
    assert files.keypoints["w_shp_base"].shape == (68, 3, 40)


def test_download_verifies_converts_and_caches(server, tmp_path):
    server.serve_upstream()
    files = find_regressor_files(cache_dir=tmp_path, url_template=server.template)
    # The conversion of the upstream files gives exactly the shared keypoint model.
    assert keypoint_model_digest(files.keypoints) == KEYPOINT_MODEL_DIGEST
    assert files.weights.parent == rf.cache_folder(tmp_path)
    assert not list(files.weights.parent.glob("*.part"))
    assert len(server.hits) == len(rf.UPSTREAM_FILES)
    server.routes.clear()  # the second time needs no server
    again = find_regressor_files(cache_dir=tmp_path, url_template=server.template)
    assert again.weights == files.weights and len(server.hits) == len(rf.UPSTREAM_FILES)


def test_not_present_and_no_download_is_none(tmp_path):
    assert find_regressor_files(cache_dir=tmp_path, download=False) is None


def test_offline_is_one_clear_line(tmp_path):
    # Port 9 on the loopback: nothing listens, the connection is refused at once.
    with pytest.raises(RegressorFilesError) as err:
        find_regressor_files(cache_dir=tmp_path, url_template="http://127.0.0.1:9/{repo}/{commit}/{path}")
    msg = str(err.value)
    assert "\n" not in msg and "cannot download" in msg and rf.ENV_DIR in msg
    assert not list(rf.cache_folder(tmp_path).glob("*"))  # no half-written file left behind


def test_checksum_mismatch_is_one_clear_line_and_leaves_nothing(server, tmp_path):
    bad = dict(UPSTREAM)
    bad["mb05_120x120.pth"] = UPSTREAM["mb05_120x120.pth"][:-10] + b"0123456789"
    server.serve_upstream(bad)
    with pytest.raises(RegressorFilesError) as err:
        find_regressor_files(cache_dir=tmp_path, url_template=server.template)
    msg = str(err.value)
    assert "\n" not in msg and "checksum mismatch" in msg and "mb05_120x120.pth" in msg
    assert not (rf.cache_folder(tmp_path) / "mb05_120x120.pth").exists()
    server.serve_upstream()  # the next run, with the right file, succeeds
    assert find_regressor_files(cache_dir=tmp_path, url_template=server.template) is not None


def test_corrupt_cached_file_is_fetched_again(server, tmp_path):
    server.serve_upstream()
    files = find_regressor_files(cache_dir=tmp_path, url_template=server.template)
    files.weights.write_bytes(b"truncated")
    with pytest.raises(RegressorFilesError, match="checksum mismatch"):
        find_regressor_files(cache_dir=tmp_path, download=False)
    again = find_regressor_files(cache_dir=tmp_path, url_template=server.template)
    assert rf.sha256_file(again.weights) == rf.UPSTREAM_FILES["mb05_120x120.pth"][3]


def test_named_folder_corrupt_keypoint_model(tmp_path):
    shutil.copy(DDFA_DIR / "mb05_120x120.pth", tmp_path)
    z = dict(np.load(DDFA_DIR / "keypoint_model.npz"))
    z["u_base"] = z["u_base"] + 1.0
    np.savez(tmp_path / "keypoint_model.npz", **z)
    with pytest.raises(RegressorFilesError) as err:
        find_regressor_files(tmp_path)
    assert "\n" not in str(err.value) and "checksum mismatch" in str(err.value)
    (tmp_path / "keypoint_model.npz").write_bytes(b"not a zip")
    with pytest.raises(RegressorFilesError, match="cannot read"):
        find_regressor_files(tmp_path)


def test_named_folder_incomplete_or_missing(tmp_path, monkeypatch):
    with pytest.raises(RegressorFilesError, match="incomplete"):
        find_regressor_files(tmp_path)
    monkeypatch.setenv(rf.ENV_DIR, str(tmp_path / "nowhere"))
    with pytest.raises(RegressorFilesError, match="does not exist"):
        find_regressor_files()


def test_pickle_naming_other_code_is_refused(tmp_path):
    for name in rf.KEYPOINT_SOURCES:
        (tmp_path / name).write_bytes(UPSTREAM[name])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / PKL).write_bytes(pickle.dumps({"mean": Evil(), "std": Evil()}))
    with pytest.raises(RegressorFilesError, match="not allowed"):
        rf.convert_keypoint_model(tmp_path)
