"""Prefabs (spec/formats.md §Prefab), `convert --quant`, `bench --quant`, and the server's quant settings."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ai00ref
from ai00ref.cli import main
from ai00ref.engine import save_prefab
from ai00ref.errors import ModelFileError
from ai00ref.tokenizer import load_tokenizer
from ai00ref.weights import canonical
from ai00ref.weights.prefab import PREFAB_FORMAT, read_prefab_header, vocab_identity
from ai00ref.weights.pth import write_pth
from ai00ref.weights.random_model import RandomModelSpec, random_lora_tensors, write_random_model
from ai00ref.weights.safetensors_io import read_safetensors, read_safetensors_metadata, write_safetensors

SPEC = RandomModelSpec("v7", n_layer=2, n_embd=64, n_vocab=64, head_size=16)
PROMPT = [[0, 3, 17, 42, 5]]


def logits_of(model, tokens=PROMPT):
    return model.forward(tokens, model.new_state(len(tokens)))[0]


@pytest.fixture
def model_path(tmp_path):
    return write_random_model(SPEC, tmp_path / "m.st")


@pytest.fixture
def prefab(model_path, tmp_path):
    save_prefab(model_path, tmp_path / "m.prefab", quant=2, quant_type="nf4")
    return tmp_path / "m.prefab"


def rewrite_metadata(path, **changes):
    """The same file with some metadata strings changed."""
    tensors, metadata = read_safetensors(path), read_safetensors_metadata(path)
    write_safetensors(path, {k: np.array(v) for k, v in tensors.items()}, metadata={**metadata, **changes})


# ---- the format ----

@pytest.mark.parametrize("variant", ["v4", "v5.2", "v6", "v7"])
@pytest.mark.parametrize("scheme", ["int8", "sf4"])
def test_a_prefab_loads_as_the_quantized_model_without_quantizing_again(variant, scheme, tmp_path, monkeypatch):
    spec = RandomModelSpec(variant, n_layer=2, n_embd=64, n_vocab=64, head_size=16)
    path = write_random_model(spec, tmp_path / "m.st")
    expected = ai00ref.load_model(path, quant=1, quant_type=scheme)
    save_prefab(path, tmp_path / "m.prefab", quant=1, quant_type=scheme)
    monkeypatch.setattr(canonical, "quantize", lambda *a: pytest.fail("a prefab was quantized again"))
    loaded = ai00ref.load_model(tmp_path / "m.prefab")
    np.testing.assert_array_equal(logits_of(loaded), logits_of(expected))
    assert (loaded.info.quant_layers, loaded.info.quant_type) == (1, scheme)
    assert loaded.info.weight_bytes == expected.info.weight_bytes


def test_prefab_metadata_and_stored_layout(prefab):
    header = read_prefab_header(prefab)
    assert header.format == PREFAB_FORMAT and header.n_vocab == 64 and header.n_layer == 2
    assert (header.quant.layers, header.quant.scheme) == (2, "nf4")
    assert header.vocab == vocab_identity(load_tokenizer(), 64) and header.source == "m.st"
    tensors = read_safetensors(prefab)
    codes, scales = tensors["blocks.1.att.key.weight.codes"], tensors["blocks.1.att.key.weight.scales"]
    assert codes.dtype == np.uint8 and codes.shape == (64, 32)
    assert scales.dtype == np.float16 and scales.shape == (64, 1)
    assert header.quantized["blocks.1.att.key.weight"] == {"scheme": "nf4", "shape": [64, 64]}
    assert tensors["blocks.0.att.w1"].dtype == np.float16 and "head.weight" in tensors  # as in the .st: float


def test_a_prefab_with_loras_merged_before_quantizing(model_path, tmp_path):
    write_pth(tmp_path / "a.lora.pth", random_lora_tensors(SPEC, rank=4))
    lora = [ai00ref.Lora(tmp_path / "a.lora.pth", 8.0)]
    save_prefab(model_path, tmp_path / "merged.prefab", lora, quant=2, quant_type="int8")
    np.testing.assert_array_equal(logits_of(ai00ref.load_model(tmp_path / "merged.prefab")),
                                  logits_of(ai00ref.load_model(model_path, lora=lora, quant=2, quant_type="int8")))
    assert "a.lora.pth*8.0" in read_prefab_header(tmp_path / "merged.prefab").lora


def test_saving_a_prefab_again_keeps_it(prefab, tmp_path):
    save_prefab(prefab, tmp_path / "again.prefab", quant=2, quant_type="nf4")
    np.testing.assert_array_equal(logits_of(ai00ref.load_model(tmp_path / "again.prefab")),
                                  logits_of(ai00ref.load_model(prefab)))


# ---- refusals: one line naming the file and the mismatch ----

def test_another_format_version_is_refused(prefab):
    rewrite_metadata(prefab, prefab_version="1", writer="ai00ref 0.0.9")
    with pytest.raises(ModelFileError, match=r"m\.prefab: prefab format 1 \(written by ai00ref 0\.0\.9\); this "
                                             r"ai00ref reads prefab format 2"):
        ai00ref.load_model(prefab)


def test_another_vocabulary_is_refused(prefab, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("".join(f"{i} 'tok{i}' {len(f'tok{i}')}\n" for i in range(1, 64)), encoding="utf-8")
    assert ai00ref.load_model(prefab, tokenizer=load_tokenizer()).info.quant_type == "nf4"
    with pytest.raises(ModelFileError, match=r"m\.prefab: prefab made for the vocabulary 64:sha256:\w+, but the "
                                             r"tokenizer in use is 64:sha256:"):
        ai00ref.load_model(prefab, tokenizer=load_tokenizer(other))


@pytest.mark.parametrize("quant, quant_type", [(2, "int8"), (1, "nf4")])
def test_other_quant_settings_for_a_prefab_are_refused(prefab, quant, quant_type):
    with pytest.raises(ModelFileError, match="prefab already quantized with quant=2 quant_type=nf4"):
        ai00ref.load_model(prefab, quant=quant, quant_type=quant_type)
    assert ai00ref.load_model(prefab, quant=5, quant_type="nf4").info.quant_layers == 2  # the same layers: fine


def test_loras_on_a_quantized_prefab_are_refused(prefab, tmp_path):
    write_pth(tmp_path / "a.lora.pth", random_lora_tensors(SPEC, rank=4))
    with pytest.raises(ModelFileError, match="LoRAs cannot be merged into a quantized prefab"):
        ai00ref.load_model(prefab, lora=[ai00ref.Lora(tmp_path / "a.lora.pth")])


def test_broken_quantized_tensors_are_refused(prefab):
    tensors, metadata = read_safetensors(prefab), read_safetensors_metadata(prefab)
    tensors["blocks.0.ffn.key.weight.codes"] = np.array(tensors["blocks.0.ffn.key.weight.codes"][:, :-1])
    write_safetensors(prefab, tensors, metadata=metadata)
    with pytest.raises(ModelFileError, match=r"quantized matrix blocks\.0\.ffn\.key\.weight \(nf4, 256x64\)"):
        ai00ref.load_model(prefab)


def test_vocab_identity_is_the_same_for_one_vocabulary_in_two_files(tmp_path):
    world = load_tokenizer()
    text = "".join(f"{i} {world.token_bytes(i)!r} {len(world.token_bytes(i))}\n" for i in range(1, 300))
    (tmp_path / "head.txt").write_text(text, encoding="utf-8")
    assert vocab_identity(load_tokenizer(tmp_path / "head.txt"), 300) == vocab_identity(world, 300)
    assert vocab_identity(world, 300) != vocab_identity(world, 301)


# ---- command line ----

def test_convert_writes_a_quantized_prefab(model_path, tmp_path, capsys):
    out = tmp_path / "cli.prefab"
    assert main(["convert", "--input", str(model_path), "--output", str(out), "--quant", "1", "--quant-type", "sf4",
                 "--no-progress"]) == 0
    assert "quant: 1 layers sf4" in capsys.readouterr().out
    np.testing.assert_array_equal(logits_of(ai00ref.load_model(out)),
                                  logits_of(ai00ref.load_model(model_path, quant=1, quant_type="sf4")))


def test_convert_of_a_prefab_with_other_settings_is_one_line(prefab, tmp_path, capsys):
    assert main(["convert", "--input", str(prefab), "--output", str(tmp_path / "x"), "--quant", "2",
                 "--quant-type", "int8", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "prefab already quantized" in err and err.count("\n") == 1


def test_bench_takes_quant_options(model_path, capsys):
    assert main(["bench", "--model", str(model_path), "--prefill", "3", "--decode", "1", "--batch", "1",
                 "--quant", "2", "--quant-type", "nf4"]) == 0
    assert "quant: 2 layers nf4" in capsys.readouterr().out


# ---- server: [model] quant / quant_type, /admin/models/load and save ----

def server_config(folder, engine="ref", **model):
    from ai00ref.server.config import config_from_dict

    return config_from_dict({"model": {"path": str(folder), "name": "m.st", "max_batch": 1, **model},
                             "adapter": {"engine": engine}})


def test_config_quant_reaches_the_engine(model_path, tmp_path):
    from ai00ref.server.runtime import start_runtime

    runtime = start_runtime(server_config(tmp_path, quant=1, quant_type="SF4"))
    try:
        assert (runtime.info.quant_layers, runtime.info.quant_type) == (1, "sf4")
    finally:
        runtime.close()


def test_admin_load_with_quant_and_save_keeps_it(model_path, tmp_path):
    from ai00ref.server.admin import add_admin_routes
    from ai00ref.server.app import make_app
    from ai00ref.server.runtime import start_runtime
    from test_server_admin import admin
    from test_server_api import ServerThread

    config = server_config(tmp_path)
    config = type(config)(**{**vars(config), "listen": type(config.listen)(**{**vars(config.listen),
                                                                               "force_pass": True})})
    app = make_app(start_runtime(config))
    add_admin_routes(app, config, assets_root=tmp_path)
    server = ServerThread(app)
    try:
        status, body = admin(server, "/admin/models/load", {"model_path": "m.st", "quant": 2, "quant_type": "Int8"})
        assert status == 200, body
        assert admin(server, "/admin/models/save", {"path": "saved.prefab"})[0] == 200
        header = read_prefab_header(tmp_path / "saved.prefab")
        assert (header.quant.layers, header.quant.scheme) == (2, "int8")
        status, body = admin(server, "/admin/models/load", {"model_path": "saved.prefab", "quant": 1,
                                                            "quant_type": "NF4"})
        assert status == 400 and "prefab already quantized" in body["error"]["message"]
    finally:
        server.close()


def test_a_prefab_quantizing_a_never_quantized_matrix_is_refused(prefab):
    tensors, metadata = read_safetensors(prefab), read_safetensors_metadata(prefab)
    quantized = {**json.loads(metadata["quantized"]), "emb.weight": {"scheme": "nf4", "shape": [64, 64]}}
    tensors["emb.weight.codes"] = np.zeros((64, 32), np.uint8)
    tensors["emb.weight.scales"] = np.zeros((64, 1), np.float16)
    write_safetensors(prefab, tensors, metadata={**metadata, "quantized": json.dumps(quantized)})
    with pytest.raises(ModelFileError, match="emb.weight is stored quantized, but only att.key"):
        ai00ref.load_model(prefab)


def test_an_unquantized_prefab_can_be_quantized_at_load(model_path, tmp_path):
    save_prefab(model_path, tmp_path / "plain.prefab")
    assert read_prefab_header(tmp_path / "plain.prefab").quantized == {}
    np.testing.assert_array_equal(logits_of(ai00ref.load_model(tmp_path / "plain.prefab", quant=1, quant_type="nf4")),
                                  logits_of(ai00ref.load_model(model_path, quant=1, quant_type="nf4")))


def test_convert_merges_loras_given_as_path_and_alpha(model_path, tmp_path):
    from ai00ref.cli import parse_lora

    assert parse_lora("a.lora:8") == ai00ref.Lora("a.lora", 8.0)
    assert parse_lora("d:x/a.lora") == ai00ref.Lora("d:x/a.lora")
    write_pth(tmp_path / "a.lora.pth", random_lora_tensors(SPEC, rank=4))
    out = tmp_path / "lora.prefab"
    assert main(["convert", "--input", str(model_path), "--output", str(out), "--lora",
                 f"{tmp_path / 'a.lora.pth'}:8", "--no-progress"]) == 0
    lora = [ai00ref.Lora(tmp_path / "a.lora.pth", 8.0)]
    np.testing.assert_array_equal(logits_of(ai00ref.load_model(out)),
                                  logits_of(ai00ref.load_model(model_path, lora=lora)))
