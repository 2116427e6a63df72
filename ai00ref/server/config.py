"""Server configuration: Ai00's Config.toml as frozen dataclasses (reference ai00-server.md §6).

    config = load_config("assets/configs/Config.toml")      # read and check the TOML
    config = with_overrides(config, ip=args.ip, port=args.port)
    config = resolve_config_paths(config, Path.cwd())      # relative paths -> absolute, like Ai00

`config_from_dict(data, source)` is the pure part: a TOML document (a dict) in, a `Config` out.
Keys and defaults are Ai00's struct defaults, not the shipped file's (for example `token_chunk_size`
is 128 and `force_pass` false unless the file says otherwise). Unknown keys are logged as warnings
and ignored; a value of the wrong type or an unknown enum name raises `ConfigError`, one line
`"<file>: <dotted.key>: <problem>"`.

Our one extension is `[adapter].engine`, which picks the backend (see `AdapterConfig`).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import uuid
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ai00ref.server.errors import ApiError

log = logging.getLogger("ai00ref.server.config")

QUANT_TYPES = ("None", "Int8", "NF4", "SF4")
PRECISIONS = ("Fp16", "Fp32")
ADAPTER_MODES = ("Auto", "Economical", "Manual")
ENGINES = ("auto", "vulkan", "cuda", "cpu", "ref")


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the file, the key and the problem."""


# ---- the configuration ----

@dataclass(frozen=True)
class ModelConfig:
    path: Path = Path("assets/models")  # the model folder, also the sandbox of /admin/models/load and save
    name: str = ""                      # file name under `path`; "" means none configured
    quant: int = 0                      # the first `quant` layers get `quant_type`
    quant_type: str = "None"            # one of QUANT_TYPES
    precision: str = "Fp16"             # one of PRECISIONS: intermediate tensors
    token_chunk_size: int = 128         # most tokens per forward pass, all slots together
    max_batch: int = 8                  # concurrent slots


@dataclass(frozen=True)
class LoraConfig:
    path: Path
    alpha: float = 1.0


@dataclass(frozen=True)
class StateConfig:
    path: Path
    name: str | None = None   # None: the server uses the file name
    id: str | None = None     # a UUID (canonical form); None: the server draws a random v4 at each start
    default: bool = False     # the state for requests with no or an unknown state id


@dataclass(frozen=True)
class TokenizerConfig:
    path: Path = Path("assets/tokenizer/rwkv_vocab_v20230424.json")


@dataclass(frozen=True)
class BnfConfig:
    enable_bytes_cache: bool = True   # echoed only: Ai00 0.6 builds kbnf with its defaults (§5)
    start_nonterminal: str = "start"
    # ours: the bounds on untrusted grammars (spec/bnf.md §4)
    max_grammar_bytes: int = 64 * 1024
    compile_seconds: float = 5.0
    regex_memory_bytes: int = 16 * 1024 * 1024
    cache_entries: int = 32


@dataclass(frozen=True)
class AdapterConfig:
    """`[adapter]`: Ai00's GPU choice, which we record, and our `engine` key, which we use.

    Ai00 has `Auto = {}` (high-performance GPU), `Economical = {}` (low-power GPU) or `Manual = <index>`.
    We cannot choose among several GPUs, so every mode means `engine = "auto"` unless `engine` is given:
    "auto" takes the best Taichi arch (Vulkan GPU, then CUDA, then CPU); "vulkan", "cuda" and "cpu"
    name a Taichi arch; "ref" is the NumPy reference engine. `index` is Manual's GPU index, kept for display.
    """
    mode: str = "Auto"         # one of ADAPTER_MODES
    index: int | None = None   # Manual's GPU index, else None
    engine: str = "auto"       # one of ENGINES


@dataclass(frozen=True)
class AppKey:
    app_id: str
    secret_key: str


@dataclass(frozen=True)
class ListenConfig:
    ip: str = "0.0.0.0"             # "::" for IPv6
    port: int = 65530
    domain: str = "local"           # anything other than "local" forces TLS
    acme: bool = False
    tls: bool = False
    slot: str = "ai00s"             # HS256 secret of the admin JWTs
    force_pass: bool = False        # true: /admin/** needs no token (§7)
    expire_sec: int = 86400         # JWT lifetime
    app_keys: tuple[AppKey, ...] = ()


@dataclass(frozen=True)
class WebConfig:
    path: Path = Path("assets/www/index.zip")


