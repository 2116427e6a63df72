"""The .pth -> .st converter rules (rwkv-math.md §3.3) and the `convert` CLI. Runs without torch.

tests/oracle/check_convert.py checks byte-identity with a torch re-enactment of Ai00's converter.
"""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from ai00ref.cli import main
from ai00ref.weights.convert import (Fp16RangeWarning, convert_file, converter_version, is_transposed,
                                     pth_to_st_tensors, st_name)
from ai00ref.weights.pth import write_pth

ROOT = Path(__file__).resolve().parents[1]
C, H = 8, 2
N = C // H


def v6_block(i: int = 0) -> dict[str, np.ndarray]:
    p, r = f"blocks.{i}.", np.random.default_rng(i).standard_normal
    t = {p + f"att.time_maa_{c}": r((1, 1, C)) for c in "xwkvrg"}
    t.update({p + "att.time_maa_w1": r((C, 5 * 3)), p + "att.time_maa_w2": r((5, 3, C)),
              p + "att.time_decay": r((1, 1, C)), p + "att.time_decay_w1": r((C, 6)), p + "att.time_decay_w2": r((6, C)),
              p + "att.time_faaaa": r((H, N)), p + "att.gate.weight": r((C, C)), p + "att.ln_x.weight": r(C),
              p + "ln1.weight": r(C), p + "ffn.time_maa_k": r((1, 1, C)), p + "ffn.key.weight": r((4 * C, C))})
    return t


def v7_block(i: int = 0) -> dict[str, np.ndarray]:
    p, r = f"blocks.{i}.", np.random.default_rng(i).standard_normal
    t = {p + f"att.x_{c}": r((1, 1, C)) for c in "rwkvag"}
    for n, d in [("w", 4), ("a", 4), ("v", 2), ("g", 6)]:
        t[p + f"att.{n}1"], t[p + f"att.{n}2"] = r((C, d)), r((d, C))
    t.update({p + "att.w0": r((1, 1, C)), p + "att.r_k": r((H, N)), p + "att.ln_x.weight": r(C),
              p + "ln1.weight": r(C), p + "ln2.weight": r(C), p + "ffn.x_k": r((1, 1, C)), p + "att.key.weight": r((C, C))})
    return t


def test_v6_names_and_transposes():
    pth = {"emb.weight": np.zeros((5, C)), **v6_block(0)}
    st = pth_to_st_tensors(pth)
    assert st["blocks.0.att.time_mix_w1"].shape == (15, C)  # (C, 5*Dm) -> (5*Dm, C)
    assert np.array_equal(st["blocks.0.att.time_mix_w1"], pth["blocks.0.att.time_maa_w1"].T)
    assert st["blocks.0.att.time_mix_w2"].shape == (5, C, 3)  # (5, Dm, C) -> (5, C, Dm)
    assert st["blocks.0.att.time_decay_w1"].shape == (6, C) and st["blocks.0.att.time_decay_w2"].shape == (C, 6)
    assert np.array_equal(st["blocks.0.att.time_first"], pth["blocks.0.att.time_faaaa"])
    assert st["blocks.0.ffn.time_mix_k"].shape == (1, 1, C)
    assert np.array_equal(st["blocks.0.att.gate.weight"], pth["blocks.0.att.gate.weight"])  # (out, in) kept
    assert not any("time_maa" in n or "time_faaaa" in n for n in st)
    assert all(st[n].dtype == np.float64 for n in st)  # no dtype change


def test_v7_names_and_transposes():
    pth = {"emb.weight": np.zeros((5, C)), **v7_block(0), **v7_block(1)}
    st = pth_to_st_tensors(pth)
    assert list(st) == list(pth)  # v7 names are unchanged
    for n, d in [("w", 4), ("a", 4), ("v", 2), ("g", 6)]:
        assert st[f"blocks.1.att.{n}1"].shape == (d, C) and st[f"blocks.1.att.{n}2"].shape == (C, d)
        assert np.array_equal(st[f"blocks.1.att.{n}1"], pth[f"blocks.1.att.{n}1"].T)
    for kept in ["blocks.0.att.w0", "blocks.0.att.r_k", "blocks.0.ln1.weight", "blocks.0.att.key.weight"]:
        assert st[kept] is pth[kept]
    assert converter_version(pth) == 5.0  # the converter takes v7 for "v5.0" (harmless: only 5.1 acts)


