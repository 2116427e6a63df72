"""RWKV-7 initial weights as BlinkDL's RWKV-LM `RWKV-v7/train_temp/src/model.py` sets them (facts read there).

- Token-shift mixes: x_s = 1 - (i/C)^(p_s·(1 - layer/L)), p = 0.2 (r, g), 0.9 (w, a), 0.7 (k, v);
  ffn x_k: p = (1-layer/L)^4.
- Decay: w0 = -6 + 6·(n/(C-1))^(1 + (layer/(L-1))^0.3) + 0.5 + 2.5·zigzag; a0 = -0.19 + 0.3·zigzag + 0.4·linear;
  v0 = 0.73 - 0.4·linear; k_k = 0.71 - 0.1·linear; k_a = 1.02; r_k = -0.04.
  (linear = n/(C-1) - 0.5; zigzag: the position inside the head mapped to [-1, 1], then z·|z|.)
- Low-rank pairs: first matrix zero, second orthogonal with gain 0.1 (·√(rows/cols) when rows > cols).
- Matrices (`generate_init_weight`): orthogonal, gain 1; att.key gain 0.1; att.output and ffn.value zero.
- ln_x.weight = ((1+layer)/L)^0.7; emb uniform ±1e-4; head orthogonal with gain 0.5·√(rows/C).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ai00ref.train.model import Rwkv7


def _ortho(x: torch.Tensor, gain: float) -> None:
    rows, cols = x.shape
    nn.init.orthogonal_(x, gain=gain * (math.sqrt(rows / cols) if rows > cols else 1.0))


def _positions(C: int, N: int):
    n = torch.arange(C, dtype=torch.float64)
    linear = n / (C - 1) - 0.5
    zigzag = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    return n, linear, zigzag * zigzag.abs()


@torch.no_grad()
def init_time_mix(att, layer: int, n_layer: int, C: int, N: int) -> None:
    ratio_0_to_1 = layer / max(n_layer - 1, 1)
    ratio_1_to_0 = 1.0 - layer / n_layer
    n, linear, zigzag = _positions(C, N)
    ddd = (n / C).view(1, 1, C)
    for name, p in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
        getattr(att, name).copy_(1.0 - ddd ** (p * ratio_1_to_0))
    decay = -6 + 6 * (n / (C - 1)) ** (1 + ratio_0_to_1**0.3)
    att.w0.copy_((decay + 0.5 + 2.5 * zigzag).view(1, 1, C))
    att.a0.copy_((-0.19 + 0.3 * zigzag + 0.4 * linear).view(1, 1, C))
    att.v0.copy_((0.73 - 0.4 * linear).view(1, 1, C))
    att.k_k.copy_((0.71 - 0.1 * linear).view(1, 1, C))
    att.k_a.fill_(1.02)
    att.r_k.fill_(-0.04)
    for first, second in (("w1", "w2"), ("a1", "a2"), ("v1", "v2"), ("g1", "g2")):
        getattr(att, first).zero_()
        _ortho(getattr(att, second), 0.1)
    nn.init.orthogonal_(att.receptance.weight, gain=1.0)
    nn.init.orthogonal_(att.key.weight, gain=0.1)
    nn.init.orthogonal_(att.value.weight, gain=1.0)
    att.output.weight.zero_()
    att.ln_x.weight.fill_(((1 + layer) / n_layer) ** 0.7)
    att.ln_x.bias.zero_()


@torch.no_grad()
def init_weights(model: Rwkv7, seed: int = 0) -> Rwkv7:
    torch.manual_seed(seed)
    cfg = model.cfg
    C, N, L = cfg.n_embd, cfg.head_size, cfg.n_layer
    for i, block in enumerate(model.blocks):
        init_time_mix(block.att, i, L, C, N)
        ddd = (torch.arange(C, dtype=torch.float64) / C).view(1, 1, C)
        block.ffn.x_k.copy_(1.0 - ddd ** ((1.0 - i / L) ** 4))
        nn.init.orthogonal_(block.ffn.key.weight, gain=1.0)
        block.ffn.value.weight.zero_()
    nn.init.uniform_(model.emb.weight, -1e-4, 1e-4)
    model.emb.weight[-1].zero_()  # the zero row of tokens without a trained row
    rows = model.head.weight.shape[0]
    nn.init.orthogonal_(model.head.weight, gain=0.5 * math.sqrt(rows / C) if rows > C else 0.5)
    return model
