"""Ai00's management routes: the JWT exchange, model (re)load and unload, the model list and the sandboxed file
routes (reference ai00-server.md §1.2, §1.11, §7).

    add_admin_routes(app, config)                       # before the server starts
    add_admin_routes(app, config, assets_root=Path(...))  # the folder holding `assets/` (default: the CWD)

Routes (each `/admin/...` route also answers at its pre-0.5.2 `/api/...` path, §1.2 "Legacy paths"):

    POST /api/auth/exchange                    {app_id, app_secret} -> {token, code, message}       (no auth)
    GET  /api/models/list                      files of [model].path with sampled sha and ModelInfo   (no auth)
    POST /admin/models/load                    a ReloadRequest: close the runtime, start the new one
    GET  /admin/models/unload                  close the runtime; generation then answers 503
    POST /admin/models/save                    the loaded model, LoRAs merged, quantized as loaded (engine.save_prefab)
    POST /admin/files/dir, /admin/files/ls     {path, is_sha} -> the models/list shape
    POST /admin/files/config/load              {path} -> the TOML config as JSON
    POST /admin/files/config/save              {path, config} -> writes TOML (only .toml, checked before it is kept)
    POST /admin/files/unzip                    {path|zip_path, output|target_dir}

Every admin route checks a HS256 JWT (secret `[listen].slot`) unless `[listen].force_pass`; the legacy `/api/...`
aliases are checked too (Ai00 0.6 has no such routes, and unguarded model loading and file writing would be a hole).
File paths are canonicalized (symlinks resolved) and must lie under `assets/{models,tokenizer,configs,www}`
(unzip output: `assets/{unzip,temp}`), else 403. Every failure is an `ApiError` with an OpenAI-style JSON body.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from aiohttp import web

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ai00ref.engine import save_prefab
from ai00ref.errors import ModelFileError
from ai00ref.model_info import read_model_info
from ai00ref.server.config import ConfigError, config_from_dict, load_config, path_problem, resolve_under
from ai00ref.server.errors import ApiError, bad_request
from ai00ref.server.openapi import Operation, array, documented, nullable, obj, operation_of, typed
from ai00ref.server.protocol import parse_json_body
from ai00ref.server.runtime import start_runtime
from ai00ref.weights.safetensors_io import read_safetensors_header

log = logging.getLogger("ai00ref.server.admin")
CONFIG = web.AppKey("config", object)
ASSETS_ROOT = web.AppKey("assets_root", Path)             # the folder holding assets/ (the file sandbox)
LOAD_LOCK = web.AppKey("model_load_lock", asyncio.Lock)  # one load or unload at a time

READABLE_DIRS = ("assets/models", "assets/tokenizer", "assets/configs", "assets/www")  # §1.11 files/dir
UNZIP_DIRS = ("assets/unzip", "assets/temp")                                            # §1.11 files/unzip

SHA_WHOLE_FILE_LIMIT = 10_000_000  # §1.11: larger files are hashed from samples
SHA_SEGMENTS = 10
SHA_SEGMENT_BYTES = 1_000_000
MODEL_SUFFIXES = (".st", ".safetensors", ".prefab")  # files whose ModelInfo /api/models/list reports


def _server_app():
    """ai00ref.server.app (RUNTIME, model_info), imported on first use: app.py may import this module, so a
    top-level import would be a cycle whichever of the two is imported first."""
    from ai00ref.server import app
    return app


# ---- JWT (HS256, standard library only; §7) ----

class TokenError(ValueError):
    """A token that is malformed, wrongly signed or expired; the message says which."""


JWT_HEADER = {"alg": "HS256", "typ": "JWT"}
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str, part: str) -> bytes:
    if not _B64URL.match(text):
        raise TokenError(f"malformed token: the {part} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"malformed token: the {part} is not base64url") from None


def _compact_json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _json_part(text: str, part: str) -> dict:
    try:
        value = json.loads(_unb64url(text, part))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TokenError(f"malformed token: the {part} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"malformed token: the {part} is not a JSON object")
    return value


def _signature(signing_input: str, secret: str) -> bytes:
    return hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()


def make_token(sid: str, secret: str, expire_sec: int, now: float | None = None) -> str:
    """A HS256 JWT with Ai00's claims `{"sid": sid, "exp": now + expire_sec}` (§7)."""
    now = time.time() if now is None else now
    claims = {"sid": sid, "exp": int(now) + int(expire_sec)}
    signing_input = f"{_b64url(_compact_json(JWT_HEADER))}.{_b64url(_compact_json(claims))}"
    return f"{signing_input}.{_b64url(_signature(signing_input, secret))}"


