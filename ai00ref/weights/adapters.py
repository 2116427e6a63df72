"""State files and LoRA files, as Ai00 uses them (spec/state.md, spec/lora.md).

A `.state` file holds `blocks.i.att.time_state` (H, N, N) in Ai00's `.st` orientation [h, key, value]
(the converter transposes the state-tuning `.pth`'s [h, value, key]). ai00ref writes the same key, so
Ai00 reads our files, and adds the token-shift states (and v4's aa/bb/pp) so a saved state restores exactly.

A `.lora` file holds `...weight.lora.0` (in, r) and `...weight.lora.1` (out, r) pairs, merged as
W += alpha/r · lora.1 @ lora.0ᵀ, and full tensors named like the model's: matrices add D (alpha·D on the
LoRA targets), vectors replace; `emb` and `head` are never merged (spec/lora.md).
"""
from __future__ import annotations

import re

import numpy as np

from ai00ref.errors import ModelFileError
from ai00ref.model_info import ModelInfo
from ai00ref.ref.state import RecurrentState, V4State, zero_state

STATE_FORMAT = "ai00ref-state-1"
_NEVER_MERGED = ("emb.weight", "head.weight")  # web-rwkv loads these without LoRA
_LORA_TARGET = re.compile(r"blocks\.\d+\.(att|ffn)\.(key|value|receptance|gate|output)\.weight$")


# ---- state files ----

def state_to_tensors(state: RecurrentState, info: ModelInfo, row: int = 0) -> dict[str, np.ndarray]:
    """One row of a state as `.state` tensors (spec/state.md §file)."""
    tensors = {}
    for i in range(info.n_layer):
        p = f"blocks.{i}."
        tensors[p + "att.shift"] = state.att_x[row, i]
        tensors[p + "ffn.shift"] = state.ffn_x[row, i]
        if isinstance(state, V4State):
            tensors[p + "att.aa"], tensors[p + "att.bb"], tensors[p + "att.pp"] = (
                state.aa[row, i], state.bb[row, i], state.pp[row, i])
        else:
            S = state.wkv[row, i]  # v5/v6 [h, key, value]; v7 [h, value, key]
            tensors[p + "att.time_state"] = S.transpose(0, 2, 1) if info.version == "v7" else S
    return tensors


def state_from_tensors(tensors: dict[str, np.ndarray], info: ModelInfo, path: str, dtype="float32") -> RecurrentState:
    """A batch-1 state from `.state` tensors; missing shift states (Ai00 state files) stay zero."""
    state = zero_state(info, 1, dtype)
    H, N, C = info.n_head, info.head_size, info.n_embd
    for i in range(info.n_layer):
        p = f"blocks.{i}."
        if info.version == "v4":
            for name in ("aa", "bb", "pp"):
                getattr(state, name)[0, i] = _tensor(tensors, p + "att." + name, (C,), path)
        else:
            S = _tensor(tensors, p + "att.time_state", (H, N, N), path)
            state.wkv[0, i] = S.transpose(0, 2, 1) if info.version == "v7" else S
        if p + "att.shift" in tensors:
            state.att_x[0, i] = _tensor(tensors, p + "att.shift", (C,), path)
        if p + "ffn.shift" in tensors:
            state.ffn_x[0, i] = _tensor(tensors, p + "ffn.shift", (C,), path)
    return state


def has_time_state(tensors: dict[str, np.ndarray]) -> bool:
    return any(name.endswith(".att.time_state") for name in tensors)


def _tensor(tensors, name, shape, path) -> np.ndarray:
    if name not in tensors:
        raise ModelFileError(path, f"missing tensor {name}: the state does not fit this model")
    value = np.asarray(tensors[name], dtype=np.float64)
    if value.size != int(np.prod(shape)):
        raise ModelFileError(path, f"tensor {name} has shape {value.shape}, the model needs {shape}")
    return value.reshape(shape)


# ---- LoRA ----

def merge_lora(model: dict[str, np.ndarray], lora: dict[str, np.ndarray], alpha: float, path: str) -> dict[str, np.ndarray]:
    """Merge a LoRA into `.st`-form model tensors (before any load-time transform), as Ai00 does at load."""
    merged = dict(model)
    for name in sorted(lora):
        if name.endswith(".lora.1"):
            continue
        if name.endswith(".lora.0"):
            base = name[: -len(".lora.0")]
            merged[base] = _merge_pair(merged, base, lora, alpha, path)
        elif name in merged and name not in _NEVER_MERGED:
            merged[name] = _merge_full(merged[name], lora[name], name, alpha, path)
    return merged


def _merge_pair(model, base, lora, alpha, path) -> np.ndarray:
    if base not in model or not _LORA_TARGET.search(base):
        raise ModelFileError(path, f"LoRA tensor {base}.lora.0 targets no matrix of the model")
    if base + ".lora.1" not in lora:
        raise ModelFileError(path, f"LoRA tensor {base}.lora.0 has no {base}.lora.1")
    down = np.asarray(lora[base + ".lora.0"], dtype=np.float32)  # (in, r)
    up = np.asarray(lora[base + ".lora.1"], dtype=np.float32)  # (out, r)
    weight = np.asarray(model[base], dtype=np.float32)  # (out, in)
    if down.shape[1] != up.shape[1] or (up.shape[0], down.shape[0]) != weight.shape:
        raise ModelFileError(path, f"LoRA {base}: shapes {up.shape} @ {down.shape}ᵀ do not give {weight.shape}")
    return weight + (alpha / down.shape[1]) * (up @ down.T)


def _merge_full(current, value, name, alpha, path) -> np.ndarray:
    current, value = np.asarray(current, dtype=np.float32), np.asarray(value, dtype=np.float32)
    if value.size != current.size:
        raise ModelFileError(path, f"LoRA tensor {name} has shape {value.shape}, the model's is {current.shape}")
    if np.squeeze(current).ndim >= 2:  # matrices add, scaled by alpha on the LoRA targets and 1 elsewhere
        return current + (alpha if _LORA_TARGET.search(name) else 1.0) * value.reshape(current.shape)
    return value.reshape(current.shape)  # vectors are replaced
