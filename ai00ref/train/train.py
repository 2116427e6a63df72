"""Train the project's small RWKV-7 on the corpus of `ai00ref.train.corpus` (issue 8; assets/models/README.md).

    python -m ai00ref.train.train --corpus .train/corpus --out OUT [--n-layer 4 --n-embd 256 --vocab 8192 ...]

AdamW (betas 0.9/0.99; weight decay on the matrices only; w0 at 2x the learning rate, as BlinkDL's trainer),
warm-up then cosine decay, gradient clipping, bf16 autocast for the matrix products (the WKV runs in fp32),
BlinkDL's L2Wrap (a 1e-4 pull on each token's largest logit). Trained rows: the `--vocab` most frequent tokens of the
training split; other tokens read as the zero embedding and are left out as targets. Their logit is exactly 0 in the
exported model, so the loss normalizes over all 65536 rows (`full_log_softmax`): the model learns to keep them
improbable. Writes to OUT: `compact.npz` (the best validation checkpoint, ai00ref.train.export),
`log.jsonl` (one line per evaluation) and `summary.json`.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ai00ref.train.export import compact_arrays
from ai00ref.train.init import init_weights
from ai00ref.train.model import Rwkv7, Rwkv7Config, full_log_softmax

L2WRAP = 1e-4  # BlinkDL's factor


def choose_vocab(train: np.ndarray, size: int) -> np.ndarray:
    """The `size` most frequent ids of the training split (ties: lower id first), sorted by id."""
    counts = np.bincount(train, minlength=65536)
    order = np.lexsort((np.arange(65536), -counts))  # by count descending, then id
    return np.sort(order[: min(size, int((counts > 0).sum()))])


def row_map(vocab: np.ndarray) -> np.ndarray:
    """(65536,) World id -> model row; ids without a trained row -> len(vocab) (the zero row)."""
    rows = np.full(65536, len(vocab), np.int64)
    rows[vocab] = np.arange(len(vocab))
    return rows


def l2wrap_loss(logits: torch.Tensor) -> torch.Tensor:
    """Adds L2WRAP·max_logit to each token's gradient, as BlinkDL's L2Wrap does."""
    top = logits.float().max(-1).values
    return 0.5 * L2WRAP * (top**2).mean()


def param_groups(model, weight_decay: float, lr: float):
    decay, plain, double = [], [], []
    for name, p in model.named_parameters():
        if name.endswith("att.w0"):
            double.append(p)
        elif p.squeeze().dim() >= 2 and name.endswith(".weight"):
            decay.append(p)
        else:
            plain.append(p)
    return [{"params": plain, "weight_decay": 0.0, "lr_scale": 1.0},
            {"params": double, "weight_decay": 0.0, "lr_scale": 2.0},
            {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0}]


def lr_at(step: int, total: int, warmup: int, lr_init: float, lr_final: float) -> float:
    if step < warmup:
        return lr_init * (0.01 + 0.99 * step / warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_final + (lr_init - lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


def batch(stream: torch.Tensor, rows: torch.Tensor, B: int, T: int, gen: torch.Generator):
    starts = torch.randint(0, stream.numel() - T - 1, (B,), generator=gen)
    idx = (starts[:, None] + torch.arange(T + 1)).to(stream.device)
    tokens = rows[stream[idx]]  # (B, T+1) model rows
    return tokens[:, :-1], tokens[:, 1:]


def train_loss(model, x, y, unk: int):
    """Cross-entropy over the whole World vocabulary (the zero rows are in the normalizer), on the targets with a
    trained row; plus L2Wrap. Returns (loss to minimize, cross-entropy)."""
    logits = model(x)
    logp, _ = full_log_softmax(logits, model.cfg.n_vocab)
    known = y != unk
    ce = -logp.gather(-1, y.clamp(max=unk - 1)[..., None])[..., 0][known].mean()
    return ce + l2wrap_loss(logits), ce


@torch.no_grad()
def evaluate(model, val: torch.Tensor, rows: torch.Tensor, T: int, B: int, n_vocab: int) -> dict:
    """Mean validation loss over every target (`loss`, nats/token, the exported model's own probabilities) and over
    the targets with a trained row (`loss_trained`)."""
    model.eval()
    n = (val.numel() - 1) // T
    total, total_trained, count, count_trained = 0.0, 0.0, 0, 0
    unk = len(model.cfg.vocab)
    for i in range(0, n, B):
        idx = torch.arange(i, min(i + B, n), device=val.device)[:, None] * T + torch.arange(T + 1, device=val.device)
        tokens = rows[val[idx]]
        with torch.autocast("cuda", torch.bfloat16, enabled=val.is_cuda):
            logits = model(tokens[:, :-1])
        logp, logp_zero_row = full_log_softmax(logits, n_vocab)
        y = tokens[:, 1:]
        known = y != unk
        picked = torch.where(known, logp.gather(-1, y.clamp(max=unk - 1)[..., None])[..., 0], logp_zero_row)
        total -= picked.sum().item()
        count += y.numel()
        total_trained -= picked[known].sum().item()
        count_trained += int(known.sum())
    model.train()
    return {"loss": total / count, "ppl": math.exp(total / count), "loss_trained": total_trained / count_trained,
            "targets": count, "targets_trained": count_trained}


def compact_state(model, vocab) -> dict[str, np.ndarray]:
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    return compact_arrays(state, vocab)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path(".train/corpus"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=7680, help="trained emb/head rows (most frequent tokens)")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=float, default=12.0, help="planned length of the cosine schedule")
    ap.add_argument("--max-seconds", type=float, default=1e9,
                    help="time budget: after 20 steps the schedule is shortened to fit it, and training stops at it")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-final", type=float, default=5e-5)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    dev = torch.device(args.device)
    train_np, val_np = np.load(args.corpus / "train.npy"), np.load(args.corpus / "val.npy")
    vocab = choose_vocab(train_np, args.vocab)
    cfg = Rwkv7Config(args.n_layer, args.n_embd, tuple(int(t) for t in vocab), head_size=args.head_size)
    model = init_weights(Rwkv7(cfg), args.seed).to(dev)
    rows = torch.from_numpy(row_map(vocab)).to(dev)
    train_t, val_t = (torch.from_numpy(a.astype(np.int64)).to(dev) for a in (train_np, val_np))
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay, args.lr), lr=args.lr, betas=(0.9, 0.99), eps=1e-16)
    steps_per_epoch = max(1, train_np.size // (args.batch * args.ctx))
    total = int(args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.jsonl").open("w")
    best, best_state, start, step, losses = None, None, time.time(), 0, []
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params} (vocab rows {len(vocab)}), {steps_per_epoch} steps/epoch, {total} planned", flush=True)
    while step < total:
        lr = lr_at(step, total, args.warmup, args.lr, args.lr_final)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        x, y = batch(train_t, rows, args.batch, args.ctx, gen)
        with torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda"):
            loss, ce = train_loss(model, x, y, len(vocab))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        losses.append(ce.detach())  # no host sync per step
        step += 1
        if step == 20 and args.max_seconds < 1e9:  # fit the schedule into the time budget (its cosine then ends)
            fit = int(0.92 * args.max_seconds / ((time.time() - start) / step))
            if fit < total:
                print(f"{(time.time() - start) / step:.3f} s/step: schedule shortened from {total} to {fit} steps")
                total = fit
        out_of_time = time.time() - start > args.max_seconds
        if step % args.eval_every == 0 or step == total or out_of_time:
            ev = evaluate(model, val_t, rows, args.ctx, args.batch, cfg.n_vocab)
            rec = {"step": step, "tokens": step * args.batch * args.ctx, "epoch": step / steps_per_epoch, "lr": lr,
                   "train_loss": torch.stack(losses).mean().item(), "grad_norm": float(grad_norm),
                   "seconds": time.time() - start,
                   **{"val_" + k: v for k, v in ev.items()}}
            losses = []
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            if best is None or ev["loss"] < best["val_loss"]:
                best, best_state = rec, compact_state(model, vocab)
        if out_of_time:
            print(f"stopped by --max-seconds at step {step} of {total}", flush=True)
            break
    np.savez_compressed(args.out / "compact.npz", **best_state)
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "params": n_params, "trained_rows": len(vocab),
               "steps": step, "planned_steps": total, "seconds": time.time() - start, "best": best,
               "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
