"""RWKV-7 in PyTorch for training (spec/v7.md; `ai00ref/ref/v7.py` is the definition it must equal).

Parameters carry the official `.pth` names and shapes (rwkv-math §1.2), so `state_dict()` is the checkpoint, except
that `emb` and `head` hold only the model's `vocab` rows (`Rwkv7Config.vocab`): every other World-vocabulary row is
exactly zero, in training as in the exported file (`export.py` scatters the rows back into 65536).

The WKV runs in chunks (`wkv_chunked`): inside a chunk of `CHUNK` tokens the state recurrence of spec/v7.md §3 is
solved exactly as one triangular system, and the chunks follow each other sequentially. `wkv_sequential` is the
token-by-token recurrence it is tested against (tests/test_train.py). Needs torch: `pip install -e .[train]`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_DECAY_SCALE = math.exp(-0.5)  # log w = -e^{-1/2}·σ(z): every decay in (0.545, 1) (spec/v7.md §2)
CHUNK = 16  # tokens per WKV chunk: e^{16·0.607} ≈ 1.6e4 keeps the factored decays well inside fp32
LN_X_EPS = 64e-5  # the GroupNorm eps of every engine (rwkv-math §2.0)


@dataclass(frozen=True)
class Rwkv7Config:
    n_layer: int
    n_embd: int  # C
    vocab: tuple[int, ...]  # World ids with trained rows, in model-row order; the other rows are zero
    n_vocab: int = 65536  # rows of the exported emb/head
    head_size: int = 64  # N

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    def lora(self, factor: float) -> int:  # BlinkDL's suggestion: max(32, round(k·√C/32)·32)
        return max(32, int(round(factor * self.n_embd**0.5 / 32) * 32))


# ---- the WKV recurrence (spec/v7.md §3), per head: S (N_value, N_key) ----

def wkv_sequential(r, log_w, k, v, kk, a, state):
    """Token by token. r, log_w, k, v, kk, a: (B, T, H, N); state (B, H, N, N). Returns y (B, T, H, N), state."""
    ys = []
    for t in range(r.shape[1]):
        removed = torch.einsum("bhij,bhj->bhi", state, -kk[:, t])  # (B, H, N_value)
        state = (state * log_w[:, t].exp()[:, :, None, :] + removed[..., None] * (kk[:, t] * a[:, t])[:, :, None, :]
                 + v[:, t, :, :, None] * k[:, t, :, None, :])
        ys.append(torch.einsum("bhij,bhj->bhi", state, r[:, t]))
    return torch.stack(ys, 1), state


def _chunks(x, chunk):
    """(B, T, H, N) -> (B, H, T/chunk, chunk, N)."""
    B, T, H, N = x.shape
    return x.view(B, T // chunk, chunk, H, N).permute(0, 3, 1, 2, 4)


def wkv_chunked(r, log_w, k, v, kk, a, state, chunk: int = CHUNK):
    """The same recurrence, `chunk` tokens at a time; T is padded with no-op tokens (w=1, k=v=kk=r=0).

    Inside a chunk, with c_t = Σ_{i≤t} log w_i, u_t = S_{t-1}·(-kk_t) and b_t = kk_t·a_t:
      S_t = S_0·e^{c_t} + Σ_{s≤t} (u_s b_sᵀ + v_s k_sᵀ)·e^{c_t - c_s}          (decays act on the key axis)
      u_t = S_0 ã_t + Σ_{s<t} u_s (ã_t·b̂_s) + v_s (ã_t·k̂_s)
      with ã_t = -kk_t e^{c_{t-1}}, b̂_s = b_s e^{-c_s}, k̂_s = k_s e^{-c_s} (spec/train.md §2)
    so U = (I - M_ab)⁻¹ (Ã S_0ᵀ + M_ak V): a unit lower-triangular solve, then y_t = S_t r_t in the same terms.
    """
    B, T, H, N = r.shape
    pad = -T % chunk
    if pad:
        r, log_w, k, v, kk, a = (F.pad(z, (0, 0, 0, 0, 0, pad)) for z in (r, log_w, k, v, kk, a))
    dtype = torch.promote_types(r.dtype, torch.float32)  # fp32 at least (float64 in the tests)
    r, log_w, k, v, kk, a = (_chunks(z.to(dtype), chunk) for z in (r, log_w, k, v, kk, a))  # (B, H, n, L, N)
    state = state.to(dtype)
    c = log_w.cumsum(-2)  # (B, H, n, L, N) inclusive
    a_t = -kk * (c - log_w).exp()  # ã: decayed up to t-1
    b_h = kk * a * (-c).exp()  # b̂
    k_h = k * (-c).exp()  # k̂
    r_t = r * c.exp()  # r̃
    strict = torch.ones(chunk, chunk, device=r.device, dtype=torch.bool).tril(-1)
    lower = torch.ones(chunk, chunk, device=r.device, dtype=torch.bool).tril()
    m_ab = (a_t @ b_h.transpose(-1, -2)) * strict  # (B, H, n, L, L)
    m_ak = (a_t @ k_h.transpose(-1, -2)) * strict
    m_rb = (r_t @ b_h.transpose(-1, -2)) * lower
    m_rk = (r_t @ k_h.transpose(-1, -2)) * lower
    eye = torch.eye(chunk, device=r.device, dtype=dtype)
    solved = torch.linalg.solve_triangular(eye - m_ab, torch.cat([a_t, m_ak @ v], -1), upper=False, unitriangular=True)
    u_from_state, u_local = solved[..., :N], solved[..., N:]  # (B, H, n, L, N_key), (B, H, n, L, N_value)
    to_end = (c[..., -1:, :] - c).exp()  # (B, H, n, L, N): e^{c_L - c_s}
    b_end, k_end = kk * a * to_end, k * to_end
    decay_all = c[..., -1, :].exp()  # (B, H, n, N)
    ys = []
    for i in range(r.shape[2]):
        u = u_from_state[:, :, i] @ state.transpose(-1, -2) + u_local[:, :, i]  # (B, H, L, N_value)
        ys.append(r_t[:, :, i] @ state.transpose(-1, -2) + m_rb[:, :, i] @ u + m_rk[:, :, i] @ v[:, :, i])
        state = (state * decay_all[:, :, i, None, :] + u.transpose(-1, -2) @ b_end[:, :, i]
                 + v[:, :, i].transpose(-1, -2) @ k_end[:, :, i])
    y = torch.stack(ys, 2).permute(0, 2, 3, 1, 4).reshape(B, T + pad, H, N)  # (B, T+pad, H, N)
    return y[:, :T], state


# ---- the blocks (parameter names = .pth names) ----

def _shift(x):
    """The previous token's x (zeros before the first): training always starts from a zero state."""
    return F.pad(x, (0, 0, 1, -1))