def check_token(token: str, secret: str, now: float | None = None) -> dict:
    """The claims of a valid, unexpired HS256 token signed with `secret`, else TokenError (no leeway on `exp`)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: expected three dot-separated parts")
    if _json_part(parts[0], "header").get("alg") != "HS256":
        raise TokenError("unsupported token: the algorithm must be HS256")
    signature = _unb64url(parts[2], "signature")
    if not hmac.compare_digest(signature, _signature(f"{parts[0]}.{parts[1]}", secret)):
        raise TokenError("bad signature")
    claims = _json_part(parts[1], "claims")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise TokenError("the token has no numeric exp claim")
    if exp <= (time.time() if now is None else now):
        raise TokenError("the token has expired")
    return claims


# ---- the admin check (§7) ----

def request_token(request: web.Request) -> str | None:
    """The JWT from `Authorization` or `Proxy-Authorization` (`Bearer <jwt>`), else `?admin_token=`, else None."""
    for header in ("Authorization", "Proxy-Authorization"):
        scheme, _, token = request.headers.get(header, "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.query.get("admin_token") or None


def check_admin(request: web.Request) -> None:
    """Pass with `force_pass`, or a valid token; no token -> 401, a bad or expired one -> 403."""
    listen = request.app[CONFIG].listen
    if listen.force_pass:
        return
    token = request_token(request)
    if token is None:
        raise ApiError(401, "admin routes need a token: Authorization: Bearer <jwt> or ?admin_token=<jwt> "
                            "(get one from POST /api/auth/exchange)", code="unauthorized")
    try:
        check_token(token, listen.slot)
    except TokenError as error:
        raise ApiError(403, f"invalid admin token: {error}", code="forbidden") from None


def admin_only(handler):
    """The handler behind `check_admin` (its documented Operation marked admin)."""
    @functools.wraps(handler)
    async def checked(request: web.Request):
        check_admin(request)
        return await handler(request)
    if operation_of(handler) is not None:
        checked.api_operation = dataclasses.replace(operation_of(handler), admin=True)
    return checked


EXCHANGE_RESPONSE = obj({"token": nullable(typed("string")), "code": typed("integer"), "message": typed("string")},
                        required=("token", "code", "message"))


@documented(Operation("Exchange an app key for an admin token (JWT)", "auth",
                      request=obj({"app_id": typed("string"), "app_secret": typed("string")}),
                      response=EXCHANGE_RESPONSE, error_bodies=((403, EXCHANGE_RESPONSE),),
                      description="Ai00's bodies: 200 {token, code 200, message SUCCESS}, or 403 {token null, "
                                  "code 403, message NO-Match AppId and SecretKey}"))
async def exchange(request: web.Request) -> web.Response:
    """POST /api/auth/exchange {app_id, app_secret}: Ai00's exact bodies, 200 or 403 (§1.11)."""
    body = parse_json_body(await request.read())
    listen = request.app[CONFIG].listen
    app_id, secret = body.get("app_id"), body.get("app_secret")
    if isinstance(app_id, str) and isinstance(secret, str):
        for key in listen.app_keys:
            if key.app_id == app_id and hmac.compare_digest(key.secret_key.encode(), secret.encode()):
                token = make_token(app_id, listen.slot, listen.expire_sec)
                return web.json_response({"token": token, "code": 200, "message": "SUCCESS"})
    return web.json_response({"token": None, "code": 403, "message": "NO-Match AppId and SecretKey"}, status=403)


# ---- file lists with the sampled sha (§1.11 models/list) ----

