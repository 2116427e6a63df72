"""The management routes end to end on loopback (reference ai00-server.md §1.11, §7): the JWT exchange and the admin
check, model load/unload, the model list with its sampled sha, and the sandboxed file routes.

Each server runs over a temporary folder holding an `assets/` tree (`add_admin_routes(..., assets_root=...)`), whose
`assets/models` holds small random RWKV-7 models, a broken model file and a symlink that points out of the sandbox.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import zipfile

import pytest

from ai00ref.server.admin import (TokenError, add_admin_routes, check_token, config_document, make_token,
                                  sampled_sha256, to_toml, tomllib, unsafe_member)
from ai00ref.server.app import make_app
from ai00ref.server.config import config_from_dict, load_config
from ai00ref.server.runtime import start_runtime
from ai00ref.weights.random_model import RandomModelSpec, write_random_model
from test_server_api import ServerThread
from test_server_api import call as api_call

SECRET = "secret"
TINY = RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=7)
SECOND = RandomModelSpec("v7", n_layer=2, n_embd=32, n_vocab=65536, head_size=16, seed=8)
GREEDY_COMPLETION = {"prompt": "Hello", "max_tokens": 3, "stop": None, "temperature": 0, "top_k": 0}


# ---- fixtures and helpers ----

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder with assets/{models,configs,tokenizer,www,unzip,temp} and an `outside/` the sandbox must not reach."""
    root = tmp_path_factory.mktemp("root")
    assets = root / "assets"
    for name in ("models", "configs", "tokenizer", "www", "unzip", "temp"):
        (assets / name).mkdir(parents=True)
    models = assets / "models"
    write_random_model(TINY, models / "tiny.st")
    write_random_model(SECOND, models / "second.st")
    (models / "broken.st").write_bytes(b"this is not a safetensors file")
    (models / "notes.txt").write_text("hello")
    (models / "sub").mkdir()
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not list me")
    (models / "escape").symlink_to(outside, target_is_directory=True)
    return root


def make_config(root, force_pass: bool = False):
    return config_from_dict({
        "model": {"path": str(root / "assets" / "models"), "name": "tiny.st", "max_batch": 2, "token_chunk_size": 16},
        "adapter": {"engine": "ref"},
        "listen": {"force_pass": force_pass, "slot": SECRET, "app_keys": [{"app_id": "admin", "secret_key": "pw"}]},
    })


def serve(root, force_pass: bool = False, with_model: bool = True) -> ServerThread:
    config = make_config(root, force_pass)
    app = make_app(start_runtime(config) if with_model else None)
    add_admin_routes(app, config, assets_root=root)
    return ServerThread(app)


@pytest.fixture(scope="module")
def server(root):
    """A server whose model the tests leave alone."""
    served = serve(root)
    yield served
    served.close()


@pytest.fixture
def fresh_server(root):
    """A server of its own, for tests that load and unload models."""
    served = serve(root)
    yield served
    served.close()


def token(now: float | None = None, secret: str = SECRET) -> str:
    return make_token("admin", secret, 86400, now=now)


def call(server, path, body=None, method=None, bearer: str | None = None, headers: dict | None = None):
    """test_server_api.call, with `bearer` in the Authorization header."""
    all_headers = {**(headers or {}), **({"Authorization": f"Bearer {bearer}"} if bearer is not None else {})}
    return api_call(server, path, body, method, headers=all_headers)


def admin(server, path, body=None, method=None):
    """A request with a valid admin token."""
    return call(server, path, body, method, bearer=token())


def generation_status(server) -> int:
    return call(server, "/api/oai/completions", GREEDY_COMPLETION)[0]


# ---- JWT ----

def test_token_round_trip():
    claims = check_token(make_token("admin", "k", 60, now=1000), "k", now=1059)
    assert claims == {"sid": "admin", "exp": 1060}


def test_a_published_hs256_vector_verifies():
    """jwt.io's example token (no exp claim): the signature checks with its secret and fails with another."""
    vector = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0Ijox"
              "NTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
    with pytest.raises(TokenError, match="exp"):
        check_token(vector, "your-256-bit-secret")
    with pytest.raises(TokenError, match="signature"):
        check_token(vector, "another secret")