class TimeMix(nn.Module):
    def __init__(self, cfg: Rwkv7Config, layer: int):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.layer, self.n_head = layer, H
        vec = lambda: nn.Parameter(torch.zeros(1, 1, C))  # noqa: E731
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vec() for _ in range(6))
        self.w0, self.a0, self.v0, self.k_k, self.k_a = (vec() for _ in range(5))
        dw, da, dv, dg = cfg.lora(2.5), cfg.lora(2.5), cfg.lora(1.7), cfg.lora(5)
        self.w1, self.w2 = nn.Parameter(torch.zeros(C, dw)), nn.Parameter(torch.zeros(dw, C))
        self.a1, self.a2 = nn.Parameter(torch.zeros(C, da)), nn.Parameter(torch.zeros(da, C))
        self.v1, self.v2 = nn.Parameter(torch.zeros(C, dv)), nn.Parameter(torch.zeros(dv, C))  # unused in layer 0
        self.g1, self.g2 = nn.Parameter(torch.zeros(C, dg)), nn.Parameter(torch.zeros(dg, C))
        self.r_k = nn.Parameter(torch.zeros(H, N))
        self.receptance, self.key, self.value, self.output = (nn.Linear(C, C, bias=False) for _ in range(4))
        self.ln_x = nn.GroupNorm(H, C, eps=LN_X_EPS)

    def forward(self, x, v_first, wkv=wkv_chunked):
        B, T, C = x.shape
        H = self.n_head
        d = _shift(x) - x
        xr, xw, xk, xv, xa, xg = (x + d * m for m in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r = self.receptance(xr)
        log_w = -LOG_DECAY_SCALE * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        k = self.key(xk)
        v = self.value(xv)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, -1).float(), dim=-1, eps=1e-12)  # (B, T, H, N)
        k = k * (1 + (a - 1) * self.k_a)
        if v_first is None:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        heads = lambda z: z.float().view(B, T, H, -1)  # noqa: E731
        zero = torch.zeros(B, H, C // H, C // H, device=x.device)
        y, _ = wkv(heads(r), log_w.view(B, T, H, -1), heads(k), heads(v), kk, heads(a), zero)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        bonus = (heads(r) * heads(k) * self.r_k).sum(-1, keepdim=True) * heads(v)  # (B, T, H, N)
        return self.output((y + bonus.view(B, T, C)).to(g.dtype) * g), v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: Rwkv7Config):
        super().__init__()
        C = cfg.n_embd
        self.x_k = nn.Parameter(torch.zeros(1, 1, C))
        self.key = nn.Linear(C, 4 * C, bias=False)
        self.value = nn.Linear(4 * C, C, bias=False)

    def forward(self, x):
        return self.value(torch.relu(self.key(x + (_shift(x) - x) * self.x_k)) ** 2)


class Block(nn.Module):
    def __init__(self, cfg: Rwkv7Config, layer: int):
        super().__init__()
        if layer == 0:
            self.ln0 = nn.LayerNorm(cfg.n_embd)
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.att, self.ffn = TimeMix(cfg, layer), ChannelMix(cfg)

    def forward(self, x, v_first, wkv=wkv_chunked):
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        out, v_first = self.att(self.ln1(x), v_first, wkv)
        x = x + out
        return x + self.ffn(self.ln2(x)), v_first


class Rwkv7(nn.Module):
    """Token rows (B, T) of model-row ids -> logits (B, T, len(vocab)) of the trained rows.

    Input id len(vocab) stands for every World token without a trained row: its embedding is the zero row
    (`padding_idx`, never updated), as the exported file's zero rows are.

    The exported model's logit for every other World token is exactly 0 (its head row is zero);
    `full_log_softmax` adds those rows back for the loss.
    """

    def __init__(self, cfg: Rwkv7Config):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(len(cfg.vocab) + 1, cfg.n_embd, padding_idx=len(cfg.vocab))  # last row: zero
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, len(cfg.vocab), bias=False)

    def forward(self, idx, wkv=wkv_chunked):
        x, v_first = self.emb(idx), None
        for block in self.blocks:
            x, v_first = block(x, v_first, wkv)
        return self.head(self.ln_out(x))


def full_log_softmax(logits, n_vocab: int):
    """log p over all n_vocab rows, returned for the trained rows: the V - K zero logits join the normalizer."""
    zero_rows = n_vocab - logits.shape[-1]
    log_zero_rows = torch.tensor(math.log(zero_rows) if zero_rows else -math.inf, device=logits.device)
    lse = torch.logaddexp(torch.logsumexp(logits.float(), -1), log_zero_rows)
    return logits.float() - lse[..., None], -lse  # (…, K) trained rows; (…,) the log p of any zero row
