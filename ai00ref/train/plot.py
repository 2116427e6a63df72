"""The loss curve of a training log (`log.jsonl` of ai00ref.train.train) as a PNG; needs matplotlib ([train] extra).

    python -m ai00ref.train.plot assets/models/training/log.jsonl assets/models/training/loss.png \
        [--compare OTHER.jsonl --label "run" --compare-label "other run"]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(runs: list[tuple[str, list[dict]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for (label, log), color in zip(runs, ("tab:blue", "tab:orange")):
        tokens = [r["tokens"] / 1e6 for r in log]
        ax.plot(tokens, [r["train_loss"] for r in log], color=color, ls=":",
                label=f"{label}: train (trained-row targets)")
        ax.plot(tokens, [r["val_loss"] for r in log], color=color, ls="-", label=f"{label}: validation (all targets)")
        ax.plot(tokens, [r["val_loss_trained"] for r in log], color=color, ls="--",
                label=f"{label}: validation (trained-row targets)")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_ylim(1.5, 8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    best = min(runs[0][1], key=lambda r: r["val_loss"])
    ax.set_title(f"rwkv7-pydoc-L4-C256: best validation loss {best['val_loss']:.3f} (ppl {best['val_ppl']:.1f})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--label", default="shipped")
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--compare-label", default="other")
    args = ap.parse_args(argv)
    runs = [(args.label, read_log(args.log))]
    if args.compare:
        runs.append((args.compare_label, read_log(args.compare)))
    plot(runs, args.png)
    print("wrote", args.png)


if __name__ == "__main__":
    main()