@dataclass(frozen=True)
class EmbedConfig:
    model: str = "MultilingualE5Small"      # a fastembed model name (not checked here)
    endpoint: str = "https://huggingface.co"
    home: Path = Path("assets/models/hf")
    lib: Path | None = None                 # the ONNX Runtime library; None: the platform default


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    lora: tuple[LoraConfig, ...] = ()
    state: tuple[StateConfig, ...] = ()
    tokenizer: TokenizerConfig = TokenizerConfig()
    bnf: BnfConfig = BnfConfig()
    adapter: AdapterConfig = AdapterConfig()
    listen: ListenConfig = ListenConfig()
    web: WebConfig | None = WebConfig()      # None: no WebUI (a file without [web])
    embed: EmbedConfig | None = None         # None: /api/oai/embeds answers 400


def default_config() -> Config:
    """Ai00's struct defaults, with the WebUI on."""
    return Config()


# ---- reading one value ----

class _Invalid(Exception):
    """A value's problem; the reader adds the file and the key."""


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _expected(what: str, value: Any) -> _Invalid:
    return _Invalid(f"expected {what}, got {_describe(value)}")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _expected("a boolean", value)
    return value


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def read(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _expected("an integer", value)
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range {low}..{high}")
        return value
    return read


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expected("a number", value)
    return float(value)


def _positive_float(value: Any) -> float:
    number = _float(value)
    if not number > 0:
        raise _Invalid(f"{value} is not positive")
    return number


def _path(value: Any) -> Path:
    return Path(_str(value))


def _choice(*options: str) -> Callable[[Any], str]:
    def read(value: Any) -> str:
        if _str(value) not in options:
            raise _Invalid(f"{value!r} is not one of {', '.join(map(repr, options))}")
        return value
    return read


def _ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(_str(value)))
    except ValueError:
        raise _Invalid(f"{value!r} is not an IPv4 or IPv6 address") from None


def _uuid(value: Any) -> str:
    try:
        return str(uuid.UUID(_str(value)))
    except ValueError:
        raise _Invalid(f"{value!r} is not a UUID") from None


