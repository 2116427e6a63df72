"""Deterministic random RWKV models of any version and shape (spec/formats.md §random models).

Tests, benchmarks and the conformance suite all run on these: nothing is fetched from a model hub.
`random_model_tensors(spec)` returns the tensors with the names and shapes of an original `.pth`
checkpoint (rwkv-math §1.2). Every value is exactly representable in bfloat16 *and* float16, so the
same model written as fp32/fp16/bf16 `.pth` or fp16 `.st` holds identical numbers, and one set of
reference logits serves every file type.

Magnitudes follow real checkpoints loosely (decays in their trained ranges, matrices scaled by
1/sqrt(fan_in)) so that activations stay O(1) and errors are not amplified by near-zero variances.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VARIANTS = ("v4", "v5.0", "v5.1", "v5.2", "v6", "v7")


@dataclass(frozen=True)
class RandomModelSpec:
    variant: str = "v7"  # one of VARIANTS
    n_layer: int = 2
    n_embd: int = 64  # C
    n_vocab: int = 256  # V
    head_size: int = 16  # N; H = C / N (v4 has no heads)
    seed: int = 0

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.n_embd % self.head_size:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of head_size {self.head_size}")

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @property
    def ffn_size(self) -> int:  # F: 4C for v4 and v7, 3.5C for v5 and v6 (rounded to 32 like training)
        if self.variant in ("v4", "v7"):
            return 4 * self.n_embd
        return int(self.n_embd * 3.5) // 32 * 32 or 32

    def lora_size(self, factor: float) -> int:  # RWKV-7 training's rule: max(32, round(k*sqrt(C)/32)*32)
        return max(32, round(factor * self.n_embd**0.5 / 32) * 32)


def exact_in_bf16_and_fp16(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest even), then zero what fp16 cannot hold exactly (|x| < 2^-14)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    y = rounded.astype(np.uint32).view(np.float32)
    y = np.where(np.abs(y) < 2.0**-14, np.float32(0), y)
    return np.clip(y, -65280, 65280)  # largest value exact in both.astype(np.float32)


class _Draw:
    """Named random draws: each tensor gets its own stream, seeded by (seed, name)."""

    def __init__(self, seed: int):
        self.seed = seed

    def rng(self, name: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}:{name}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def normal(self, name: str, shape, std: float) -> np.ndarray:
        return self.rng(name).standard_normal(shape) * std

    def uniform(self, name: str, shape, low: float, high: float) -> np.ndarray:
        return self.rng(name).uniform(low, high, shape)


def _common(spec: RandomModelSpec, d: _Draw) -> dict[str, np.ndarray]:
    C, V = spec.n_embd, spec.n_vocab
    t = {
        "emb.weight": d.normal("emb", (V, C), 0.5),
        "blocks.0.ln0.weight": d.uniform("ln0.w", (C,), 0.6, 1.4),
        "blocks.0.ln0.bias": d.normal("ln0.b", (C,), 0.1),
        "ln_out.weight": d.uniform("ln_out.w", (C,), 0.6, 1.4),
        "ln_out.bias": d.normal("ln_out.b", (C,), 0.1),
        "head.weight": d.normal("head", (V, C), C**-0.5),
    }
    for i in range(spec.n_layer):
        for ln in ("ln1", "ln2"):
            t[f"blocks.{i}.{ln}.weight"] = d.uniform(f"{i}.{ln}.w", (C,), 0.6, 1.4)
            t[f"blocks.{i}.{ln}.bias"] = d.normal(f"{i}.{ln}.b", (C,), 0.1)
    return t


def _linear(d: _Draw, name: str, out_dim: int, in_dim: int, gain: float = 1.0) -> np.ndarray:
    return d.normal(name, (out_dim, in_dim), gain * in_dim**-0.5)


def _vec(d: _Draw, name: str, C: int, low: float, high: float) -> np.ndarray:
    return d.uniform(name, (1, 1, C), low, high)  # .time_* vectors are stored (1,1,C)


def _ffn(spec: RandomModelSpec, d: _Draw, i: int) -> dict[str, np.ndarray]:
    C, F, p = spec.n_embd, spec.ffn_size, f"blocks.{i}.ffn."
    t = {p + "key.weight": _linear(d, p + "key", F, C), p + "value.weight": _linear(d, p + "value", C, F, 0.5)}
    if spec.variant == "v7":
        t[p + "x_k"] = _vec(d, p + "x_k", C, 0, 1)
        return t
    t[p + "receptance.weight"] = _linear(d, p + "receptance", C, C)
    mix = "time_maa" if spec.variant == "v6" else "time_mix"
    t[p + mix + "_k"] = _vec(d, p + "mix_k", C, 0, 1)
    t[p + mix + "_r"] = _vec(d, p + "mix_r", C, 0, 1)
    return t


def _att_v4_v5(spec: RandomModelSpec, d: _Draw, i: int) -> dict[str, np.ndarray]:
    C, H, N, v, p = spec.n_embd, spec.n_head, spec.head_size, spec.variant, f"blocks.{i}.att."
    t = {p + f"{m}.weight": _linear(d, p + m, C, C) for m in ("key", "value", "receptance")}
    t[p + "output.weight"] = _linear(d, p + "output", C, C, 0.5)
    for m in ("k", "v", "r") + (("g",) if v in ("v5.1", "v5.2") else ()):
        t[p + f"time_mix_{m}"] = _vec(d, p + f"mix_{m}", C, 0, 1)
    if v == "v4":
        t[p + "time_decay"] = d.uniform(p + "decay", (C,), -4, 1)
        t[p + "time_first"] = d.uniform(p + "first", (C,), -1, 1)
        return t
    if v in ("v5.1", "v5.2"):
        t[p + "gate.weight"] = _linear(d, p + "gate", C, C)
    t[p + "ln_x.weight"] = d.uniform(p + "ln_x.w", (C,), 0.6, 1.4)
    t[p + "ln_x.bias"] = d.normal(p + "ln_x.b", (C,), 0.1)
    decay_shape = (H, N) if v == "v5.2" else (H,)  # v5.0/v5.1 decay and bonus are per head
    t[p + "time_decay"] = d.uniform(p + "decay", decay_shape, -4, 1)
    bonus = "time_first" if v == "v5.0" else "time_faaaa"  # v5.0 stores log(u): exercises u = exp(time_first)
    t[p + bonus] = d.uniform(p + "first", decay_shape, -1, 1)
    return t


def _att_v6(spec: RandomModelSpec, d: _Draw, i: int) -> dict[str, np.ndarray]:
    C, H, N, p = spec.n_embd, spec.n_head, spec.head_size, f"blocks.{i}.att."
    Dm, Dd = (64, 128) if C >= 4096 else (32, 64)
    t = {p + f"{m}.weight": _linear(d, p + m, C, C) for m in ("key", "value", "receptance", "gate")}
    t[p + "output.weight"] = _linear(d, p + "output", C, C, 0.5)
    for m in ("x", "w", "k", "v", "r", "g"):
        t[p + f"time_maa_{m}"] = _vec(d, p + f"maa_{m}", C, 0, 1)
    t[p + "time_maa_w1"] = d.normal(p + "maa_w1", (C, 5 * Dm), 0.1)
    t[p + "time_maa_w2"] = d.normal(p + "maa_w2", (5, Dm, C), 0.1)
    t[p + "time_decay"] = _vec(d, p + "decay", C, -4, 1)
    t[p + "time_decay_w1"] = d.normal(p + "decay_w1", (C, Dd), 0.1)
    t[p + "time_decay_w2"] = d.normal(p + "decay_w2", (Dd, C), 0.1)
    t[p + "time_faaaa"] = d.uniform(p + "first", (H, N), -1, 1)
    t[p + "ln_x.weight"] = d.uniform(p + "ln_x.w", (C,), 0.6, 1.4)
    t[p + "ln_x.bias"] = d.normal(p + "ln_x.b", (C,), 0.1)
    return t


def _att_v7(spec: RandomModelSpec, d: _Draw, i: int) -> dict[str, np.ndarray]:
    C, H, N, p = spec.n_embd, spec.n_head, spec.head_size, f"blocks.{i}.att."
    Dw, Da, Dv, Dg = spec.lora_size(2.5), spec.lora_size(2.5), spec.lora_size(1.7), spec.lora_size(5)
    t = {p + f"{m}.weight": _linear(d, p + m, C, C) for m in ("key", "value", "receptance")}
    t[p + "output.weight"] = _linear(d, p + "output", C, C, 0.5)
    for m in ("r", "w", "k", "v", "a", "g"):
        t[p + f"x_{m}"] = _vec(d, p + f"x_{m}", C, 0, 1)
    for name, rank, low, high in (("w", Dw, -2, 2), ("a", Da, -1, 1), ("v", Dv, -1, 1)):
        t[p + f"{name}0"] = _vec(d, p + f"{name}0", C, low, high)
        t[p + f"{name}1"] = d.normal(p + f"{name}1", (C, rank), 0.1)
        t[p + f"{name}2"] = d.normal(p + f"{name}2", (rank, C), 0.1)
    t[p + "g1"] = d.normal(p + "g1", (C, Dg), 0.1)
    t[p + "g2"] = d.normal(p + "g2", (Dg, C), 0.1)
    t[p + "k_k"] = _vec(d, p + "k_k", C, 0.5, 1.5)
    t[p + "k_a"] = _vec(d, p + "k_a", C, 0, 1)
    t[p + "r_k"] = d.normal(p + "r_k", (H, N), 0.5)
    t[p + "ln_x.weight"] = d.uniform(p + "ln_x.w", (C,), 0.6, 1.4)
    t[p + "ln_x.bias"] = d.normal(p + "ln_x.b", (C,), 0.1)
    return t


def random_model_tensors(spec: RandomModelSpec) -> dict[str, np.ndarray]:
    """All tensors of a random model, named and shaped as an original `.pth` checkpoint, float32."""
    d = _Draw(spec.seed)
    tensors = _common(spec, d)
    att = {"v6": _att_v6, "v7": _att_v7}.get(spec.variant, _att_v4_v5)
    for i in range(spec.n_layer):
        tensors.update(att(spec, d, i))
        tensors.update(_ffn(spec, d, i))
    return {name: exact_in_bf16_and_fp16(value) for name, value in sorted(tensors.items())}


def random_state_tensors(spec: RandomModelSpec, scale: float = 0.5) -> dict[str, np.ndarray]:
    """A random state-tuning file as RWKV-PEFT writes it: `blocks.i.att.time_state` (H, N, N), [h, value, key]."""
    d = _Draw(spec.seed + 1)
    shape = (spec.n_head, spec.head_size, spec.head_size)
    return {
        f"blocks.{i}.att.time_state": exact_in_bf16_and_fp16(d.normal(f"state.{i}", shape, scale))
        for i in range(spec.n_layer)
    }


def random_lora_tensors(spec: RandomModelSpec, rank: int = 8) -> dict[str, np.ndarray]:
    """A random LoRA as PEFT writes it: `...{key,value,receptance,output}.weight.lora_A` (r, in) and `lora_B` (out, r)."""
    d, C = _Draw(spec.seed + 2), spec.n_embd
    tensors = {}
    for i in range(spec.n_layer):
        for m in ("key", "value", "receptance", "output"):
            name = f"blocks.{i}.att.{m}.weight"
            tensors[name + ".lora_A"] = d.normal(name + "A", (rank, C), 0.2)
            tensors[name + ".lora_B"] = d.normal(name + "B", (C, rank), 0.2)
    return {name: exact_in_bf16_and_fp16(value) for name, value in tensors.items()}


def tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over names, shapes and float32 bytes: fixtures use it to detect a changed generator."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_random_model(spec: RandomModelSpec, path: str | Path, dtype: str = "fp32") -> Path:
    """Write the random model as `.pth` (dtype fp32/fp16/bf16) or as an Ai00 `.st` (always fp16)."""
    from ai00ref.weights.convert import pth_to_st_tensors
    from ai00ref.weights.pth import write_pth
    from ai00ref.weights.safetensors_io import write_safetensors

    path = Path(path)
    tensors = random_model_tensors(spec)
    if path.suffix == ".st" or path.suffix == ".safetensors":
        st = {k: v.astype(np.float16) for k, v in pth_to_st_tensors(tensors).items()}
        write_safetensors(path, st, metadata={"format": "pt"})
    else:
        write_pth(path, tensors, dtype=dtype)
    return path
