"""Quantized models (spec/quant.md §1, §5): which matrices, the forward, LoRA before quantization, memory."""
from __future__ import annotations

import numpy as np
import pytest

import ai00ref
from ai00ref.weights.canonical import QUANTIZED_MATRICES
from ai00ref.weights.pth import write_pth
from ai00ref.weights.quant import QuantizedMatrix
from ai00ref.weights.random_model import RandomModelSpec, random_lora_tensors, random_model_tensors, write_random_model
from ai00ref.weights.safetensors_io import write_safetensors

SPEC = dict(n_layer=2, n_embd=64, n_vocab=64, head_size=16)
PROMPT = [[0, 3, 17, 42, 5]]
VERSIONS = ["v4", "v5.2", "v6", "v7"]


def logits_of(model, tokens=PROMPT):
    return model.forward(tokens, model.new_state(len(tokens)))[0]


def quantized_fields(model) -> dict[str, str]:
    """'layer.part.name' -> scheme of every QuantizedMatrix in the engine's weights."""
    found = {}
    for i, block in enumerate(model.weights.blocks):
        for part in ("att", "ffn"):
            for name, value in vars(getattr(block, part)).items():
                if isinstance(value, QuantizedMatrix):
                    found[f"{i}.{part}.{name}"] = value.scheme
    assert not isinstance(model.weights.head, QuantizedMatrix) and not isinstance(model.weights.emb, QuantizedMatrix)
    return found


@pytest.mark.parametrize("variant", VERSIONS + ["v5.0"])
def test_exactly_the_big_matrices_of_the_first_layers_are_quantized(variant, tmp_path):
    path = write_random_model(RandomModelSpec(variant, n_layer=3, **{k: v for k, v in SPEC.items() if k != "n_layer"}),
                              tmp_path / "m.st")
    model = ai00ref.load_model(path, quant=2, quant_type="sf4")
    present = set()
    for i in range(2):
        for part, name in (m.split(".") for m in QUANTIZED_MATRICES):
            if getattr(getattr(model.weights.blocks[i], part), name, None) is not None:
                present.add(f"{i}.{part}.{name}")
    assert quantized_fields(model) == {n: "sf4" for n in present}  # layer 2, the low-rank matrices: float
    assert ("0.att.gate" in present) == (variant in ("v5.2", "v6"))
    assert ("0.ffn.receptance" in present) == (variant != "v7")
    assert model.info.quant_layers == 2 and model.info.quant_type == "sf4"


@pytest.mark.parametrize("variant", VERSIONS)
@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_forward_multiplies_by_the_dequantized_matrices(variant, scheme, tmp_path):
    """The quantized model equals a float model whose matrices are the dequantized ones, bit for bit."""
    spec = RandomModelSpec(variant, **SPEC)
    tensors = random_model_tensors(spec)
    write_pth(tmp_path / "m.pth", tensors)
    model = ai00ref.load_model(tmp_path / "m.pth", quant=9, quant_type=scheme)  # more layers than the model has
    st_tensors, _ = ai00ref.engine.model_tensors(tmp_path / "m.pth")
    for i, block in enumerate(model.weights.blocks):
        for part in ("att", "ffn"):
            for name, value in vars(getattr(block, part)).items():
                if isinstance(value, QuantizedMatrix):
                    st_tensors[f"blocks.{i}.{part}.{name}.weight"] = value.dequantize()
    write_safetensors(tmp_path / "dequantized.st", {k: np.asarray(v, np.float32) for k, v in st_tensors.items()})
    expected = logits_of(ai00ref.load_model(tmp_path / "dequantized.st"))
    np.testing.assert_array_equal(logits_of(model), expected)
    assert not np.array_equal(expected, logits_of(ai00ref.load_model(tmp_path / "m.pth")))
    assert model.info.quant_layers == 2


def test_quantization_comes_after_the_lora_merge(tmp_path):
    spec = RandomModelSpec("v6", **SPEC)
    tensors, lora = random_model_tensors(spec), random_lora_tensors(spec, rank=4)
    write_pth(tmp_path / "m.pth", tensors)
    write_pth(tmp_path / "a.lora.pth", lora)
    merged = dict(tensors)
    for name in {k.rsplit(".", 1)[0] for k in lora}:
        merged[name] = tensors[name] + 8.0 / 4 * lora[name + ".lora_B"] @ lora[name + ".lora_A"]
    write_pth(tmp_path / "merged.pth", merged)
    with_lora = ai00ref.load_model(tmp_path / "m.pth", lora=[ai00ref.Lora(tmp_path / "a.lora.pth", 8.0)],
                                   quant=2, quant_type="nf4")
    np.testing.assert_allclose(logits_of(with_lora),
                               logits_of(ai00ref.load_model(tmp_path / "merged.pth", quant=2, quant_type="nf4")),
                               rtol=0, atol=1e-5)  # the merge's own rounding (B@A summed in another order)


