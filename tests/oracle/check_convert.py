"""Oracle check of ai00ref.weights.convert against a torch re-enactment of Ai00's converter (run once).

    .venv-oracle/bin/python tests/oracle/check_convert.py

`torch_convert` below re-enacts `assets/scripts/convert_safetensors.py` (Ai00-X/ai00_server, identical in
web-rwkv) step by step with torch ops, following rwkv-math.md §3.3: torch.load, ["state_dict"], key-order
version scan, v5.1 unsqueeze(1).repeat, rename-then-lower, .half(), substring transpose with break,
safetensors serialization with {"format": "pt"}. Our convert_file output must be byte-identical, for
synthetic v5.1, v5.2, v6 and v7 checkpoints in bf16, fp32, fp16 and fp64, including values that overflow or
flush in fp16, a LoRA-style file with lora_A/lora_B, and a state file with time_state.
"""
from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ai00ref.weights.convert import convert_file  # noqa: E402

RENAME = {"time_faaaa": "time_first", "time_maa": "time_mix", "lora_A": "lora.0", "lora_B": "lora.1"}
TRANSPOSE = ["time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2",
             "w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2", "time_state", "lora.0"]


def torch_convert(src: Path, dst: Path) -> None:
    """The converter's algorithm, written with torch (see module docstring)."""
    loaded = torch.load(src, map_location="cpu")
    if "state_dict" in loaded:
        loaded = loaded["state_dict"]
    keys, version = list(loaded), 4
    for k in keys:  # order-dependent, as in the converter
        version = max(5, version) if "ln_x" in k else version
        version = max(5.1, version) if "gate.weight" in k else version
        if int(version) == 5 and "att.time_decay" in k and loaded[k].dim() > 1 and loaded[k].shape[1] > 1:
            version = max(5.2, version)
        version = max(6, version) if "time_maa" in k else version
    if version == 5.1:
        n_emb = loaded["emb.weight"].shape[1]
        for k in keys:
            if "time_decay" in k or "time_faaaa" in k:
                loaded[k] = loaded[k].unsqueeze(1).repeat(1, n_emb // loaded[k].shape[0])
    out = {}
    for k in keys:
        new_k = k
        for old, new in RENAME.items():
            new_k = new_k.replace(old, new) if old in new_k else new_k
        new_k = new_k.lower()
        v = loaded[k].half()
        for t in TRANSPOSE:
            if t in new_k:
                v = v.transpose(v.dim() - 2, v.dim() - 1)
                break
        out[new_k] = v.contiguous()
    save_file(out, dst, metadata={"format": "pt"})


def block(i: int, version: str, C: int, H: int, g) -> dict[str, torch.Tensor]:
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    p = f"blocks.{i}."
    t = {p + "ln1.weight": r(C), p + "ln1.bias": r(C), p + "ln2.weight": r(C), p + "ln2.bias": r(C)}
    if version == "v7":
        t.update({p + f"att.x_{c}": r(1, 1, C) for c in "rwkvag"})
        for n, d in [("w", 8), ("a", 8), ("v", 4), ("g", 12)]:
            if n != "g":
                t[p + f"att.{n}0"] = r(1, 1, C)
            t[p + f"att.{n}1"], t[p + f"att.{n}2"] = r(C, d), r(d, C)
        t.update({p + "att.k_k": r(1, 1, C), p + "att.k_a": r(1, 1, C), p + "att.r_k": r(H, C // H)})
        t.update({p + "ffn.x_k": r(1, 1, C), p + "ffn.key.weight": r(4 * C, C), p + "ffn.value.weight": r(C, 4 * C)})
    elif version == "v6":
        t.update({p + f"att.time_maa_{c}": r(1, 1, C) for c in "xwkvrg"})
        t.update({p + "att.time_maa_w1": r(C, 5 * 4), p + "att.time_maa_w2": r(5, 4, C),
                  p + "att.time_decay": r(1, 1, C), p + "att.time_decay_w1": r(C, 6),
                  p + "att.time_decay_w2": r(6, C), p + "att.time_faaaa": r(H, C // H)})
    else:  # v5.1 (per-head decay) or v5.2
        shape = (H,) if version == "v5.1" else (H, C // H)
        t.update({p + "att.time_mix_k": r(1, 1, C), p + "att.time_decay": r(*shape), p + "att.time_faaaa": r(*shape)})
    t.update({p + f"att.{m}.weight": r(C, C) for m in ["receptance", "key", "value", "output"]})
    if version != "v7":
        t[p + "att.gate.weight"] = r(C, C)
    t.update({p + "att.ln_x.weight": r(C), p + "att.ln_x.bias": r(C)})
    return t


def checkpoint(version: str, layers: int = 2, C: int = 16, H: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {"emb.weight": torch.randn(20, C, generator=g)}
    for i in range(layers):
        t.update(block(i, version, C, H, g))
    t.update({"ln_out.weight": torch.randn(C, generator=g), "head.weight": torch.randn(20, C, generator=g)})
    t["emb.weight"][0, :6] = torch.tensor([7e4, -1e5, 1e-9, -3e-8, 65519.0, 65520.0])  # fp16 range edges
    return t


def extra_files(g) -> dict[str, dict]:
    lora = {"blocks.0.att.key.lora_A": torch.randn(4, 16, generator=g), "blocks.0.att.key.lora_B": torch.randn(16, 4, generator=g),
            "blocks.0.att.time_maa_x": torch.randn(1, 1, 16, generator=g)}
    state = {f"blocks.{i}.att.time_state": torch.randn(2, 8, 8, generator=g) for i in range(2)}
    return {"lora": lora, "state": {"state_dict": state}}


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        tmp, g = Path(d), torch.Generator().manual_seed(1)
        cases = {f"{v}_{dt}": {k: x.to(getattr(torch, dt)) for k, x in checkpoint(v).items()}
                 for v in ["v5.1", "v5.2", "v6", "v7"] for dt in ["bfloat16", "float32", "float16", "float64"]}
        cases.update(extra_files(g))
        for name, tensors in cases.items():
            torch.save(tensors, tmp / f"{name}.pth")
            torch_convert(tmp / f"{name}.pth", tmp / f"{name}.torch.st")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = convert_file(tmp / f"{name}.pth", tmp / f"{name}.ours.st", progress=False)
            ours, theirs = (tmp / f"{name}.ours.st").read_bytes(), (tmp / f"{name}.torch.st").read_bytes()
            assert ours == theirs, f"{name}: converted files differ"
            print(f"ok  {name}: {result.tensor_count} tensors, byte-identical; "
                  f"overflowed={result.overflowed} flushed={result.flushed} warnings={len(caught)}")
    print("all converter oracle checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
