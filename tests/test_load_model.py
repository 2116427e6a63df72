"""`load_model` from files: every file type gives the same model; states and LoRAs; loader errors name the file."""
from __future__ import annotations

import numpy as np
import pytest

import ai00ref
from ai00ref.errors import ModelFileError
from ai00ref.ref.state import to_official
from ai00ref.weights.pth import write_pth
from ai00ref.weights.random_model import (VARIANTS, RandomModelSpec, random_lora_tensors, random_model_tensors,
                                          random_state_tensors, write_random_model)
from ai00ref.weights.safetensors_io import write_safetensors

SPEC = dict(n_layer=2, n_embd=32, n_vocab=64, head_size=8)
PROMPT = [[0, 3, 17, 42, 5]]
FILE_TYPES = [("model.st", "fp16"), ("model.pth", "fp32"), ("model_fp16.pth", "fp16"), ("model_bf16.pth", "bf16")]


def logits_of(model, tokens=PROMPT):
    return model.forward(tokens, model.new_state(len(tokens)))[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_file_type_loads_the_same_model(variant, tmp_path):
    spec = RandomModelSpec(variant, **SPEC)
    results = []
    # v5.0 stores log(u) as `time_first`: a .pth knows it, an .st cannot and uses it raw (spec/v5.md §2)
    for name, dtype in FILE_TYPES[1:] if variant == "v5.0" else FILE_TYPES:
        model = ai00ref.load_model(write_random_model(spec, tmp_path / name, dtype=dtype))
        assert model.info.version == variant[:2]
        results.append(logits_of(model))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])  # the generator's values are exact in every dtype


@pytest.mark.parametrize("variant", ["v5.2", "v6", "v7"])
def test_state_file_from_state_tuning_sets_the_initial_state(variant, tmp_path):
    spec = RandomModelSpec(variant, **SPEC)
    model = ai00ref.load_model(write_random_model(spec, tmp_path / "m.st"))
    tuned = random_state_tensors(spec)  # [h, value, key], as RWKV-PEFT writes it
    write_pth(tmp_path / "tuned.pth", tuned)  # a .pth: loading applies the converter's transpose
    with_state = ai00ref.load_model(tmp_path / "m.st", state=tmp_path / "tuned.pth")
    S = with_state.new_state(1).wkv[0, 1]
    expected = tuned["blocks.1.att.time_state"]  # official: v5/v6 use its transpose, v7 uses it as is
    np.testing.assert_array_equal(S, expected if variant == "v7" else expected.transpose(0, 2, 1))
    assert not np.allclose(logits_of(with_state), logits_of(model))


@pytest.mark.parametrize("variant", VARIANTS)
def test_saved_state_restores_exactly(variant, tmp_path):
    model = ai00ref.load_model(write_random_model(RandomModelSpec(variant, **SPEC), tmp_path / "m.st"))
    _, state = model.forward([[1, 2, 3], [4, 5]], model.new_state(2))
    ai00ref.save_state(state, model.info, tmp_path / "s.state", row=1)
    restored = ai00ref.load_state(tmp_path / "s.state", model.info)
    for a, b in zip(to_official(restored), to_official(state, 1)):
        np.testing.assert_array_equal(a, b)
    continued = ai00ref.load_model(tmp_path / "m.st", state=tmp_path / "s.state")
    np.testing.assert_array_equal(logits_of(continued, [[6]]), model.forward([[6]], state.rows(1))[0])


def test_model_file_with_time_state_starts_from_it(tmp_path):
    spec = RandomModelSpec("v6", **SPEC)
    write_pth(tmp_path / "merged.pth", {**random_model_tensors(spec), **random_state_tensors(spec)})
    model = ai00ref.load_model(tmp_path / "merged.pth")
    assert np.any(model.new_state(2).wkv != 0)


