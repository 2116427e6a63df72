"""Device self-check before training: the chunked WKV against the token-by-token recurrence, in the dtype and at the
shapes training uses (fp32, T=512), forward and gradients; and the time of one training-sized forward+backward.

    python -m ai00ref.train.check [--device cuda]
"""
from __future__ import annotations

import argparse
import time

import torch

from ai00ref.train.model import wkv_chunked, wkv_sequential


def inputs(B, T, H, N, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g, device=device) for _ in range(3))
    log_w = -0.6065 * torch.rand(B, T, H, N, generator=g, device=device)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g, device=device), dim=-1)
    a = torch.rand(B, T, H, N, generator=g, device=device)
    return [z.requires_grad_() for z in (r, log_w, k, v, kk, a)] + [torch.zeros(B, H, N, N, device=device)]


def rel(x, ref):
    return (x - ref).norm().item() / ref.norm().item()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    x = inputs(4, 512, 4, 64, args.device)
    y_seq, s_seq = wkv_sequential(*x)
    y_chk, s_chk = wkv_chunked(*x)
    g_seq = torch.autograd.grad(y_seq.square().sum(), x[:6])
    g_chk = torch.autograd.grad(y_chk.square().sum(), x[:6])
    print(f"wkv fp32 T=512: y rel L2 {rel(y_chk, y_seq):.2e}, state {rel(s_chk, s_seq):.2e}, "
          f"grads max rel L2 {max(rel(a, b) for a, b in zip(g_chk, g_seq)):.2e}")
    for fn in (wkv_chunked, wkv_sequential):
        x = inputs(32, 512, 4, 64, args.device)
        for rep in range(3):
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.time()
            torch.autograd.grad(fn(*x)[0].square().sum(), x[:6])
            if args.device == "cuda":
                torch.cuda.synchronize()
        print(f"{fn.__name__} B=32 T=512 H=4 N=64 forward+backward: {time.time() - t:.3f} s")


if __name__ == "__main__":
    main()
