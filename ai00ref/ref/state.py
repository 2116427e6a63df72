"""Named recurrent states, one dataclass per version (spec/state.md).

Every field is an array whose first two axes are (B, L): batch row, layer. States are values: the
engines never mutate a state they were given, and `copy()` gives an independent one.
The shift states hold the LayerNorm *output* of the last token seen (spec/common.md §3).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ai00ref.model_info import ModelInfo

V4_PP_INIT = -1e30  # the official package's "minus infinity" for the running max (spec/v4.md §3)


class RecurrentState:
    """Operations shared by every version's state: batch size, copies, row selection, concatenation."""

    @property
    def batch(self) -> int:
        return self.att_x.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def copy(self):
        return type(self)(**{k: v.copy() for k, v in self.arrays().items()})

    def rows(self, index) -> "RecurrentState":
        """The states of the batch rows `index` (an int, a list or a slice), copied; the batch axis is kept."""
        index = [index] if isinstance(index, (int, np.integer)) else index
        return type(self)(**{k: v[index].copy() for k, v in self.arrays().items()})

    @classmethod
    def concat(cls, states: list["RecurrentState"]) -> "RecurrentState":
        return cls(**{k: np.concatenate([s.arrays()[k] for s in states]) for k in states[0].arrays()})

    def assign_row(self, b: int, row: "RecurrentState") -> None:
        """Overwrite batch row b with the batch-1 state `row` (same version and shape)."""
        for name, array in self.arrays().items():
            array[b] = row.arrays()[name][0]

    def astype(self, dtype) -> "RecurrentState":
        return type(self)(**{k: v.astype(dtype) for k, v in self.arrays().items()})


@dataclass
class V4State(RecurrentState):
    att_x: np.ndarray  # (B, L, C) LN1 output of the last token
    aa: np.ndarray  # (B, L, C) WKV numerator, scaled by exp(-pp)
    bb: np.ndarray  # (B, L, C) WKV denominator, scaled by exp(-pp)
    pp: np.ndarray  # (B, L, C) running max exponent; starts at -1e30
    ffn_x: np.ndarray  # (B, L, C) LN2 output of the last token

    @classmethod
    def zeros(cls, info: ModelInfo, batch: int, dtype="float32") -> "V4State":
        shape = (batch, info.n_layer, info.n_embd)
        return cls(np.zeros(shape, dtype), np.zeros(shape, dtype), np.zeros(shape, dtype),
                   np.full(shape, V4_PP_INIT, dtype), np.zeros(shape, dtype))


@dataclass
class MatrixState(RecurrentState):  # v5, v6, v7: one N x N matrix per head
    att_x: np.ndarray  # (B, L, C)
    wkv: np.ndarray  # (B, L, H, N, N) orientation: see the subclasses
    ffn_x: np.ndarray  # (B, L, C)

    @classmethod
    def zeros(cls, info: ModelInfo, batch: int, dtype="float32") -> "MatrixState":
        B, L, C, H, N = batch, info.n_layer, info.n_embd, info.n_head, info.head_size
        return cls(np.zeros((B, L, C), dtype), np.zeros((B, L, H, N, N), dtype), np.zeros((B, L, C), dtype))


class V5State(MatrixState):
    """v5 and v6: wkv is S[h, key j, value i], as the official package."""


class V7State(MatrixState):
    """v7: wkv is S[h, value i, key j], as the official package and its CUDA kernels."""


STATE_CLASSES = {"v4": V4State, "v5": V5State, "v6": V5State, "v7": V7State}


def zero_state(info: ModelInfo, batch: int, dtype="float32") -> RecurrentState:
    return STATE_CLASSES[info.version].zeros(info, batch, dtype)


def to_official(state: RecurrentState, row: int = 0) -> list[np.ndarray]:
    """One row as the official package's state list (v4: 5 per layer; v5-v7: att_x, wkv, ffn_x per layer)."""
    fields = list(state.arrays().values())
    n_layer = fields[0].shape[1]
    return [f[row, i] for i in range(n_layer) for f in fields]


def from_official(info: ModelInfo, tensors: list[np.ndarray], dtype="float32") -> RecurrentState:
    """The inverse of `to_official`: a batch-1 state from the official package's list."""
    cls = STATE_CLASSES[info.version]
    names = [f.name for f in dataclasses.fields(cls)]
    per_layer = len(names)
    arrays = {name: np.stack([np.asarray(tensors[i * per_layer + j]) for i in range(info.n_layer)])[None]
              for j, name in enumerate(names)}
    return cls(**{k: v.astype(dtype) for k, v in arrays.items()})