def _forged(good: str, claims: dict) -> str:
    import base64
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    header, _, signature = good.split(".")
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize("bad, problem", [
    ("not-a-token", "malformed"),
    ("a.b.c", "malformed"),
    ("eyJhbGciOiJub25lIn0.e30.", "algorithm"),  # {"alg":"none"}.{}
])
def test_malformed_tokens(bad, problem):
    with pytest.raises(TokenError, match=problem):
        check_token(bad, "k")


def test_tampering_expiry_and_wrong_secret_are_detected():
    good = make_token("admin", "k", 60, now=1000)
    with pytest.raises(TokenError, match="signature"):
        check_token(_forged(good, {"sid": "root", "exp": 1060}), "k", now=1000)
    with pytest.raises(TokenError, match="signature"):
        check_token(good, "other", now=1000)
    with pytest.raises(TokenError, match="expired"):
        check_token(good, "k", now=1060)
    with pytest.raises(TokenError, match="signature"):
        check_token(good[:-2] + ("AA" if not good.endswith("AA") else "BB"), "k", now=1000)


# ---- exchange and the admin check ----

def test_exchange_gives_a_token(server):
    status, body = call(server, "/api/auth/exchange", {"app_id": "admin", "app_secret": "pw"})
    assert status == 200 and body["code"] == 200 and body["message"] == "SUCCESS"
    assert check_token(body["token"], SECRET)["sid"] == "admin"
    assert call(server, "/admin/files/dir", {"path": "assets/models"}, bearer=body["token"])[0] == 200


@pytest.mark.parametrize("credentials", [{"app_id": "admin", "app_secret": "wrong"},
                                         {"app_id": "nobody", "app_secret": "pw"}, {}])
def test_exchange_refuses_with_ai00s_body(server, credentials):
    status, body = call(server, "/api/auth/exchange", credentials)
    assert status == 403 and body == {"token": None, "code": 403, "message": "NO-Match AppId and SecretKey"}


LIST_MODELS = ("/admin/files/dir", {"path": "assets/models"})


def test_admin_without_token_is_401(server):
    status, body = call(server, *LIST_MODELS)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert call(server, "/api/files/dir", {"path": "assets/models"})[0] == 401  # legacy alias, same check
    assert call(server, "/admin/models/unload")[0] == 401
    assert call(server, *LIST_MODELS, headers={"Authorization": "Basic YWRtaW46cHc="})[0] == 401


@pytest.mark.parametrize("bad", ["garbage", token(now=time.time() - 2 * 86400), token(secret="other secret")],
                         ids=["malformed", "expired", "wrong-secret"])
def test_admin_with_a_bad_token_is_403(server, bad):
    status, body = call(server, *LIST_MODELS, bearer=bad)
    assert status == 403 and body["error"]["code"] == "forbidden" and "invalid admin token" in body["error"]["message"]


def test_admin_token_by_header_proxy_header_or_query(server):
    assert call(server, *LIST_MODELS, bearer=token())[0] == 200
    assert call(server, *LIST_MODELS, headers={"Proxy-Authorization": f"Bearer {token()}"})[0] == 200
    assert call(server, f"/admin/files/dir?admin_token={token()}", LIST_MODELS[1])[0] == 200
    assert call(server, "/admin/files/dir?admin_token=garbage", LIST_MODELS[1])[0] == 403


def test_force_pass_lets_everything_through(root):
    served = serve(root, force_pass=True, with_model=False)
    try:
        assert call(served, *LIST_MODELS)[0] == 200
        assert call(served, *LIST_MODELS, bearer="garbage")[0] == 200
        assert call(served, "/admin/models/unload")[0] == 200
    finally:
        served.close()


# ---- the model list and its sha ----