# Every tensor name of rwkv-math.md §1.2 that the substring rule transposes; all others must not be.
TRANSPOSED_REAL_NAMES = {
    "blocks.1.att.time_mix_w1", "blocks.1.att.time_mix_w2", "blocks.1.att.time_decay_w1", "blocks.1.att.time_decay_w2",
    *(f"blocks.1.att.{n}{k}" for n in "wavg" for k in "12"), "blocks.1.att.time_state", "blocks.1.att.key.lora.0",
}
KEPT_REAL_NAMES = {
    "emb.weight", "head.weight", "ln_out.weight", "ln_out.bias", "blocks.0.ln0.weight", "blocks.1.ln1.weight",
    "blocks.12.ln2.bias", "blocks.1.att.time_decay", "blocks.1.att.time_first", "blocks.1.att.time_mix_k",
    "blocks.1.att.time_mix_g", "blocks.1.att.time_mix_x", "blocks.1.att.time_mix_w", "blocks.1.att.gate.weight",
    "blocks.1.att.ln_x.weight", "blocks.1.att.w0", "blocks.1.att.a0", "blocks.1.att.v0", "blocks.1.att.k_k",
    "blocks.1.att.k_a", "blocks.1.att.r_k", "blocks.1.att.x_a", "blocks.1.att.x_g", "blocks.1.att.x_v",
    "blocks.1.att.x_w", "blocks.1.ffn.key.weight", "blocks.1.ffn.value.weight", "blocks.1.ffn.receptance.weight",
    "blocks.1.ffn.x_k", "blocks.1.att.key.lora.1", "blocks.1.ffn.s_emb.weight", "blocks.1.ffn.s1", "blocks.1.ffn.s2",
}


def test_substring_rule_hits_exactly_the_low_rank_matrices():
    assert {n for n in TRANSPOSED_REAL_NAMES | KEPT_REAL_NAMES if is_transposed(n)} == TRANSPOSED_REAL_NAMES


def test_renames_are_case_sensitive_then_lower_case():
    assert st_name("blocks.0.att.key.lora_A") == "blocks.0.att.key.lora.0"
    assert st_name("blocks.0.att.key.lora_B") == "blocks.0.att.key.lora.1"
    assert st_name("Blocks.0.ATT.time_maa_W1") == "blocks.0.att.time_mix_w1"
    assert st_name("blocks.0.att.TIME_MAA_x") == "blocks.0.att.time_maa_x"  # renamed before lower-casing: not at all
    assert st_name("blocks.0.att.key.LORA_A") == "blocks.0.att.key.lora_a"


def test_lora_and_state_files():
    lora = pth_to_st_tensors({"blocks.0.att.key.lora_A": np.zeros((4, C)), "blocks.0.att.key.lora_B": np.zeros((C, 4))})
    assert lora["blocks.0.att.key.lora.0"].shape == (C, 4) and lora["blocks.0.att.key.lora.1"].shape == (C, 4)
    state = np.arange(H * N * N, dtype=np.float32).reshape(H, N, N)  # [h][value][key] -> [h][key][value]
    assert np.array_equal(pth_to_st_tensors({"blocks.0.att.time_state": state})["blocks.0.att.time_state"],
                          state.transpose(0, 2, 1))


