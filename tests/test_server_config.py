"""Config.toml parsing, CLI overrides and path sandboxing (ai00ref/server/config.py, reference §6)."""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest

from ai00ref.server.config import (AdapterConfig, AppKey, BnfConfig, Config, ConfigError, EmbedConfig,
                                   ListenConfig, LoraConfig, ModelConfig, StateConfig, TokenizerConfig,
                                   WebConfig, config_from_dict, default_config, load_config,
                                   resolve_config_paths, resolve_under, with_overrides)
from ai00ref.server.errors import ApiError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "assets" / "configs" / "Config.toml"
LOGGER = "ai00ref.server.config"

EVERY_KEY = """
[model]
path = "my/models"
name = "m.st"
quant = 3
quant_type = "NF4"
precision = "Fp32"
token_chunk_size = 64
max_batch = 4
stop = ["\\n\\n"]
embed_device = "Cpu"

[[lora]]
path = "a.lora"
alpha = 192

[[lora]]
path = "b.lora"
alpha = 0.5

[[state]]
path = "s.state"
name = "chat"
id = "FD7A60ED-7807-449F-8256-BCCAE3246222"
default = true

[[state]]
path = "t.state"

[tokenizer]
path = "vocab.json"

[bnf]
enable_bytes_cache = false
start_nonterminal = "root"

[adapter]
Manual = 1

[listen]
ip = "::"
port = 8080
domain = "example.com"
acme = true
tls = true
slot = "secret"
force_pass = true
expire_sec = 60

[[listen.app_keys]]
app_id = "a"
secret_key = "x"

[[listen.app_keys]]
app_id = "b"
secret_key = "y"

[web]
path = "ui.zip"

[embed]
model = "BGESmallENV15"
endpoint = "https://hf-mirror.com"
home = "hf"
lib = "libonnxruntime.so"
"""


def write(tmp_path: Path, text: str, name: str = "Config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    return str(caught.value)


# ---- defaults and the shipped file ----

def test_defaults_are_ai00_struct_defaults():
    config = default_config()
    assert config == Config()
    assert config.model == ModelConfig(path=Path("assets/models"), name="", quant=0, quant_type="None",
                                       precision="Fp16", token_chunk_size=128, max_batch=8)
    assert config.lora == () and config.state == ()
    assert config.tokenizer.path == Path("assets/tokenizer/rwkv_vocab_v20230424.json")
    assert config.bnf == BnfConfig(enable_bytes_cache=True, start_nonterminal="start")
    assert config.adapter == AdapterConfig(mode="Auto", index=None, engine="auto")
    assert config.listen == ListenConfig(ip="0.0.0.0", port=65530, domain="local", acme=False, tls=False,
                                         slot="ai00s", force_pass=False, expire_sec=86400, app_keys=())
    assert config.web == WebConfig(Path("assets/www/index.zip"))
    assert config.embed is None


def test_empty_file_has_no_web_or_embed(tmp_path):
    config = load_text(tmp_path, "")
    assert config.web is None and config.embed is None
    assert config.model == ModelConfig() and config.listen == ListenConfig()


def test_shipped_config_loads_without_warnings(caplog):
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        config = load_config(SHIPPED)
    assert caplog.records == []
    assert config.model == ModelConfig(path=Path("assets/models"), name="rwkv7-pydoc-L4-C256.st", quant=0,
                                       quant_type="None", precision="Fp16", token_chunk_size=256, max_batch=8)
    assert (REPO / config.model.path / config.model.name).is_file()  # the project's own model ships with it
    assert config.lora == () and config.state == ()
    assert config.tokenizer == TokenizerConfig()
    assert config.bnf == BnfConfig()
    assert config.adapter == AdapterConfig(mode="Auto", engine="auto")
    assert config.listen == ListenConfig(ip="0.0.0.0", port=65530, domain="local", acme=False, tls=False,
                                         slot="permisionkey", force_pass=True, expire_sec=86400,
                                         app_keys=(AppKey("admin", "ai00_is_good"),))
    assert config.web == WebConfig()
    assert config.embed is None


def test_shipped_commented_examples_load(caplog, tmp_path):
    """Uncommenting the shipped [[lora]], [[state]], engine and [embed] examples gives a valid config."""
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line[2:] if line.startswith("# ") and ("=" in line or line[2:].startswith("["))
                     and not line.startswith("#  ") else line for line in lines)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = load_text(tmp_path, text)
    assert caplog.records == []
    assert config.lora == (LoraConfig(Path("assets/models/my-model.lora"), 192.0),)
    assert config.state[0].id == "fd7a60ed-7807-449f-8256-bccae3246222"
    assert config.adapter.engine == "ref"
    assert config.embed == EmbedConfig(lib=Path("assets/ort/onnxruntime.dll"))