def sampled_sha256(path: str | os.PathLike) -> str:
    """Ai00's file sha: SHA-256 of the whole file up to 10,000,000 bytes, else of 10 segments of 1,000,000 bytes
    read at offsets `i * size // 10`, hashed in order (lowercase hex)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        if size <= SHA_WHOLE_FILE_LIMIT:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        else:
            for i in range(SHA_SEGMENTS):
                file.seek(i * size // SHA_SEGMENTS)
                digest.update(file.read(SHA_SEGMENT_BYTES))
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class _ShapeOnly:
    """What `read_model_info` needs of a tensor: its shape, read from the safetensors header alone."""
    shape: tuple

    @property
    def ndim(self) -> int:
        return len(self.shape)


def model_file_info(path: Path) -> dict | None:
    """Ai00's ModelInfo of a safetensors model from its header (no tensor data read), or None."""
    if path.suffix not in MODEL_SUFFIXES:
        return None
    try:
        header, _ = read_safetensors_header(path)
        shapes = {name: _ShapeOnly(tuple(entry["shape"])) for name, entry in header.items() if name != "__metadata__"}
        quantized = json.loads(header.get("__metadata__", {}).get("quantized", "{}"))  # a prefab's (weights.prefab)
        for name, entry in quantized.items():  # stored as NAME.codes and NAME.scales: the dense shape is in metadata
            shapes[name] = _ShapeOnly(tuple(entry["shape"]))
        return _server_app().model_info(read_model_info(shapes, str(path)))
    except (ValueError, OSError, KeyError, IndexError, TypeError, AttributeError):
        return None


def file_entry(path: Path, with_sha: bool) -> dict:
    """One row of a file list: `{"path", "name", "size", "sha", "info"}` (sha "" unless asked for)."""
    return {"path": str(path), "name": path.name, "size": path.stat().st_size,
            "sha": sampled_sha256(path) if with_sha else "", "info": model_file_info(path)}


def file_entries(folder: Path, with_sha: bool) -> list[dict]:
    """The files (not directories) of `folder`, by name."""
    return [file_entry(path, with_sha) for path in sorted(folder.iterdir()) if path.is_file()]


FILE_ENTRY = obj({"path": typed("string"), "name": typed("string"), "size": typed("integer"),
                  "sha": typed("string", "Ai00's sampled SHA-256 (empty unless asked for)"),
                  "info": nullable(typed("object", "ModelInfo as in /api/models/info, for .st/.safetensors"))},
                 required=("path", "name", "size", "sha", "info"))
STATUS_PATH = obj({"status": typed("string"), "path": typed("string")}, required=("status",))


@documented(Operation("The files of the model folder, with sha and ModelInfo", "management",
                      response=array(FILE_ENTRY)))
async def models_list(request: web.Request) -> web.Response:
    """GET /api/models/list: the files of `[model].path` with sha and info; a missing folder gives []."""
    folder = Path(request.app[CONFIG].model.path)
    entries = await asyncio.to_thread(file_entries, folder, True) if folder.is_dir() else []
    return web.json_response(entries)


# ---- model management (§1.11 models/load, unload, save) ----

def _items(body: dict, name: str) -> list[dict]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise bad_request(f"{name} must be a list of objects", name)
    return value


def _file_path(root: Path, item: dict, name: str) -> str:
    path = item.get("path")
    if not isinstance(path, str) or not path:
        raise bad_request(f"each {name} entry needs a path", name)
    return str(resolve_under(root, path))


def _without_none(table: dict) -> dict:
    return {key: value for key, value in table.items() if value is not None}