def test_models_list(server, root):
    status, entries = call(server, "/api/models/list")
    assert status == 200
    by_name = {entry["name"]: entry for entry in entries}
    assert set(by_name) == {"tiny.st", "second.st", "broken.st", "notes.txt"}  # no directories, no symlinked dir
    tiny = by_name["tiny.st"]
    path = root / "assets" / "models" / "tiny.st"
    assert tiny["size"] == path.stat().st_size and tiny["path"].endswith("tiny.st")
    assert tiny["sha"] == sampled_sha256(path)
    if tiny["size"] <= 10_000_000:
        assert tiny["sha"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tiny["info"] == {"version": "V7", "num_layer": 1, "num_emb": 32, "num_hidden": 128, "num_vocab": 65536,
                            "num_head": 2, "custom": "None"}
    assert by_name["second.st"]["info"]["num_layer"] == 2
    assert by_name["broken.st"]["info"] is None and by_name["notes.txt"]["info"] is None


def test_models_list_reads_a_quantized_prefabs_info(root, tmp_path):
    """A prefab stores each quantized matrix as NAME.codes and NAME.scales; its metadata gives the dense shapes."""
    from ai00ref.engine import save_prefab
    from ai00ref.server.admin import model_file_info

    target = tmp_path / "tiny-nf4.prefab"
    save_prefab(root / "assets" / "models" / "tiny.st", target, quant=1, quant_type="nf4")
    assert model_file_info(target) == {"version": "V7", "num_layer": 1, "num_emb": 32, "num_hidden": 128,
                                       "num_vocab": 65536, "num_head": 2, "custom": "None"}


def test_models_list_of_a_missing_folder_is_empty(root, tmp_path):
    config = dataclasses.replace(make_config(root), model=dataclasses.replace(make_config(root).model,
                                                                              path=tmp_path / "nothing"))
    app = make_app(None)
    add_admin_routes(app, config, assets_root=root)
    served = ServerThread(app)
    try:
        assert call(served, "/api/models/list") == (200, [])
    finally:
        served.close()


def test_sampled_sha_of_a_large_sparse_file(tmp_path):
    """Over 10,000,000 bytes: SHA-256 of ten 1,000,000-byte segments at offsets i*size//10, in order."""
    size = 25_000_003
    path = tmp_path / "big.bin"
    with open(path, "wb") as file:
        file.truncate(size)
        for i in range(10):
            file.seek(i * size // 10 + 7)
            file.write(bytes([i + 1]) * 3)
    data = path.read_bytes()
    expected = hashlib.sha256(b"".join(data[i * size // 10:i * size // 10 + 1_000_000] for i in range(10)))
    assert sampled_sha256(path) == expected.hexdigest() != hashlib.sha256(data).hexdigest()
    with open(path, "r+b") as file:  # a byte between samples does not count
        file.seek(1_500_000)
        file.write(b"x")
    assert sampled_sha256(path) == expected.hexdigest()


def test_sampled_sha_hashes_a_file_of_exactly_the_limit_whole(tmp_path):
    path = tmp_path / "limit.bin"
    with open(path, "wb") as file:
        file.truncate(10_000_000)
        file.seek(5_555_555)
        file.write(b"y")
    assert sampled_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# ---- model load, unload and save ----

def test_load_another_model(fresh_server):
    assert call(fresh_server, "/api/oai/models")[1]["data"][0]["id"] == "tiny"
    status, body = admin(fresh_server, "/admin/models/load", {"model_path": "second.st", "max_batch": 3})
    assert status == 200 and body["status"] == "loaded" and body["model"].endswith("second.st")
    assert call(fresh_server, "/api/oai/models")[1]["data"][0]["id"] == "second"
    info = call(fresh_server, "/api/models/info")[1]
    assert info["model"]["num_layer"] == 2 and info["reload"]["max_batch"] == 3
    assert generation_status(fresh_server) == 200
    status, body = admin(fresh_server, "/api/models/load", {"model_path": "tiny.st"})  # legacy alias
    assert status == 200 and call(fresh_server, "/api/oai/models")[1]["data"][0]["id"] == "tiny"
    assert generation_status(fresh_server) == 200


@pytest.mark.parametrize("model_path", ["../outside/secret.txt", "escape/secret.txt", "/etc/passwd"])
def test_load_outside_the_model_folder_is_404(fresh_server, root, model_path):
    status, body = admin(fresh_server, "/admin/models/load", {"model_path": model_path})
    assert status == 404 and body["error"]["code"] == "not_found"
    assert generation_status(fresh_server) == 200  # the loaded model stays


@pytest.mark.parametrize("body, param", [({}, "model_path"), ({"model_path": "tiny.st", "lora": "x"}, "lora")])
def test_load_with_a_bad_request_is_400(fresh_server, body, param):
    status, error = admin(fresh_server, "/admin/models/load", body)
    assert status == 400 and error["error"]["param"] == param


def test_load_with_a_bad_setting_is_400(fresh_server):
    status, error = admin(fresh_server, "/admin/models/load", {"model_path": "tiny.st", "precision": "Fp8"})
    assert status == 400 and "precision" in error["error"]["message"]


def test_load_a_broken_file_is_400_and_the_server_goes_on(fresh_server):
    status, body = admin(fresh_server, "/admin/models/load", {"model_path": "broken.st"})
    assert status == 400 and "broken.st" in body["error"]["message"] and body["error"]["code"] == "load_failed"
    assert call(fresh_server, "/api/oai/models") == (200, {"object": "list", "data": []})
    assert generation_status(fresh_server) == 503
    assert admin(fresh_server, "/admin/models/load", {"model_path": "tiny.st"})[0] == 200
    assert generation_status(fresh_server) == 200


def test_load_a_missing_file_is_404_naming_it_and_the_model_stays(fresh_server):
    status, body = admin(fresh_server, "/admin/models/load", {"model_path": "absent.st"})
    assert status == 404 and "absent.st" in body["error"]["message"]
    assert generation_status(fresh_server) == 200


def test_unload_then_generation_is_503(fresh_server):
    assert admin(fresh_server, "/admin/models/unload") == (200, {"status": "unloaded"})
    assert generation_status(fresh_server) == 503
    assert call(fresh_server, "/api/oai/models")[1]["data"] == []
    assert admin(fresh_server, "/api/models/unload")[0] == 200  # again, by the legacy path: still fine


def greedy_text(server) -> str:
    status, body = call(server, "/api/oai/completions", GREEDY_COMPLETION)
    assert status == 200, body
    return body["choices"][0]["text"]


@pytest.fixture
def saved_files(root):
    """Names of files a test writes into the shared model folder, removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        (root / "assets" / "models" / name).unlink(missing_ok=True)


def test_save_writes_a_model_that_loads_and_answers_the_same(fresh_server, root, saved_files):
    saved_files += ["saved.st", "again.st"]
    before = greedy_text(fresh_server)
    status, body = admin(fresh_server, "/admin/models/save", {"path": "saved.st"})
    assert status == 200 and body["status"] == "saved", body
    assert (root / "assets" / "models" / "saved.st").is_file()
    assert admin(fresh_server, "/admin/models/load", {"model_path": "saved.st"})[0] == 200
    assert greedy_text(fresh_server) == before
    assert admin(fresh_server, "/api/models/save", {"model_path": "again.st"})[0] == 200  # legacy path and key


@pytest.mark.parametrize("body, status, param", [
    ({}, 400, "path"), ({"path": "../outside/x.st"}, 404, None), ({"path": "/tmp/x.st"}, 404, None),
    ({"path": "tiny.st"}, 409, "path"),  # the loaded model's own file
    ({"path": "no/such/folder.st"}, 404, "path"), ({"path": "sub"}, 409, "path"),  # were 500s (schemathesis)
])
def test_save_refuses_bad_targets(server, body, status, param):
    got, error = admin(server, "/admin/models/save", body)
    assert got == status and error["error"]["param"] == param


def test_save_without_a_model_is_503(root):
    served = serve(root, with_model=False)
    try:
        assert admin(served, "/admin/models/save", {"path": "x.st"})[0] == 503
    finally:
        served.close()


# ---- files/dir ----

def test_files_dir_lists_a_permitted_directory(server, root):
    status, entries = admin(server, "/admin/files/ls", {"path": "assets/models"})
    assert status == 200 and {e["name"] for e in entries} == {"tiny.st", "second.st", "broken.st", "notes.txt"}
    assert all(e["sha"] == "" for e in entries)
    status, entries = admin(server, "/admin/files/dir", {"path": str(root / "assets" / "models"), "is_sha": True})
    notes = next(e for e in entries if e["name"] == "notes.txt")
    assert notes["sha"] == hashlib.sha256(b"hello").hexdigest() and notes["size"] == 5
    assert admin(server, "/admin/files/dir", {"path": "assets/configs"}) == (200, [])


@pytest.mark.parametrize("path", ["assets/models/../../outside", "assets/models/escape", "outside", "/etc",
                                  "assets", "assets/unzip"])
def test_files_dir_outside_the_sandbox_is_403(server, path):
    status, body = admin(server, "/admin/files/dir", {"path": path})
    assert status == 403 and body["error"]["code"] == "forbidden"


def test_files_dir_missing_is_404_and_no_path_is_400(server):
    assert admin(server, "/admin/files/dir", {"path": "assets/models/nope"})[0] == 404
    assert admin(server, "/admin/files/dir", {"path": "assets/models/notes.txt"})[0] == 404
    assert admin(server, "/admin/files/dir", {})[0] == 400


# ---- config load and save ----

def test_config_document_round_trips():
    config = config_from_dict({"model": {"name": "m.st"}, "lora": [{"path": "a.lora", "alpha": 0.5}],
                               "state": [{"path": "s.state", "default": True}],
                               "adapter": {"Manual": 1, "engine": "ref"}, "web": {"path": "assets/www/index.zip"},
                               "listen": {"app_keys": [{"app_id": "a", "secret_key": "b"}]}})
    document = config_document(config)
    assert config_from_dict(document) == config
    assert config_from_dict(tomllib.loads(to_toml(document))) == config


def test_to_toml_writes_what_tomllib_reads():
    document = {"title": 'quote " back \\ tab \t nl \n é 🙂 \x7f', "n": -3, "x": 1e-05, "big": 1e300, "b": False,
                "list": [1, 2, [3, "4"]], "inline": [{"a": 1}, {"b": [True]}], "empty": [], "nothing": None,
                "t": {"k": "v", "deep": {"z": 0.5}, "e": {}}, "key with space": {"x.y": 1}}
    expected = {k: v for k, v in document.items() if k != "nothing"}
    assert tomllib.loads(to_toml(document)) == expected


def test_config_save_and_load_round_trip(server, root):
    document = config_document(make_config(root))
    status, body = admin(server, "/admin/files/config/save", {"path": "assets/configs/Saved.toml",
                                                              "config": document})
    assert status == 200, body
    assert load_config(root / "assets" / "configs" / "Saved.toml") == make_config(root)
    status, loaded = admin(server, "/api/files/config/load", {"path": "assets/configs/Saved.toml"})
    assert status == 200 and loaded == document


def test_config_save_refuses_other_extensions_and_places(server, root):
    document = config_document(make_config(root))
    assert admin(server, "/admin/files/config/save", {"path": "assets/configs/Saved.txt", "config": document})[0] == 403
    assert admin(server, "/admin/files/config/save", {"path": "outside/x.toml", "config": document})[0] == 403
    assert admin(server, "/admin/files/config/save",
                 {"path": "assets/models/escape/x.toml", "config": document})[0] == 403
    assert not (root / "outside" / "x.toml").exists()


def test_config_save_of_an_invalid_config_is_400_and_not_kept(server, root):
    bad = {"model": {"max_batch": "eight"}}
    status, body = admin(server, "/admin/files/config/save", {"path": "assets/configs/Bad.toml", "config": bad})
    assert status == 400 and "model.max_batch" in body["error"]["message"]
    assert not (root / "assets" / "configs" / "Bad.toml").exists()
    assert not list((root / "assets" / "configs").glob("*.tmp"))
    status, _ = admin(server, "/admin/files/config/save", {"path": "assets/configs/Bad.toml", "config": "x"})
    assert status == 400


def test_config_load_errors(server, root):
    assert admin(server, "/admin/files/config/load", {"path": "assets/configs/Missing.toml"})[0] == 404
    assert admin(server, "/admin/files/config/load", {"path": "outside/secret.txt"})[0] == 403
    (root / "assets" / "configs" / "Broken.toml").write_text("[model\n")
    status, body = admin(server, "/admin/files/config/load", {"path": "assets/configs/Broken.toml"})
    assert status == 400 and "invalid TOML" in body["error"]["message"]


# ---- unzip ----

def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def test_unzip_into_a_fresh_output(server, root):
    _zip(root / "assets" / "www" / "ui.zip", {"index.html": b"<html>", "js/app.js": b"1"})
    output = root / "assets" / "temp" / "ui"
    output.mkdir(parents=True, exist_ok=True)
    (output / "stale.txt").write_text("old")
    status, body = admin(server, "/admin/files/unzip", {"path": "assets/www/ui.zip", "output": "assets/temp/ui"})
    assert status == 200, body
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file()) == \
        ["index.html", "js/app.js"]
    status, _ = admin(server, "/api/files/unzip", {"zip_path": "assets/www/ui.zip", "target_dir": "assets/unzip/x"})
    assert status == 200 and (root / "assets" / "unzip" / "x" / "index.html").read_bytes() == b"<html>"


@pytest.mark.parametrize("member", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "C:\\evil.txt"])
def test_unzip_refuses_zip_slip(server, root, member):
    _zip(root / "assets" / "www" / "slip.zip", {"ok.txt": b"fine", member: b"evil"})
    output = root / "assets" / "unzip" / "slip"
    output.mkdir(parents=True, exist_ok=True)
    (output / "keep.txt").write_text("kept")
    status, body = admin(server, "/admin/files/unzip", {"path": "assets/www/slip.zip", "output": "assets/unzip/slip"})
    assert status == 400 and body["error"]["code"] == "unsafe_zip_member"
    assert (output / "keep.txt").exists() and not (output / "ok.txt").exists()  # a refused zip changes nothing
    assert not list(root.rglob("evil.txt"))


def test_unsafe_member_names():
    assert not unsafe_member("a/b..c/d.txt") and not unsafe_member("dir/")
    assert unsafe_member("..") and unsafe_member("a\\..\\b") and unsafe_member("\\x") and unsafe_member("D:x")


def test_unzip_sandbox_and_errors(server, root):
    _zip(root / "assets" / "www" / "ok.zip", {"a.txt": b"a"})
    (root / "outside" / "o.zip").write_bytes((root / "assets" / "www" / "ok.zip").read_bytes())
    (root / "assets" / "www" / "bad.zip").write_bytes(b"not a zip")

    def unzip(zip_path, output):
        return admin(server, "/admin/files/unzip", {"path": zip_path, "output": output})[0]

    assert unzip("outside/o.zip", "assets/unzip/o") == 403
    assert unzip("assets/www/ok.zip", "assets/models/o") == 403
    assert unzip("assets/www/ok.zip", "assets/unzip/../models/o") == 403
    assert unzip("assets/www/missing.zip", "assets/unzip/m") == 404
    assert unzip("assets/www/bad.zip", "assets/unzip/b") == 404
    assert not (root / "assets" / "models" / "o").exists()


@pytest.mark.parametrize("route, field", [("/admin/files/dir", "path"), ("/admin/models/load", "model_path"),
                                          ("/admin/files/config/load", "path")])
@pytest.mark.parametrize("bad, problem", [("a\0b", "NUL"), ("x" * 300, "longer than 255 bytes"),
                                          ("y/" * 2100, "longer than 4096 bytes"), ("\udaad.st", "lone surrogate")])
def test_a_path_no_file_system_takes_is_a_400(server, route, field, bad, problem):
    """os functions raise for these instead of answering (found by schemathesis: they were 500s)."""
    status, body = admin(server, route, {field: bad})
    assert status == 400 and problem in body["error"]["message"], body
    assert generation_status(server) == 200  # a load refused this way leaves the model loaded