def _embed_model(value: Any) -> str:
    """A fastembed model name: `"MultilingualE5Small"` or serde's table form `{ MultilingualE5Small = {} }`."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value.values())) == {}:
        value = next(iter(value))
    if not isinstance(value, str) or not value:
        raise _expected("a model name", value)
    return value


_U32 = 2**32 - 1
_uint = _int_in(0, _U32)
_positive = _int_in(1, _U32)
_port = _int_in(1, 65535)


# ---- the key tables ----

@dataclass(frozen=True)
class _Key:
    name: str                          # the dataclass field
    read: Callable[[Any], Any]
    aliases: tuple[str, ...] = ()


MODEL_KEYS = (
    _Key("path", _path, aliases=("model_path",)),
    _Key("name", _str, aliases=("model_name",)),
    _Key("quant", _uint),
    _Key("quant_type", _choice(*QUANT_TYPES)),
    _Key("precision", _choice(*PRECISIONS)),
    _Key("token_chunk_size", _positive),
    _Key("max_batch", _positive),
)
MODEL_LEGACY_KEYS = ("stop", "embed_device")   # parsed and ignored, as in Ai00 0.6
LORA_KEYS = (_Key("path", _path), _Key("alpha", _float))
STATE_KEYS = (_Key("path", _path), _Key("name", _str), _Key("id", _uuid), _Key("default", _bool))
TOKENIZER_KEYS = (_Key("path", _path),)
BNF_KEYS = (_Key("enable_bytes_cache", _bool), _Key("start_nonterminal", _str), _Key("max_grammar_bytes", _positive),
            _Key("compile_seconds", _positive_float), _Key("regex_memory_bytes", _positive),
            _Key("cache_entries", _positive))
APP_KEY_KEYS = (_Key("app_id", _str), _Key("secret_key", _str))
LISTEN_KEYS = (
    _Key("ip", _ip), _Key("port", _port), _Key("domain", _str), _Key("acme", _bool), _Key("tls", _bool),
    _Key("slot", _str), _Key("force_pass", _bool), _Key("expire_sec", _uint),
)  # app_keys is read separately: an array of tables
WEB_KEYS = (_Key("path", _path),)
EMBED_KEYS = (_Key("model", _embed_model), _Key("endpoint", _str), _Key("home", _path), _Key("lib", _path))
SECTIONS = ("model", "lora", "state", "tokenizer", "bnf", "adapter", "listen", "web", "embed")


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


class _Reader:
    """Builds the dataclasses from one document, naming `source` in warnings and errors."""

    def __init__(self, source: str):
        self.source = source

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {problem}")

    def unknown(self, key: str) -> None:
        log.warning("%s: unknown key %r ignored", self.source, key)

    def value(self, read: Callable[[Any], Any], value: Any, key: str) -> Any:
        try:
            return read(value)
        except _Invalid as invalid:
            raise self.error(key, str(invalid)) from None

    def table(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_describe(value)}")
        return value

    def tables(self, value: Any, key: str) -> list[dict]:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.error(key, f"expected an array of tables ([[{key}]]), got {_describe(value)}")
        return value

    def section(self, cls: type, table: dict, prefix: str, keys: tuple[_Key, ...],
                ignored: tuple[str, ...] = ()) -> Any:
        """`cls(**values)` from `table`; absent keys keep the dataclass defaults."""
        by_name = {name: spec for spec in keys for name in (spec.name, *spec.aliases)}
        values: dict[str, Any] = {}
        for name, raw in table.items():
            key = _dotted(prefix, name)
            spec = by_name.get(name)
            if spec is None:
                if name not in ignored:
                    self.unknown(key)
                continue
            if spec.name in values:
                raise self.error(key, f"given twice (also as {' or '.join((spec.name, *spec.aliases))})")
            values[spec.name] = self.value(spec.read, raw, key)
        for missing in sorted(_required_fields(cls) - values.keys()):
            raise self.error(_dotted(prefix, missing), "missing (required)")
        return cls(**values)

    def array(self, cls: type, value: Any, prefix: str, keys: tuple[_Key, ...]) -> tuple:
        return tuple(self.section(cls, table, f"{prefix}[{i}]", keys)
                     for i, table in enumerate(self.tables(value, prefix)))

    def listen(self, table: dict) -> ListenConfig:
        rest = {name: value for name, value in table.items() if name != "app_keys"}
        listen = self.section(ListenConfig, rest, "listen", LISTEN_KEYS)
        app_keys = self.array(AppKey, table.get("app_keys", []), "listen.app_keys", APP_KEY_KEYS)
        return replace(listen, app_keys=app_keys)

    def adapter(self, value: Any) -> AdapterConfig:
        """`Auto = {}` | `Economical = {}` | `Manual = <index>`, or serde's string form `adapter = "Auto"`."""
        if isinstance(value, str):
            if value not in ("Auto", "Economical"):
                raise self.error("adapter", f"{value!r} is not one of 'Auto', 'Economical'")
            return AdapterConfig(mode=value)
        table = self.table(value, "adapter")
        modes = [name for name in table if name in ADAPTER_MODES]
        if len(modes) > 1:
            raise self.error("adapter", f"give one of Auto, Economical or Manual, not {' and '.join(modes)}")
        engine = self.value(_choice(*ENGINES), table["engine"], "adapter.engine") if "engine" in table else "auto"
        for name in table.keys() - {*ADAPTER_MODES, "engine"}:
            self.unknown(f"adapter.{name}")
        mode = modes[0] if modes else "Auto"
        if mode == "Manual":
            index = self.value(_uint, table["Manual"], "adapter.Manual")
            return AdapterConfig(mode=mode, index=index, engine=engine)
        for name in self.table(table.get(mode, {}), f"adapter.{mode}"):
            self.unknown(f"adapter.{mode}.{name}")
        return AdapterConfig(mode=mode, engine=engine)


def _required_fields(cls: type) -> set[str]:
    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}


# ---- building a Config ----

def config_from_dict(data: dict, source: str = "<config>") -> Config:
    """A `Config` from a parsed Config.toml; `source` names the file in warnings and errors."""
    reader = _Reader(source)
    for name in data.keys() - set(SECTIONS):
        reader.unknown(name)

    def section(name: str, cls: type, keys: tuple[_Key, ...], **options) -> Any:
        return reader.section(cls, reader.table(data.get(name, {}), name), name, keys, **options)

    return Config(
        model=section("model", ModelConfig, MODEL_KEYS, ignored=MODEL_LEGACY_KEYS),
        lora=reader.array(LoraConfig, data.get("lora", []), "lora", LORA_KEYS),
        state=reader.array(StateConfig, data.get("state", []), "state", STATE_KEYS),
        tokenizer=section("tokenizer", TokenizerConfig, TOKENIZER_KEYS),
        bnf=section("bnf", BnfConfig, BNF_KEYS),
        adapter=reader.adapter(data.get("adapter", {})),
        listen=reader.listen(reader.table(data.get("listen", {}), "listen")),
        web=section("web", WebConfig, WEB_KEYS) if "web" in data else None,
        embed=section("embed", EmbedConfig, EMBED_KEYS) if "embed" in data else None,
    )