def reload_config(config, body: dict):
    """(the Config to load, the model file) from a ReloadRequest (§1.11), or ApiError 400/404.

    Model, LoRA and state paths are resolved under `[model].path` (404 outside it or with `..`). `lora` and `state`
    list everything to load (absent: none, as in Ai00). `quant`, `quant_type`, `precision`, `token_chunk_size`,
    `max_batch`, `tokenizer_path` and `bnf` override the current config; absent ones keep it (Ai00 would reset
    them to its struct defaults). Of `adapter` only our `engine` key is read (`{"engine": "ref"}`).
    """
    model_path = body.get("model_path")
    if not isinstance(model_path, str) or not model_path:
        raise bad_request("model_path is required: a model file under the model folder", "model_path")
    root = Path(config.model.path)
    model_file = resolve_under(root, model_path)
    document = config_document(config)
    document["model"]["name"] = str(model_file)
    for key in ("quant", "quant_type", "precision", "token_chunk_size", "max_batch"):
        if body.get(key) is not None:
            document["model"][key] = body[key]
    document["lora"] = [_without_none({"path": _file_path(root, item, "lora"), "alpha": item.get("alpha")})
                        for item in _items(body, "lora")]
    document["state"] = [_without_none({"path": _file_path(root, item, "state"), "name": item.get("name"),
                                        "id": item.get("id"), "default": item.get("default")})
                         for item in _items(body, "state")]
    if body.get("tokenizer_path") is not None:
        if isinstance(body["tokenizer_path"], str) and path_problem(body["tokenizer_path"]):
            raise bad_request(f"tokenizer_path {path_problem(body['tokenizer_path'])}", "tokenizer_path")
        document["tokenizer"] = {"path": body["tokenizer_path"]}
    if isinstance(body.get("bnf"), dict):
        document["bnf"] = body["bnf"]
    adapter = body.get("adapter")
    if isinstance(adapter, dict) and "engine" in adapter:
        document["adapter"]["engine"] = adapter["engine"]
    try:
        return config_from_dict(document, "reload request"), model_file
    except ConfigError as error:
        raise bad_request(str(error)) from None


def _set_state(app: web.Application, key: web.AppKey, value) -> None:
    """`app[key] = value` on a running app. aiohttp deprecates changing a started app's state; the loaded runtime
    (and the config it came from) is the one thing here that is meant to change."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        app[key] = value


async def close_runtime(app: web.Application) -> None:
    """Drop the loaded runtime (if any) and close it off the event loop (closing joins the scheduler thread)."""
    runtime = app[_server_app().RUNTIME]
    _set_state(app, _server_app().RUNTIME, None)
    if runtime is not None:
        await asyncio.to_thread(runtime.close)


def load_failure(model_file: Path, error: Exception) -> ApiError:
    """A file that is not a model this server reads, or settings it cannot serve (quant on Taichi: a ConfigError), is
    the client's 400 (the message names the file); anything else a 500 naming the file and the problem."""
    if isinstance(error, (ModelFileError, ConfigError)):
        return ApiError(400, f"loading the model failed: {error}", param="model_path", code="load_failed")
    return ApiError(500, f"loading the model failed: {model_file}: {type(error).__name__}: {error}",
                    code="load_failed")


NAMED_FILES = array(obj({"path": typed("string", minLength=1), "alpha": nullable(typed("number")),
                         "name": nullable(typed("string")), "id": nullable(typed("string")),
                         "default": nullable(typed("boolean"))}, required=("path",)))
RELOAD_REQUEST = obj({
    "model_path": typed("string", "a model file under [model].path", minLength=1),
    "lora": nullable(NAMED_FILES), "state": nullable(NAMED_FILES),
    **{key: nullable(typed("integer")) for key in ("quant", "token_chunk_size", "max_batch")},
    "quant_type": nullable(typed("string")), "precision": nullable(typed("string", enum=["Fp16", "Fp32"])),
    "tokenizer_path": nullable(typed("string")), "bnf": nullable(typed("object")),
    "adapter": nullable(obj({"engine": typed("string", enum=["auto", "vulkan", "cuda", "cpu", "ref"])}))},
    required=("model_path",), description="Ai00's ReloadRequest; absent fields keep the current config")


@documented(Operation("Load a model (the current one is closed first)", "admin", request=RELOAD_REQUEST,
                      response=obj({"status": typed("string"), "model": typed("string")}), errors=(404, 500),
                      description="404: no such file under the model folder (the loaded model stays); 400: the file "
                                  "is not a model this server reads, or a config value is wrong"))
async def load_model(request: web.Request) -> web.Response:
    """POST /admin/models/load: close the current runtime, start the requested one -> 200; a missing file is a 404
    (the current model stays); a file that does not load is a 400 or 500, and then no model is loaded."""
    app = request.app
    config, model_file = reload_config(app[CONFIG], parse_json_body(await request.read()))
    if not model_file.is_file():  # before anything is closed: the loaded model stays
        raise ApiError(404, f"no such model file: {model_file}", param="model_path", code="not_found")
    async with app[LOAD_LOCK]:
        await close_runtime(app)
        try:
            runtime = await asyncio.to_thread(start_runtime, config, model_file, warm_up=True)
        except Exception as error:  # noqa: BLE001 - any load failure is the client's 500, not the server's end
            log.exception("loading %s failed", model_file)
            raise load_failure(model_file, error) from None
        _set_state(app, _server_app().RUNTIME, runtime)
        _set_state(app, CONFIG, config)
    return web.json_response({"status": "loaded", "model": str(model_file)})


