"""Generate conformance fixtures with the *official* `rwkv` 0.8.32 package (never imported by ai00ref).

Run from the repository root with the oracle venv (torch + rwkv):

    .venv-oracle/bin/python -m conformance.generate            # all cases
    .venv-oracle/bin/python -m conformance.generate v7 v6      # only cases of these variants
    .venv-oracle/bin/python -m conformance.generate trained    # only the trained models of assets/models

For each case the random model (`ai00ref.weights.random_model`) is written as an fp32 `.pth` and run with
strategy `cpu fp32`. The `rwkv` module changes its contents at import time (`RWKV_V7_ON`, `RWKV_JIT_ON`), so
every case runs in its own subprocess (`--worker`). One `.npz` per case lands in `conformance/fixtures/`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ai00ref.weights.random_model import RandomModelSpec, random_model_tensors, random_state_tensors, tensors_digest

FORMAT_VERSION = 1
FIXTURES = Path(__file__).resolve().parent / "fixtures"
COMMAND = ".venv-oracle/bin/python -m conformance.generate"
JIT = "1"  # RWKV_JIT_ON: the package default; the v7 class is a ScriptModule either way

# (variant, n_layer, n_embd, n_vocab, head_size): a main shape for every variant plus odd shapes.
CASES = [(v, 2, 64, 256, 16) for v in ("v4", "v5.0", "v5.1", "v5.2", "v6", "v7")] + [
    (v, 3, 96, 300, 32) for v in ("v4", "v5.0", "v5.1", "v5.2", "v6", "v7")
] + [("v7", 2, 128, 300, 64)]
# the project's trained models (assets/models/README.md): realistic magnitudes that random weights lack
TRAINED = ["assets/models/rwkv7-pydoc-L4-C256.st"]
TRAINED_TEXT = "The for statement in Python differs a bit from what you may be used to in C or Pascal."


def case_spec(case) -> RandomModelSpec:
    variant, n_layer, n_embd, n_vocab, head_size = case
    return RandomModelSpec(variant, n_layer, n_embd, n_vocab, head_size, seed=0)


def fixture_name(spec: RandomModelSpec) -> str:
    return f"{spec.variant}_L{spec.n_layer}_C{spec.n_embd}_N{spec.head_size}_V{spec.n_vocab}_s{spec.seed}.npz"


def prompts(n_vocab: int) -> dict[str, list[int]]:
    """Deterministic prompts inside the vocab; they include token 0 (EOS) and the last id V-1."""
    prefill = [0, n_vocab - 1] + [(7 + 37 * i) % n_vocab for i in range(22)]  # 24 tokens
    return {"prefill": prefill, "steps": [3, 0, n_vocab - 1, 17], "init_state": prefill[:8]}


# ---- worker: runs inside a subprocess whose environment selected the rwkv module flavour ----

def _save_pth(tensors: dict[str, np.ndarray], path: Path) -> None:
    import torch

    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, path)


def _load_official(path: Path, is_v7: bool):
    from rwkv.model import RWKV

    # v4-v6 accept a path with or without ".pth"; RWKV_x070 always appends ".pth" itself
    return RWKV(model=str(path.with_suffix("")) if is_v7 else str(path), strategy="cpu fp32")


def _np_state(state) -> list[np.ndarray]:
    return [s.detach().float().numpy().copy() for s in state]


def _init_state(model, spec: RandomModelSpec, is_v7: bool):
    """v7: the package has no time_state loader; we set state[3i+1] = time_state as is ([h,value,key])."""
    import torch

    if not is_v7:
        return None  # v5/v6: time_state keys are merged into the .pth and the package loads them itself
    state = model.generate_zero_state()
    for i, ts in enumerate(random_state_tensors(spec).values()):
        state[3 * i + 1] = torch.from_numpy(ts.copy()).float()
    return state


def prefill_and_steps(model, p: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """The official model's logits and state after the prompt (every position), then after each single step."""
    out: dict[str, np.ndarray] = {}
    logits, state = model.forward(p["prefill"], None, full_output=True)
    out["prefill_logits"] = logits.float().numpy().copy()
    for i, s in enumerate(_np_state(state)):
        out[f"prefill_state.{i}"] = s
    steps = []
    for tok in p["steps"]:
        logits, state = model.forward([tok], state)
        steps.append(logits.float().numpy().copy())
    out["steps_logits"] = np.stack(steps)
    for i, s in enumerate(_np_state(state)):
        out[f"steps_state.{i}"] = s
    return out


def run_case(spec: RandomModelSpec, tmp: Path) -> dict[str, np.ndarray]:
    is_v7, p = spec.variant == "v7", prompts(spec.n_vocab)
    tensors = random_model_tensors(spec)
    _save_pth(tensors, tmp / "model.pth")
    model = _load_official(tmp / "model.pth", is_v7)
    out = prefill_and_steps(model, p)
    if spec.variant != "v4":  # v4 has no state tuning (neither the package nor web-rwkv)
        if not is_v7:
            _save_pth({**tensors, **random_state_tensors(spec)}, tmp / "model_state.pth")
            model = _load_official(tmp / "model_state.pth", is_v7)
        logits, _ = model.forward(p["init_state"], _init_state(model, spec, is_v7), full_output=True)
        out["init_state_logits"] = logits.float().numpy().copy()
    return out