# ---- every key ----

def test_every_key_parses(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = load_text(tmp_path, EVERY_KEY)
    assert caplog.records == []   # the legacy keys stop and embed_device are silent
    assert config.model == ModelConfig(path=Path("my/models"), name="m.st", quant=3, quant_type="NF4",
                                       precision="Fp32", token_chunk_size=64, max_batch=4)
    assert config.lora == (LoraConfig(Path("a.lora"), 192.0), LoraConfig(Path("b.lora"), 0.5))
    assert isinstance(config.lora[0].alpha, float)
    assert config.state == (StateConfig(Path("s.state"), "chat", "fd7a60ed-7807-449f-8256-bccae3246222", True),
                            StateConfig(Path("t.state")))
    assert config.tokenizer == TokenizerConfig(Path("vocab.json"))
    assert config.bnf == BnfConfig(enable_bytes_cache=False, start_nonterminal="root")
    assert config.adapter == AdapterConfig(mode="Manual", index=1, engine="auto")
    assert config.listen == ListenConfig(ip="::", port=8080, domain="example.com", acme=True, tls=True,
                                         slot="secret", force_pass=True, expire_sec=60,
                                         app_keys=(AppKey("a", "x"), AppKey("b", "y")))
    assert config.web == WebConfig(Path("ui.zip"))
    assert config.embed == EmbedConfig(model="BGESmallENV15", endpoint="https://hf-mirror.com",
                                       home=Path("hf"), lib=Path("libonnxruntime.so"))


def test_model_aliases():
    config = config_from_dict({"model": {"model_path": "x", "model_name": "y.st"}}, "t.toml")
    assert config.model.path == Path("x") and config.model.name == "y.st"


def test_alias_and_name_together_is_an_error():
    with pytest.raises(ConfigError, match=r"t\.toml: model\.model_path: given twice"):
        config_from_dict({"model": {"path": "x", "model_path": "y"}}, "t.toml")


@pytest.mark.parametrize("adapter, expected", [
    ({"Auto": {}}, AdapterConfig("Auto", None, "auto")),
    ({"Economical": {}}, AdapterConfig("Economical", None, "auto")),
    ({"Manual": 0}, AdapterConfig("Manual", 0, "auto")),
    ({"Auto": {}, "engine": "ref"}, AdapterConfig("Auto", None, "ref")),
    ({"Manual": 2, "engine": "cuda"}, AdapterConfig("Manual", 2, "cuda")),
    ({"engine": "vulkan"}, AdapterConfig("Auto", None, "vulkan")),
    ({"Economical": {}, "engine": "cpu"}, AdapterConfig("Economical", None, "cpu")),
    ("Economical", AdapterConfig("Economical", None, "auto")),   # serde's string form
    ({}, AdapterConfig()),
])
def test_adapter_forms(adapter, expected):
    assert config_from_dict({"adapter": adapter}, "t.toml").adapter == expected


def test_embed_model_table_form():
    config = config_from_dict({"embed": {"model": {"MultilingualE5Base": {}}}}, "t.toml")
    assert config.embed == EmbedConfig(model="MultilingualE5Base")


# ---- unknown keys ----

def test_unknown_keys_warn_and_load(tmp_path, caplog):
    text = """
        extra = 1
        [model]
        name = "m.st"
        colour = "blue"
        [[lora]]
        path = "a.lora"
        weight = 2
        [adapter]
        Auto = { fast = true }
        turbo = true
        [listen]
        port = 1234
        [[listen.app_keys]]
        app_id = "a"
        secret_key = "b"
        note = "x"
        [embed]
        name = { MultilingualE5Small = {} }
    """
    path = write(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = load_config(path)
    assert config.model.name == "m.st" and config.listen.port == 1234 and config.embed == EmbedConfig()
    messages = [record.getMessage() for record in caplog.records]
    for key in ("extra", "model.colour", "lora[0].weight", "adapter.Auto.fast", "adapter.turbo",
                "listen.app_keys[0].note", "embed.name"):
        assert any(f"'{key}'" in message and str(path) in message for message in messages), key
    assert len(messages) == 7
    assert all(record.levelno == logging.WARNING for record in caplog.records)


# ---- errors ----

@pytest.mark.parametrize("text, key, problem", [
    ('[model]\nquant = "3"', "model.quant", "expected an integer, got a string ('3')"),
    ("[model]\nquant = -1", "model.quant", "out of range"),
    ("[model]\nmax_batch = 0", "model.max_batch", "out of range"),
    ("[model]\ntoken_chunk_size = 1.5", "model.token_chunk_size", "expected an integer"),
    ("[model]\nquant = true", "model.quant", "expected an integer, got a boolean"),
    ('[model]\nquant_type = "int8"', "model.quant_type", "'int8' is not one of 'None', 'Int8', 'NF4', 'SF4'"),
    ('[model]\nprecision = "Bf16"', "model.precision", "is not one of 'Fp16', 'Fp32'"),
    ("[model]\npath = 3", "model.path", "expected a string"),
    ("[model]\nmodel_name = 3", "model.model_name", "expected a string"),
    ('model = "x"', "model", "expected a table"),
    ('[[lora]]\npath = "a"\nalpha = true', "lora[0].alpha", "expected a number, got a boolean"),
    ('[[lora]]\npath = "a"\nalpha = "1"', "lora[0].alpha", "expected a number"),
    ("[[lora]]\nalpha = 1", "lora[0].path", "missing"),
    ('[lora]\npath = "a"', "lora", "expected an array of tables ([[lora]])"),
    ('[[state]]\npath = "s"\nid = "nope"', "state[0].id", "not a UUID"),
    ('[[state]]\npath = "s"\ndefault = 1', "state[0].default", "expected a boolean"),
    ("[tokenizer]\npath = []", "tokenizer.path", "expected a string, got an array"),
    ('[bnf]\nenable_bytes_cache = "yes"', "bnf.enable_bytes_cache", "expected a boolean"),
    ("[adapter]\nManual = -1", "adapter.Manual", "out of range"),
    ('[adapter]\nManual = "0"', "adapter.Manual", "expected an integer"),
    ("[adapter]\nAuto = {}\nManual = 0", "adapter", "not Auto and Manual"),
    ("[adapter]\nAuto = 1", "adapter.Auto", "expected a table"),
    ('[adapter]\nengine = "gpu"', "adapter.engine", "'gpu' is not one of 'auto', 'vulkan', 'cuda', 'cpu', 'ref'"),
    ('adapter = "Manual"', "adapter", "is not one of 'Auto', 'Economical'"),
    ('[listen]\nip = "localhost"', "listen.ip", "not an IPv4 or IPv6 address"),
    ("[listen]\nport = 70000", "listen.port", "out of range 1..65535"),
    ('[listen]\nport = "80"', "listen.port", "expected an integer"),
    ("[listen]\nforce_pass = 1", "listen.force_pass", "expected a boolean"),
    ("[listen]\nexpire_sec = 4294967296", "listen.expire_sec", "out of range"),
    ('[[listen.app_keys]]\napp_id = "a"', "listen.app_keys[0].secret_key", "missing"),
    ('[[listen.app_keys]]\napp_id = 1\nsecret_key = "b"', "listen.app_keys[0].app_id", "expected a string"),
    ("[web]\npath = false", "web.path", "expected a string"),
    ("[embed]\nmodel = 3", "embed.model", "expected a model name"),
    ("[embed]\nhome = 3", "embed.home", "expected a string"),
])
def test_bad_values_raise_one_line(tmp_path, text, key, problem):
    message = config_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'Config.toml'}: {key}: ")
    assert problem in message
    assert "\n" not in message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml: no such config file"):
        load_config(path)


def test_invalid_toml(tmp_path):
    assert "invalid TOML" in config_error(tmp_path, "[model\nname = 1")


def test_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


# ---- CLI overrides ----

def test_with_overrides():
    config = default_config()
    assert with_overrides(config) == config
    changed = with_overrides(config, ip="127.0.0.1", port=8000)
    assert changed.listen.ip == "127.0.0.1" and changed.listen.port == 8000
    assert changed.listen.slot == config.listen.slot and changed.model == config.model
    assert with_overrides(config, port=1).listen.ip == "0.0.0.0"
    assert with_overrides(config, ip="::1").listen.port == 65530


@pytest.mark.parametrize("options, match", [
    ({"port": 0}, r"--port: 0 is out of range 1\.\.65535"),
    ({"port": 65536}, "--port"),
    ({"port": True}, "--port: expected an integer"),
    ({"ip": "nowhere"}, "--ip: 'nowhere' is not an IPv4 or IPv6 address"),
])
def test_bad_overrides(options, match):
    with pytest.raises(ConfigError, match=match):
        with_overrides(default_config(), **options)


# ---- resolve_under ----

@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    return root


def test_relative_name_is_joined(models):
    assert resolve_under(models, "m.st") == models / "m.st"
    assert resolve_under(str(models), "sub/m.st") == models / "sub" / "m.st"


def test_absolute_inside_is_kept(models):
    assert resolve_under(models, models / "m.st") == models / "m.st"


def test_starting_with_root_is_kept(models, monkeypatch):
    monkeypatch.chdir(models.parent)
    assert resolve_under("models", "models/m.st") == Path("models/m.st")
    assert resolve_under(Path("models"), "m.st") == Path("models/m.st")


@pytest.mark.parametrize("p", ["../m.st", "a/../../m.st", "a/../m.st", ".."])
def test_dot_dot_is_refused(models, p):
    with pytest.raises(ApiError) as caught:
        resolve_under(models, p)
    assert caught.value.status == 404 and "'..'" in caught.value.message


def test_absolute_outside_is_refused(models, tmp_path):
    with pytest.raises(ApiError) as caught:
        resolve_under(models, tmp_path / "other" / "m.st")
    assert caught.value.status == 404 and "outside" in caught.value.message


def test_sibling_with_common_prefix_is_refused(models, tmp_path):
    with pytest.raises(ApiError):
        resolve_under(models, tmp_path / "models2" / "m.st")


def test_symlink_escaping_is_refused(models, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "m.st").write_bytes(b"x")
    os.symlink(outside, models / "link")
    with pytest.raises(ApiError) as caught:
        resolve_under(models, "link/m.st")
    assert caught.value.status == 404


def test_symlink_inside_is_allowed(models):
    (models / "real").mkdir()
    os.symlink(models / "real", models / "alias")
    assert resolve_under(models, "alias/m.st") == models / "alias" / "m.st"


def test_symlinked_root_is_allowed(models, tmp_path):
    os.symlink(models, tmp_path / "root-link")
    assert resolve_under(tmp_path / "root-link", "m.st") == tmp_path / "root-link" / "m.st"


# ---- resolve_config_paths ----

def test_resolve_config_paths(tmp_path):
    (tmp_path / "assets/tokenizer").mkdir(parents=True)
    (tmp_path / "assets/tokenizer/rwkv_vocab_v20230424.json").write_text("{}")
    config = Config(
        model=ModelConfig(name="m.st"),
        lora=(LoraConfig(Path("assets/models/a.lora")), LoraConfig(Path("/abs/b.lora"), 2.0)),
        state=(StateConfig(Path("s.state"), id="x"),),
        embed=EmbedConfig(lib=Path("ort/lib.so")),
    )
    resolved = resolve_config_paths(config, tmp_path)
    assert resolved.model == replace(config.model, path=tmp_path / "assets/models")
    assert resolved.lora == (LoraConfig(tmp_path / "assets/models/a.lora"), LoraConfig(Path("/abs/b.lora"), 2.0))
    assert resolved.state == (StateConfig(tmp_path / "assets/models/s.state", id="x"),)
    assert resolved.tokenizer.path == tmp_path / "assets/tokenizer/rwkv_vocab_v20230424.json"
    assert resolved.web.path == tmp_path / "assets/www/index.zip"
    assert resolved.embed == EmbedConfig(home=tmp_path / "assets/models/hf", lib=tmp_path / "ort/lib.so")
    assert resolve_config_paths(resolved, tmp_path) == resolved
    for lora in resolved.lora[:1]:
        assert resolve_under(resolved.model.path, lora.path) == lora.path


def test_missing_tokenizer_is_left_as_given(tmp_path):
    resolved = resolve_config_paths(default_config(), tmp_path)
    assert resolved.tokenizer.path == Path("assets/tokenizer/rwkv_vocab_v20230424.json")


def test_resolve_config_paths_keeps_missing_sections(tmp_path):
    resolved = resolve_config_paths(config_from_dict({}, "t.toml"), tmp_path)
    assert resolved.web is None and resolved.embed is None


def test_bad_lora_path_is_left_for_the_reload_to_refuse(tmp_path):
    config = Config(lora=(LoraConfig(Path("../x.lora")),))
    resolved = resolve_config_paths(config, tmp_path)
    with pytest.raises(ApiError):
        resolve_under(resolved.model.path, resolved.lora[0].path)
