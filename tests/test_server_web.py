"""What is served besides the API: the web UI's static files at `/` (ai00ref/server/webui.py) and HTTPS
(`[listen].tls`, ai00ref/server/main.py tls_context), end to end on loopback."""
from __future__ import annotations

import ssl
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from ai00ref.server.app import make_app
from ai00ref.server.config import ConfigError, ListenConfig, config_from_dict
from ai00ref.server.main import tls_context
from test_server_api import ServerThread, call

TLS = Path(__file__).parent / "data" / "tls"
INDEX = b"<!doctype html><title>ai00ref</title>"
SCRIPT = b"console.log('hi')"


def get(url: str, context=None) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30, context=context) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def write_ui(folder: Path) -> Path:
    """An index.zip like Ai00's, and a plugin zip beside it."""
    (folder / "plugins").mkdir(parents=True)
    with zipfile.ZipFile(folder / "index.zip", "w") as archive:
        archive.writestr("index.html", INDEX)
        archive.writestr("assets/app.js", SCRIPT)
        archive.writestr("docs/index.html", b"docs")
        archive.writestr("../escape.txt", b"never served")
    with zipfile.ZipFile(folder / "plugins" / "paper.zip", "w") as archive:
        archive.writestr("index.html", b"paper")
    with zipfile.ZipFile(folder / "plugins" / "api.zip", "w") as archive:  # Ai00 skips this one
        archive.writestr("index.html", b"api")
    return folder / "index.zip"


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("www")
    config = config_from_dict({"web": {"path": str(write_ui(folder))}})
    served = ServerThread(make_app(None, config, folder))
    yield served
    served.close()


@pytest.mark.parametrize("path, content_type, body", [
    ("/", "text/html", INDEX),
    ("/index.html", "text/html", INDEX),
    ("/assets/app.js", "text/javascript", SCRIPT),
    ("/docs/", "text/html", b"docs"),
    ("/plugins/paper/", "text/html", b"paper"),
    ("/chat/42", "text/html", INDEX),  # a route of the single-page app
    ("/plugins/api/", "text/html", INDEX),  # not extracted, as Ai00: the app's fallback
    ("/escape.txt", "text/html", INDEX),
])
def test_the_ui_files_and_the_index_fallback(ui_server, path, content_type, body):
    status, got_type, got = get(ui_server.url + path)
    assert status == 200 and got_type.startswith(content_type) and got == body


def test_head_gets_the_headers_of_a_ui_file(ui_server):
    request = urllib.request.Request(ui_server.url + "/assets/app.js", method="HEAD")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["Content-Length"] == str(len(SCRIPT)) and response.read() == b""


def test_api_routes_come_first_and_keep_their_json_errors(ui_server):
    status, body = call(ui_server, "/api/oai/models")
    assert status == 200 and body["data"] == []  # no model loaded
    status, body = call(ui_server, "/api/no/such/route")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = call(ui_server, "/api/oai/completions", method="GET")
    assert status == 405 and "error" in body


def test_without_web_the_root_is_a_json_404(tmp_path):
    served = ServerThread(make_app(None, config_from_dict({}), tmp_path))
    try:
        status, body = call(served, "/")
        assert status == 404 and "web UI" in body["error"]["message"]
    finally:
        served.close()


@pytest.mark.parametrize("name, content", [("none.zip", None), ("broken.zip", b"not a zip")])
def test_the_bundled_ui_when_the_path_has_none(tmp_path, name, content):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    served = ServerThread(make_app(None, config_from_dict({"web": {"path": str(tmp_path / name)}}), tmp_path))
    try:
        for path, content_type, words in [("/", "text/html", b'<script type="module" src="js/main.js">'),
                                          ("/js/pages/chat.js", "text/javascript", b"export function mount"),
                                          ("/style.css", "text/css", b":root")]:
            status, got_type, body = get(served.url + path)
            assert status == 200 and got_type.startswith(content_type) and words in body
    finally:
        served.close()


def test_the_bundled_ui_is_package_data():
    """Every file of ai00ref/server/www/ is matched by setup.cfg's package_data (so a wheel carries the UI)."""
    import configparser
    from fnmatch import fnmatch

    import ai00ref

    parser = configparser.ConfigParser()
    parser.read(Path(__file__).parent.parent / "setup.cfg")
    patterns = parser["options.package_data"]["ai00ref"].split()
    package = Path(ai00ref.__file__).parent
    files = [path.relative_to(package).as_posix() for path in (package / "server" / "www").rglob("*") if path.is_file()]
    assert files and all(any(fnmatch(name, pattern) and name.count("/") == pattern.count("/")
                             for pattern in patterns) for name in files)


def test_a_folder_is_served_too(tmp_path):
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "index.html").write_bytes(INDEX)
    served = ServerThread(make_app(None, config_from_dict({"web": {"path": str(tmp_path / "ui")}}), tmp_path))
    try:
        assert get(served.url + "/anything")[2] == INDEX
    finally:
        served.close()


# ---- TLS ----

def test_tls_is_off_by_default():
    assert tls_context(ListenConfig(), TLS) is None


@pytest.mark.parametrize("listen", [ListenConfig(tls=True), ListenConfig(domain="example.org"),
                                    ListenConfig(acme=True)])
def test_tls_without_certificates_is_one_clear_error(listen, tmp_path):
    with pytest.raises(ConfigError, match="cert.pem and key.pem"):
        tls_context(listen, tmp_path)


def test_a_broken_certificate_is_named(tmp_path):
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="cert.pem"):
        tls_context(ListenConfig(tls=True), tmp_path)


def test_https_with_the_certificate_in_assets_certs(tmp_path):
    served = ServerThread(make_app(None), ssl_context=tls_context(ListenConfig(tls=True), TLS))
    try:
        trusted = ssl.create_default_context(cafile=str(TLS / "cert.pem"))
        status, content_type, body = get(served.url + "/v1/models", trusted)
        assert served.url.startswith("https://") and status == 200 and b'"list"' in body
        with pytest.raises(OSError):  # plain HTTP is not answered on the TLS port (a reset or a URLError)
            urllib.request.urlopen(served.url.replace("https", "http") + "/v1/models", timeout=10).read()
    finally:
        served.close()