def load_config(path: str | os.PathLike) -> Config:
    """Read and check a Config.toml; raises ConfigError for a missing file, bad TOML or a bad value."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    return config_from_dict(data, str(path))


def with_overrides(config: Config, ip: str | None = None, port: int | None = None) -> Config:
    """The config with the CLI's `--ip` and `--port` in `[listen]` (None keeps the file's value)."""
    reader = _Reader("command line")
    listen = config.listen
    if ip is not None:
        listen = replace(listen, ip=reader.value(_ip, ip, "--ip"))
    if port is not None:
        listen = replace(listen, port=reader.value(_port, port, "--port"))
    return replace(config, listen=listen)


# ---- paths ----

def _starts_with(path: Path, root: Path) -> bool:
    return path.parts[:len(root.parts)] == root.parts


def _join_under(root: Path, p: Path) -> Path:
    """Ai00's build_path join: keep an absolute path or one that already starts with `root`, else join."""
    return p if p.is_absolute() or _starts_with(p, root) else root / p


NAME_MAX, PATH_MAX = 255, 4096  # bytes: Linux's limits on a file name and a path


def path_problem(text: str) -> str | None:
    """Why no file system would take `text` as a path (os functions would raise, not answer), or None."""
    if "\0" in text:
        return "contains a NUL character"
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    if len(encoded) > PATH_MAX:
        return f"is longer than {PATH_MAX} bytes"
    if any(len(name.encode()) > NAME_MAX for name in text.split("/")):
        return f"has a name longer than {NAME_MAX} bytes"
    return None


def resolve_under(root: str | os.PathLike, p: str | os.PathLike) -> Path:
    """`p` as a path under `root` (Ai00's build_path), or ApiError 404.

    Refuses any `..` component; keeps an absolute `p` or one that already starts with `root`, else
    joins it to `root`; then the result, with symlinks resolved, must lie under the resolved root.
    Returns the joined path, not the resolved one. Relative paths resolve against the process's CWD.
    Nothing needs to exist: only symlinks that do exist are followed.
    """
    problem = path_problem(str(p))
    if problem is not None:
        raise ApiError(400, f"the path {problem}", code="invalid_value")
    root, p = Path(root), Path(p)
    if ".." in p.parts:
        raise ApiError(404, f"path {str(p)!r} must not contain '..'", code="not_found")
    candidate = _join_under(root, p)
    if not candidate.resolve().is_relative_to(root.resolve()):
        raise ApiError(404, f"path {str(p)!r} is outside the permitted directory {str(root)!r}",
                       code="not_found")
    return candidate


def _absolute(p: Path, base: Path) -> Path:
    return p if p.is_absolute() else base / p


def resolve_config_paths(config: Config, base: str | os.PathLike) -> Config:
    """The config with its relative paths made absolute against `base` (the caller's CWD, as in Ai00).

    LoRA and state paths are joined like Ai00's build_path (a bare file name goes under `[model].path`)
    but not checked: the reload checks them with `resolve_under`, so a bad path fails the model load,
    not the server. `[model].name` stays a name. A tokenizer path that does not exist under `base`
    is left as given (the server then falls back to the bundled vocabulary).
    """
    base = Path(base)
    given_dir = config.model.path
    model_dir = _absolute(given_dir, base)

    def model_file(p: Path) -> Path:
        return _absolute(_join_under(given_dir, p), base)

    tokenizer = _absolute(config.tokenizer.path, base)
    web = None if config.web is None else replace(config.web, path=_absolute(config.web.path, base))
    embed = None if config.embed is None else replace(
        config.embed, home=_absolute(config.embed.home, base),
        lib=None if config.embed.lib is None else _absolute(config.embed.lib, base))
    return replace(
        config,
        model=replace(config.model, path=model_dir),
        lora=tuple(replace(lora, path=model_file(lora.path)) for lora in config.lora),
        state=tuple(replace(state, path=model_file(state.path)) for state in config.state),
        tokenizer=replace(config.tokenizer, path=tokenizer) if tokenizer.exists() else config.tokenizer,
        web=web,
        embed=embed,
    )