@documented(Operation("Unload the model (generation then answers 503)", "admin", response=STATUS_PATH))
async def unload_model(request: web.Request) -> web.Response:
    """GET /admin/models/unload: close the runtime; generation answers 503 until the next load."""
    async with request.app[LOAD_LOCK]:
        await close_runtime(request.app)
    return web.json_response({"status": "unloaded"})


def _save_target(runtime, body: dict) -> Path:
    name = body.get("path") if body.get("path") is not None else body.get("model_path")
    if not isinstance(name, str) or not name:
        raise bad_request("path (or model_path) must name the file to write", "path")
    target = resolve_under(runtime.model_folder, name)  # 404 outside the model folder
    if target.resolve() == Path(runtime.model_path).resolve():
        raise ApiError(409, f"{name} is the loaded model's own file; choose another name", param="path",
                       code="conflict")
    if not target.parent.is_dir():
        raise ApiError(404, f"no such folder for {name}: {target.parent}", param="path", code="not_found")
    if target.is_dir():
        raise ApiError(409, f"{name} is a folder; name a file", param="path", code="conflict")
    return target


@documented(Operation("Write the loaded model, LoRAs merged and quantized as loaded, as one prefab under the model "
                      "folder", "admin",
                      request=obj({"path": nullable(typed("string")), "model_path": nullable(typed("string"))},
                                  description="path, or its alias model_path"),
                      response=STATUS_PATH, errors=(404, 409, 500, 503)))
async def save_model(request: web.Request) -> web.Response:
    """POST /admin/models/save `{"path"|"model_path"}`: the loaded model with its LoRAs merged and quantized with the
    settings it runs with, as one prefab under `[model].path` (ai00ref.engine.save_prefab). Ai00 writes a CBOR
    prefab of its quantized runtime (§10.4); ours is a safetensors prefab (spec/formats.md §Prefab, spec/api.md)."""
    runtime = _server_app().runtime_of(request)
    target = _save_target(runtime, parse_json_body(await request.read()))
    info = runtime.info
    try:
        await asyncio.to_thread(save_prefab, runtime.model_path, target, runtime.loras, info.quant_layers,
                                info.quant_type, runtime.tokenizer)
    except OSError as error:
        raise ApiError(500, f"writing {target} failed: {error}", code="save_failed") from None
    return web.json_response({"status": "saved", "path": str(target)})


# ---- the file sandbox (§1.11 files/*) ----

def sandboxed(assets_root: Path, value, allowed: tuple[str, ...], field: str = "path") -> Path:
    """The canonical path (symlinks and `..` resolved) of a request's path, which must lie under one of `allowed`
    (relative to `assets_root`), else 403. A relative path is taken from `assets_root`, as Ai00 takes it from
    the CWD."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"{field} is required", field)
    problem = path_problem(value)
    if problem is not None:
        raise bad_request(f"{field} {problem}", field)
    path = (assets_root / value).resolve()
    for folder in allowed:
        if path.is_relative_to((assets_root / folder).resolve()):
            return path
    raise ApiError(403, f"{field} {value!r} is outside the permitted directories ({', '.join(allowed)})",
                   param=field, code="forbidden")


PATH_REQUEST = obj({"path": typed("string", "under assets/{models,tokenizer,configs,www}", minLength=1)},
                   required=("path",))


@documented(Operation("The files of a permitted folder", "admin", response=array(FILE_ENTRY), errors=(403, 404),
                      request=obj({**PATH_REQUEST["properties"], "is_sha": nullable(typed("boolean"))},
                                  required=("path",))))
async def files_dir(request: web.Request) -> web.Response:
    """POST /admin/files/dir (and /ls) {path, is_sha=false}: the files of a permitted directory."""
    body = parse_json_body(await request.read())
    folder = sandboxed(request.app[ASSETS_ROOT], body.get("path"), READABLE_DIRS)
    if not folder.is_dir():
        raise ApiError(404, f"no such directory: {body['path']}", code="not_found")
    return web.json_response(await asyncio.to_thread(file_entries, folder, bool(body.get("is_sha", False))))


def _plain(value):
    """Paths -> strings, tuples -> lists, None entries of tables dropped (TOML has no null)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_document(config) -> dict:
    """A Config as the Config.toml document it reads from (`config_from_dict(config_document(c)) == c`)."""
    document = _plain(dataclasses.asdict(config))
    adapter = config.adapter
    mode = {"Manual": adapter.index} if adapter.mode == "Manual" else {adapter.mode: {}}
    document["adapter"] = {**mode, "engine": adapter.engine}
    return document


