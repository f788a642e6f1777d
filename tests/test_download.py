"""Weights by URL (`pretrain_weights: https://...`, `--pretrained URL`): the real download code,
served from a loopback HTTP server (nothing here reaches the internet)."""

import hashlib
import http.server
import threading

import pytest

from picosparse import weights as W
from picosparse.errors import DataError


@pytest.fixture
def server(tmp_path):
    """A loopback server for tmp_path/www; `lie` files claim a longer Content-Length."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

        def do_GET(self):
            hits.append(self.path)
            if self.path.startswith("/lie/"):
                body = (root / self.path[5:]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + 100))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_port}", root, hits
    httpd.shutdown()
    httpd.server_close()


def test_fetch_downloads_once_checks_md5_and_reports_failures(server, tmp_path, monkeypatch):
    url, root, hits = server
    monkeypatch.setenv("PICOSPARSE_CACHE", str(tmp_path / "cache"))
    payload = bytes(range(256)) * 4096
    (root / "m.pdparams").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()

    got = W.resolve(f"{url}/m.pdparams#md5={md5}")
    assert got.read_bytes() == payload and str(got).startswith(str(tmp_path / "cache"))
    assert W.resolve(f"{url}/m.pdparams#md5={md5}") == got  # cached: no second request
    assert hits == ["/m.pdparams"]

    with pytest.raises(DataError, match=r"md5 [0-9a-f]{32} != expected 0{32}"):
        W.fetch(f"{url}/m.pdparams#md5={'0' * 32}", dest_dir=tmp_path / "other")
    with pytest.raises(DataError, match=r"/missing.pdparams: download failed \(HTTP 404 "):
        W.fetch(f"{url}/missing.pdparams", dest_dir=tmp_path / "other")
    with pytest.raises(DataError, match="download (truncated|failed)"):
        W.fetch(f"{url}/lie/m.pdparams", dest_dir=tmp_path / "other")
    # nothing half-written is left where a good download would go
    assert not [p for p in (tmp_path / "other").glob("*") if not p.name.startswith(".")]