def test_quant_zero_or_none_is_the_float_model(tmp_path):
    path = write_random_model(RandomModelSpec("v7", **SPEC), tmp_path / "m.st")
    plain = logits_of(ai00ref.load_model(path))
    for options in ({"quant": 0, "quant_type": "nf4"}, {"quant": 2, "quant_type": "None"}):
        model = ai00ref.load_model(path, **options)
        assert quantized_fields(model) == {} and model.info.quant_type == "none"
        np.testing.assert_array_equal(logits_of(model), plain)


def test_float64_reference_runs_quantized(tmp_path):
    path = write_random_model(RandomModelSpec("v5.2", **SPEC), tmp_path / "m.st")
    f32 = logits_of(ai00ref.load_model(path, quant=2, quant_type="int8"))
    f64 = logits_of(ai00ref.load_model(path, dtype="float64", quant=2, quant_type="int8"))
    assert f64.dtype == np.float64
    np.testing.assert_allclose(f32, f64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [{"quant": -1}, {"quant": 1, "quant_type": "q4"}])
def test_bad_quant_settings_are_refused(bad, tmp_path):
    path = write_random_model(RandomModelSpec("v7", **SPEC), tmp_path / "m.st")
    with pytest.raises(ValueError):
        ai00ref.load_model(path, **bad)


# ---- memory (spec/quant.md §5) ----

@pytest.mark.parametrize("variant", VERSIONS)
def test_quantized_matrices_take_at_most_053_and_030_of_fp16(variant, tmp_path):
    spec = RandomModelSpec(variant, n_layer=2, n_embd=256, n_vocab=64, head_size=64)  # rows of whole blocks
    path = write_random_model(spec, tmp_path / "m.st")
    fp16 = ai00ref.load_model(path).info
    for scheme, limit in (("int8", 0.53), ("nf4", 0.30), ("sf4", 0.30)):
        model = ai00ref.load_model(path, quant=2, quant_type=scheme)
        info, matrices = model.info, list(quantized_fields_values(model))
        assert info.quantized_bytes == sum(m.codes.nbytes + m.scales.nbytes for m in matrices)
        assert info.quantized_bytes_fp16 == sum(2 * m.shape[0] * m.shape[1] for m in matrices)
        assert info.quantized_bytes <= limit * info.quantized_bytes_fp16
        assert info.weight_bytes_fp16 == fp16.weight_bytes_fp16 == fp16.weight_bytes
        assert info.weight_bytes == fp16.weight_bytes - info.quantized_bytes_fp16 + info.quantized_bytes


def quantized_fields_values(model):
    for block in model.weights.blocks:
        for part in (block.att, block.ffn):
            yield from (v for v in vars(part).values() if isinstance(v, QuantizedMatrix))


def test_weight_and_state_bytes_by_hand(tmp_path):
    """v4, C=128, F=512, V=64, L=1: every tensor counted at 2 bytes (fp16), the state at 4 bytes a float."""
    spec = RandomModelSpec("v4", n_layer=1, n_embd=128, n_vocab=64, head_size=128)
    path = write_random_model(spec, tmp_path / "m.st")
    info = ai00ref.load_model(path, quant=1, quant_type="nf4").info
    C, F, V = 128, 512, 64
    vectors = 2 * C + 2 * C + 2 * C + 2 * C + 5 * C + 2 * C  # ln0, ln1, ln2, ln_out; 5 att vectors; 2 ffn mixes
    matrices = 4 * C * C + 2 * C * F + C * C  # att k, v, r, o; ffn key, value; ffn receptance
    assert info.weight_bytes_fp16 == 2 * (2 * V * C + vectors + matrices)
    assert info.quantized_bytes == matrices // 2 + 2 * (matrices // 64)  # nibbles + one fp16 absmax per 64
    assert info.state_bytes_per_sequence == 4 * 5 * C  # v4: 5 vectors of C per layer