def test_v51_repeats_per_head_vectors_and_version_guess():
    pth = {"emb.weight": np.zeros((5, C)), "blocks.0.att.time_decay": np.array([1.0, 2.0]),
           "blocks.0.att.time_faaaa": np.array([3.0, 4.0]), "blocks.0.att.gate.weight": np.zeros((C, C)),
           "blocks.0.att.ln_x.weight": np.zeros(C)}
    assert converter_version(pth) == 5.1
    st = pth_to_st_tensors(pth)
    assert np.array_equal(st["blocks.0.att.time_decay"], [[1.0] * N, [2.0] * N])
    assert np.array_equal(st["blocks.0.att.time_first"], [[3.0] * N, [4.0] * N])
    v52 = dict(pth, **{"blocks.0.att.time_decay": np.zeros((H, N)), "blocks.0.att.time_faaaa": np.zeros((H, N))})
    assert converter_version(v52) == 5.2  # the converter itself says 5.1 for a 1-layer v5.2 and crashes
    assert converter_version({"blocks.0.att.time_decay": np.zeros(C)}) == 4.0
    assert converter_version({"emb.weight": np.zeros((5, C)), **v6_block()}) == 6.0


def test_name_collisions_are_errors():
    with pytest.raises(ValueError, match="two tensors become 'emb.weight'"):
        pth_to_st_tensors({"emb.weight": np.zeros(2), "EMB.weight": np.zeros(2)})
    with pytest.raises(ValueError, match="two tensors become 'blocks.0.att.time_first'"):
        pth_to_st_tensors({"blocks.0.att.time_first": np.zeros(2), "blocks.0.att.time_faaaa": np.zeros(2)})


def test_convert_file_writes_fp16_st_and_counts_range_losses(tmp_path):
    pth = {"emb.weight": np.zeros((5, C), np.float32), **{k: v.astype(np.float32) for k, v in v7_block(0).items()}}
    pth["emb.weight"][0, :4] = [1e5, -7e4, 1e-9, 1.0]
    write_pth(tmp_path / "m.pth", pth, "fp32")
    with pytest.warns(Fp16RangeWarning, match="2 overflowed to inf, 1 flushed to zero"):
        result = convert_file(tmp_path / "m.pth", tmp_path / "out" / "m.st", progress=False)  # creates out/
    assert (result.tensor_count, result.overflowed, result.flushed) == (len(pth), 2, 1)
    st = safetensors.numpy.load_file(tmp_path / "out" / "m.st")
    assert all(v.dtype == np.float16 for v in st.values())
    assert np.array_equal(st["blocks.0.att.w1"], pth["blocks.0.att.w1"].T.astype(np.float16))
    assert list(st["emb.weight"][0, :4]) == [np.inf, -np.inf, 0.0, 1.0]
    with open(tmp_path / "out" / "m.st", "rb") as f:
        header = f.read(8 + int.from_bytes(f.read(8)[:8], "little"))
    assert b'"__metadata__":{"format":"pt"}' in header


def test_convert_file_without_range_loss_does_not_warn(tmp_path):
    write_pth(tmp_path / "m.pth", v7_block(0), "bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert_file(tmp_path / "m.pth", tmp_path / "m.st", progress=False)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ai00ref", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_convert_success(tmp_path):
    write_pth(tmp_path / "m.pth", v6_block(0), "bf16")
    done = run_cli("convert", "--input", str(tmp_path / "m.pth"), "--output", str(tmp_path / "m.st"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"converted {len(v6_block(0))} tensors: ") and done.stdout.count("\n") == 1
    assert "blocks.0.att.time_mix_w1" in safetensors.numpy.load_file(tmp_path / "m.st")


@pytest.mark.parametrize("content", [b"", b"not a model at all\n", b"PK\x03\x04truncated zip", None])
def test_cli_convert_error_is_one_line_and_exit_1(tmp_path, content):
    src = tmp_path / "broken.pth"
    if content is not None:
        src.write_bytes(content)
    done = run_cli("convert", "--input", str(src), "--output", str(tmp_path / "m.st"))
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {src}: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "m.st").exists()


def test_cli_main_in_process(tmp_path, capsys):
    assert main(["convert", "--input", str(tmp_path / "none.pth"), "--output", str(tmp_path / "x.st")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'none.pth'}: no such file\n"
    assert main([]) == 2
