"""Trained weights -> the official `.pth` names (the `rwkv` package's v7 keys) and an Ai00 `.st` file.

The trainer saves a *compact* checkpoint (`compact.npz`): every parameter under its `.pth` name, rounded to fp16,
with `emb.weight`/`head.weight` holding only the trained rows, plus `vocab` (their World ids). `full_tensors` scatters
those rows into the 65536-row World matrices, every other row exactly zero. All values are fp16-exact, so the fp32
`.pth` and the fp16 `.st` hold the same numbers and the official package (on the `.pth`) and ai00ref (on either)
compute the same model.

    python -m ai00ref.train.export compact.npz assets/models/NAME.st [--pth NAME.pth]

NumPy only (no torch): it runs where the repository's tests run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

N_VOCAB = 65536
ROWS = ("emb.weight", "head.weight")


def fp16_exact(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def compact_arrays(state: dict[str, np.ndarray], vocab: np.ndarray) -> dict[str, np.ndarray]:
    """The compact checkpoint: fp16 values under `.pth` names; emb without its zero row; `vocab` (K,) ids."""
    out = {name: np.asarray(v, np.float32).astype(np.float16) for name, v in state.items()}
    out["emb.weight"] = out["emb.weight"][: len(vocab)]  # the trainer's last row is the zero row
    out["vocab"] = np.asarray(vocab, np.int64)
    return out


def full_tensors(compact: dict[str, np.ndarray], n_vocab: int = N_VOCAB) -> dict[str, np.ndarray]:
    """fp32 tensors named and shaped as an official v7 `.pth`; untrained emb/head rows exactly zero."""
    vocab = np.asarray(compact["vocab"])
    tensors = {name: fp16_exact(v) for name, v in compact.items() if name != "vocab"}
    for name in ROWS:
        full = np.zeros((n_vocab, tensors[name].shape[1]), np.float32)
        full[vocab] = tensors[name]
        tensors[name] = full
    return dict(sorted(tensors.items()))


def load_compact(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def write_st(tensors: dict[str, np.ndarray], path: str | Path) -> Path:
    """Ai00's conversion (ai00ref.weights.convert) of the tensors, stored fp16."""
    from ai00ref.weights.convert import ST_METADATA, pth_to_st_tensors
    from ai00ref.weights.safetensors_io import write_safetensors

    st = {k: np.ascontiguousarray(v).astype(np.float16) for k, v in pth_to_st_tensors(tensors).items()}
    write_safetensors(Path(path), st, metadata=ST_METADATA)
    return Path(path)


def write_pth(tensors: dict[str, np.ndarray], path: str | Path) -> Path:
    from ai00ref.weights.pth import write_pth as write

    write(Path(path), tensors, dtype="fp32")
    return Path(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("compact", type=Path)
    ap.add_argument("st", type=Path, help="the Ai00 .st to write")
    ap.add_argument("--pth", type=Path, help="also write the official fp32 .pth here")
    args = ap.parse_args(argv)
    tensors = full_tensors(load_compact(args.compact))
    print("wrote", write_st(tensors, args.st))
    if args.pth:
        print("wrote", write_pth(tensors, args.pth))


if __name__ == "__main__":
    main()