@documented(Operation("A TOML config as JSON", "admin", request=PATH_REQUEST, response=typed("object"),
                      errors=(403, 404)))
async def config_load(request: web.Request) -> web.Response:
    """POST /admin/files/config/load {path}: the TOML config as JSON; 404 missing, 400 invalid, 403 outside."""
    body = parse_json_body(await request.read())
    path = sandboxed(request.app[ASSETS_ROOT], body.get("path"), READABLE_DIRS)
    if not path.is_file():
        raise ApiError(404, f"no such config file: {body['path']}", code="not_found")
    try:
        config = load_config(path)
    except ConfigError as error:
        raise bad_request(str(error)) from None
    return web.json_response(config_document(config))


def _check_config_text(text: str, path: Path) -> None:
    """What `load_config` would say of `text` written at `path`: nothing, or a 400."""
    try:
        config_from_dict(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as error:
        raise bad_request(f"{path}: the config does not make valid TOML: {error}", "config") from None
    except ConfigError as error:
        raise bad_request(str(error), "config") from None


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as file:
        file.write(text)
    os.replace(file.name, path)


@documented(Operation("Write a config as TOML (checked first; .toml only)", "admin", response=STATUS_PATH,
                      request=obj({**PATH_REQUEST["properties"], "config": typed("object")},
                                  required=("path", "config")), errors=(403, 404)))
async def config_save(request: web.Request) -> web.Response:
    """POST /admin/files/config/save {path, config}: write the config as TOML. Only `.toml` (else 403), in the
    sandbox; the text is checked as `load_config` checks a file before it replaces anything (invalid -> 400)."""
    body = parse_json_body(await request.read())
    path = sandboxed(request.app[ASSETS_ROOT], body.get("path"), READABLE_DIRS)
    if path.suffix != ".toml":
        raise ApiError(403, f"only .toml files may be written, not {body['path']!r}", param="path", code="forbidden")
    if not isinstance(body.get("config"), dict):
        raise bad_request("config must be a JSON object", "config")
    if not path.parent.is_dir():
        raise ApiError(404, f"no such directory: {path.parent}", code="not_found")
    try:
        text = to_toml(body["config"])
    except TomlError as error:
        raise bad_request(f"config: {error}", "config") from None
    _check_config_text(text, path)
    await asyncio.to_thread(_write_atomically, path, text)
    return web.json_response({"status": "saved", "path": str(path)})


# ---- unzip ----

def unsafe_member(name: str) -> bool:
    """A zip member that would land outside the output: absolute, a drive, or a `..` component (zip-slip)."""
    posix = name.replace("\\", "/")
    return posix.startswith("/") or bool(PureWindowsPath(name).drive) or ".." in PurePosixPath(posix).parts


def extract_zip(zip_path: Path, output: Path) -> None:
    """Check every member, then empty `output` and extract into it (a refused zip leaves `output` alone)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = [name for name in archive.namelist() if unsafe_member(name)]
            if bad:
                raise ApiError(400, f"{zip_path.name}: refused unsafe member {bad[0]!r} (absolute or with '..')",
                               code="unsafe_zip_member")
            if output.is_dir():
                shutil.rmtree(output)
            elif output.exists():
                output.unlink()
            output.mkdir(parents=True)
            archive.extractall(output)
    except (zipfile.BadZipFile, OSError) as error:
        raise ApiError(404, f"cannot unzip {zip_path}: {error}", code="not_found") from None


@documented(Operation("Extract a permitted zip into assets/unzip or assets/temp", "admin", errors=(403, 404),
                      request=obj({name: nullable(typed("string")) for name in ("path", "zip_path", "output",
                                                                                "target_dir")},
                                  description="path (or zip_path) and output (or target_dir)"),
                      response=obj({"status": typed("string"), "output": typed("string")})))
async def unzip(request: web.Request) -> web.Response:
    """POST /admin/files/unzip {path|zip_path, output|target_dir}: extract a permitted zip into a fresh
    `assets/unzip/...` or `assets/temp/...` directory -> 200; a missing or unreadable zip -> 404."""
    body = parse_json_body(await request.read())
    root = request.app[ASSETS_ROOT]
    zip_field = "path" if body.get("path") is not None else "zip_path"
    out_field = "output" if body.get("output") is not None else "target_dir"
    zip_path = sandboxed(root, body.get(zip_field), READABLE_DIRS, zip_field)
    output = sandboxed(root, body.get(out_field), UNZIP_DIRS, out_field)
    if not zip_path.is_file():
        raise ApiError(404, f"no such zip file: {body[zip_field]}", code="not_found")
    await asyncio.to_thread(extract_zip, zip_path, output)
    return web.json_response({"status": "unzipped", "output": str(output)})


# ---- a small TOML writer (JSON values: tables, arrays, strings, numbers, booleans) ----

class TomlError(ValueError):
    """A value TOML cannot hold (null inside an array, or a non-JSON type)."""


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    def escape(char: str) -> str:
        if char in _ESCAPES:
            return _ESCAPES[char]
        return f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else char
    return '"' + "".join(escape(char) for char in text) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def _toml_value(value) -> str:
    """An inline value: scalar, array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _toml_float(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        if any(item is None for item in value):
            raise TomlError("null inside an array")
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    raise TomlError(f"cannot write a {type(value).__name__} as TOML")


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _emit_table(table: dict, path: list[str], lines: list[str]) -> None:
    """The table's plain keys first, then its sub-tables `[a.b]` and arrays of tables `[[a.b]]`; None is skipped."""
    nested = []
    for key, value in table.items():
        if isinstance(value, dict) or _is_table_array(value):
            nested.append((key, value))
        elif value is not None:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        sub = path + [key]
        dotted = ".".join(_toml_key(part) for part in sub)
        for item in value if isinstance(value, list) else [value]:
            lines.extend(["", f"[[{dotted}]]" if isinstance(value, list) else f"[{dotted}]"])
            _emit_table(item, sub, lines)


def to_toml(document: dict) -> str:
    """TOML text for a JSON-shaped document (nested dicts and lists of str, int, float, bool)."""
    lines: list[str] = []
    _emit_table(document, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


# ---- wiring ----


def _add_both(app: web.Application, method: str, path: str, handler) -> None:
    """`/admin/<path>` and its legacy alias `/api/<path>`, both behind the admin check."""
    checked = admin_only(handler)
    for prefix in ("/admin", "/api"):
        app.router.add_route(method, f"{prefix}/{path}", checked)


def add_admin_routes(app: web.Application, config, assets_root: Path | None = None) -> None:
    """Add the management routes to `app` (before it starts). `config` is the server's Config (also kept as
    `app[CONFIG]` and replaced by each successful load); `assets_root` holds `assets/` (default: the CWD)."""
    app[CONFIG] = config
    app[ASSETS_ROOT] = Path.cwd() if assets_root is None else Path(assets_root)
    app[LOAD_LOCK] = asyncio.Lock()
    app.router.add_post("/api/auth/exchange", exchange)
    app.router.add_get("/api/models/list", models_list)
    _add_both(app, "POST", "models/load", load_model)
    _add_both(app, "GET", "models/unload", unload_model)
    _add_both(app, "POST", "models/save", save_model)
    for name in ("dir", "ls"):
        _add_both(app, "POST", f"files/{name}", files_dir)
    _add_both(app, "POST", "files/unzip", unzip)
    _add_both(app, "POST", "files/config/load", config_load)
    _add_both(app, "POST", "files/config/save", config_save)