# ---- trained models: a prompt of real text; logits kept for the trained rows only (the rest are exactly 0) ----

def trained_info(tensors: dict[str, np.ndarray]) -> tuple[RandomModelSpec, np.ndarray, int]:
    """The model's shape (as a spec), its trained rows (nonzero head rows) and one untrained id (> 60000)."""
    V, C = tensors["head.weight"].shape
    H, N = tensors["blocks.0.att.r_k"].shape
    n_layer = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("blocks."))
    columns = np.flatnonzero(tensors["head.weight"].any(axis=1))
    untrained = int(next(t for t in range(60000, V) if not tensors["emb.weight"][t].any()))
    return RandomModelSpec("v7", n_layer, C, V, N, seed=0), columns, untrained


def trained_prompts(untrained: int) -> dict[str, list[int]]:
    from ai00ref.tokenizer import load_tokenizer

    tok = load_tokenizer()
    prefill = tok.encode(TRAINED_TEXT)[:11] + [untrained]  # ends on a token without a trained row
    return {"prefill": prefill, "steps": [0, tok.encode(" The")[0], untrained, tok.encode(" list")[0]]}


def run_trained(file: str, tmp: Path) -> tuple[dict, dict[str, np.ndarray]]:
    import hashlib

    from conformance.runner import REPOSITORY, Fixture, trained_tensors

    trained = {"file": file, "sha256": hashlib.sha256((REPOSITORY / file).read_bytes()).hexdigest()}
    tensors = trained_tensors(Fixture(Path(file), {"trained": trained}, {}))
    spec, columns, untrained = trained_info(tensors)
    p = trained_prompts(untrained)
    _save_pth(tensors, tmp / "model.pth")
    model = _load_official(tmp / "model.pth", True)
    out = prefill_and_steps(model, p)
    for name in ("prefill_logits", "steps_logits"):
        others = np.delete(out[name], columns, axis=-1)
        assert not others.any(), f"{name}: a logit outside the trained rows is not 0; storing columns would lose it"
        out[name] = out[name][..., columns]
    out["columns"], out["n_vocab"] = columns.astype(np.int64), np.int64(spec.n_vocab)
    info = {"spec": spec, "trained": trained, "prompts": p}
    return info, out


def trained_worker(file: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        info, arrays = run_trained(file, Path(tmp))
    m = {**meta(info["spec"], ""), "trained": info["trained"], "prompts": info["prompts"],
         "command": f"{COMMAND} trained", "state_init": "none (no init_state check for trained models)",
         "stored_columns": "logits only for the trained rows (`columns`); every other logit is exactly 0"}
    path = FIXTURES / f"v7_trained_{Path(file).stem}.npz"  # sorts after the random fixtures
    np.savez_compressed(path, format_version=np.int64(FORMAT_VERSION), meta=np.array(json.dumps(m)),
                        **{k: v if v.dtype.kind == "i" else v.astype(np.float32) for k, v in arrays.items()})
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path} "
          f"({path.stat().st_size // 1024} KiB)")


def meta(spec: RandomModelSpec, digest: str) -> dict:
    import torch
    from importlib.metadata import version

    return {
        "format_version": FORMAT_VERSION,
        "spec": {k: getattr(spec, k) for k in ("variant", "n_layer", "n_embd", "n_vocab", "head_size", "seed")},
        "digest": digest,
        "prompts": prompts(spec.n_vocab),
        "generator": "conformance/generate.py",
        "command": f"{COMMAND} {spec.variant}",
        "rwkv_version": version("rwkv"),
        "torch_version": torch.__version__,
        "strategy": "cpu fp32",
        "env": {k: os.environ.get(k) for k in ("RWKV_JIT_ON", "RWKV_CUDA_ON", "RWKV_V7_ON")},
        "state_init": "v5/v6: time_state merged into the .pth, loaded by the package (transpose(1,2)); "
        "v7: state[3i+1] = time_state as is ([h,value,key]); v4: none",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def worker(case_json: str) -> None:
    spec = case_spec(json.loads(case_json))
    digest = tensors_digest(random_model_tensors(spec))
    with tempfile.TemporaryDirectory() as tmp:
        arrays = run_case(spec, Path(tmp))
    path = FIXTURES / fixture_name(spec)
    np.savez_compressed(path, format_version=np.int64(FORMAT_VERSION), meta=np.array(json.dumps(meta(spec, digest))),
                        **{k: v.astype(np.float32) for k, v in arrays.items()})
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path} "
          f"({path.stat().st_size // 1024} KiB)")


# ---- driver: one subprocess per case ----

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="*", help="only cases of these variants, or `trained` (default: all)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        case = json.loads(args.worker)
        return trained_worker(case["trained"]) if isinstance(case, dict) else worker(args.worker)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    cases = [c for c in CASES if not args.variants or c[0] in args.variants]
    cases += [{"trained": f} for f in TRAINED if not args.variants or "trained" in args.variants]
    for case in cases:
        is_v7 = isinstance(case, dict) or case[0] == "v7"
        env = {**os.environ, "RWKV_JIT_ON": JIT, "RWKV_CUDA_ON": "0", "RWKV_V7_ON": "1" if is_v7 else "0"}
        cmd = [sys.executable, "-m", "conformance.generate", "--worker", json.dumps(case)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"case {case} failed:\n{res.stderr[-3000:]}")
        print(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
