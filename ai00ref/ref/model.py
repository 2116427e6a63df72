"""The reference engine: embedding -> blocks (per version) -> head, over ragged batches (spec/engine.md).

Each batch row runs alone, token after token through the recurrence, so a batch equals its rows run one
by one and a sequence equals its tokens fed one at a time: the reference has no cross-row tricks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ai00ref.model_info import ModelInfo
from ai00ref.ref import v4, v5, v6, v7
from ai00ref.ref.common import layer_norm, linear
from ai00ref.ref.state import RecurrentState, zero_state
from ai00ref.weights.canonical import Weights

BLOCKS = {"v4": v4.forward_row, "v5": v5.forward_row, "v6": v6.forward_row, "v7": v7.forward_row}


def check_tokens(tokens: Sequence[Sequence[int]], batch: int, n_vocab: int) -> list[np.ndarray]:
    """Validate a ragged batch: one row of ids in [0, n_vocab) per state row, at least one id in all.

    An empty row is allowed (a scheduler's idle slot): its state is left as it is and its logits are zeros.
    """
    if len(tokens) != batch:
        raise ValueError(f"got {len(tokens)} token rows for a state of batch {batch}")
    rows = []
    for b, row in enumerate(tokens):
        ids = np.asarray(row, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= n_vocab):
            raise ValueError(f"token row {b} has ids outside [0, {n_vocab})")
        rows.append(ids)
    if not any(ids.size for ids in rows):
        raise ValueError("every token row is empty")
    return rows


class RefModel:
    """The NumPy engine. `forward` never mutates the state it is given."""

    backend = "ref"

    def __init__(self, weights: Weights, dtype: str = "float32", initial_state: RecurrentState | None = None):
        self.weights = weights
        self.info: ModelInfo = weights.info
        self.dtype = np.dtype(dtype)
        self.initial_state = initial_state  # batch-1 state from a .state file or the model's time_state

    def new_state(self, batch: int = 1) -> RecurrentState:
        """Zeros, or the loaded initial state repeated for every row."""
        if self.initial_state is None:
            return zero_state(self.info, batch, self.dtype)
        return type(self.initial_state).concat([self.initial_state] * batch).astype(self.dtype)

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """x = LN0(emb[token]): (T,) -> (T, C)."""
        w = self.weights
        return layer_norm(w.emb[ids], w.ln0.weight, w.ln0.bias)

    def head(self, x: np.ndarray) -> np.ndarray:
        """logits = W_head LN_out(x): (T, C) -> (T, V)."""
        w = self.weights
        return linear(layer_norm(x, w.ln_out.weight, w.ln_out.bias), w.head)

    def forward(self, tokens: Sequence[Sequence[int]], state: RecurrentState, full_output: bool = False,
                inplace: bool = False):
        """Ragged batch -> (logits, new state).

        logits: (B, V) after each row's last token, or with `full_output` a list of (T_b, V) per row.
        `inplace=True` updates and returns the given state instead of a copy (for owners of the state).
        """
        rows = check_tokens(tokens, state.batch, self.info.n_vocab)
        if not inplace or state.att_x.dtype != self.dtype:
            state = state.astype(self.dtype)  # a copy: the caller's state stays as it was
        blocks = BLOCKS[self.info.version]
        outputs = []
        for b, ids in enumerate(rows):
            if ids.size == 0:  # an idle row: state untouched, zero logits (none with full_output)
                outputs.append(np.zeros((0 if full_output else 1, self.info.n_vocab), self.dtype))
                continue
            x = blocks(self.weights, self.embed(ids), state, b)  # (T, C)
            outputs.append(self.head(x if full_output else x[-1:]))
        if full_output:
            return outputs, state
        return np.concatenate(outputs), state