@pytest.mark.parametrize("variant", ["v4", "v6", "v7"])
def test_lora_merge_equals_the_merged_weights(variant, tmp_path):
    spec = RandomModelSpec(variant, **SPEC)
    tensors, lora, alpha, rank = random_model_tensors(spec), random_lora_tensors(spec, rank=4), 8.0, 4
    write_pth(tmp_path / "m.pth", tensors)
    write_pth(tmp_path / "a.lora.pth", lora)  # PEFT names: lora_A (r, in), lora_B (out, r)
    merged = dict(tensors)
    for name in {k.rsplit(".", 1)[0] for k in lora}:
        merged[name] = tensors[name] + alpha / rank * lora[name + ".lora_B"] @ lora[name + ".lora_A"]
    write_pth(tmp_path / "merged.pth", merged)
    with_lora = ai00ref.load_model(tmp_path / "m.pth", lora=[ai00ref.Lora(tmp_path / "a.lora.pth", alpha)])
    expected = ai00ref.load_model(tmp_path / "merged.pth")
    np.testing.assert_allclose(logits_of(with_lora), logits_of(expected), rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits_of(with_lora), logits_of(ai00ref.load_model(tmp_path / "m.pth")))


@pytest.mark.parametrize("variant, source", [("v7", "m.st"), ("v6", "m.pth"), ("v5.0", "m.pth"), ("v4", "m.st")])
def test_a_prefab_loads_as_exactly_the_merged_model(variant, source, tmp_path):
    """save_prefab writes the model with its LoRAs merged (v5.0's log(u) bonus from a .pth written as u)."""
    from ai00ref.engine import save_prefab
    from ai00ref.weights.safetensors_io import read_safetensors_header

    spec = RandomModelSpec(variant, **SPEC)
    write_random_model(spec, tmp_path / source, dtype="fp16" if source.endswith(".st") else "fp32")
    write_pth(tmp_path / "a.lora.pth", random_lora_tensors(spec, rank=4))
    lora = [ai00ref.Lora(tmp_path / "a.lora.pth", 8.0)]
    save_prefab(tmp_path / source, tmp_path / "prefab.st", lora)
    np.testing.assert_array_equal(logits_of(ai00ref.load_model(tmp_path / "prefab.st")),
                                  logits_of(ai00ref.load_model(tmp_path / source, lora=lora)))
    metadata = read_safetensors_header(tmp_path / "prefab.st")[0].get("__metadata__", {})
    assert metadata["ai00ref"] == "prefab" and metadata["source"] == source and "a.lora.pth*8.0" in metadata["lora"]


def test_lora_for_a_missing_matrix_is_refused(tmp_path):
    spec = RandomModelSpec("v7", **SPEC)
    write_random_model(spec, tmp_path / "m.st")
    write_safetensors(tmp_path / "bad.lora", {"blocks.9.att.key.weight.lora.0": np.zeros((32, 2), np.float16),
                                              "blocks.9.att.key.weight.lora.1": np.zeros((32, 2), np.float16)})
    with pytest.raises(ModelFileError, match="bad.lora: LoRA tensor blocks.9.att.key.weight.lora.0 targets no"):
        ai00ref.load_model(tmp_path / "m.st", lora=[ai00ref.Lora(tmp_path / "bad.lora")])


def _broken(tmp_path, change) -> str:
    tensors = random_model_tensors(RandomModelSpec("v6", **SPEC))
    change(tensors)
    path = tmp_path / "broken.pth"
    write_pth(path, tensors)
    return str(path)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("blocks.1.att.gate.weight"), "missing tensor blocks.1.att.gate.weight"),
    (lambda t: t.pop("emb.weight"), "not an RWKV model: missing emb.weight"),
    (lambda t: [t.pop(k) for k in list(t) if k.startswith("blocks.0.att.")], "unknown RWKV version"),
    (lambda t: t.update({"blocks.0.ffn.key.weight": t["blocks.0.ffn.key.weight"][:, :5]}), "shape"),
    (lambda t: t.update({"head.weight": t["head.weight"].astype(np.int64)}), "dtype int64"),
    (lambda t: t["blocks.1.ln2.bias"].__setitem__(0, np.nan), "inf or NaN"),
])
def test_broken_models_give_one_line_naming_file_and_problem(tmp_path, change, message):
    path = _broken(tmp_path, change)
    with pytest.raises(ModelFileError) as error:
        ai00ref.load_model(path)
    assert str(error.value).startswith(path + ": ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        ai00ref.load_model(tmp_path / "x.st", backend="cuda")
