"""web-rwkv's quantized modes on one model, for the side-by-side of spec/quant.md's schemes (issue 6): the
`web_rwkv_py` wheel's Model(path, quant=N, quant_nf4=N) quantizes the first N layers to Int8 or NF4, as Ai00's
`quant` / `quant_type` do. Prefill of 1024 tokens (chunk 256) and greedy decode at batch 1, the methods of
../shared/peers/bench_peers.py.

Usage: python3 benchmarks/webrwkv_quant.py MODEL.st LAYERS [DECODE]
"""
import sys
import time

import numpy as np
import web_rwkv_py as web_rwkv


def report(mode: str, phase: str, n: int, seconds: float) -> None:
    print(f"RESULT webrwkv {mode:5s} {phase:8s} n={n:5d} {seconds:8.3f}s {n / seconds:10.1f} tok/s", flush=True)


def main() -> None:
    path, layers = sys.argv[1], int(sys.argv[2])
    n_decode = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    prompt = np.random.default_rng(0).integers(1, 65536, size=1024).tolist()
    for mode, options in (("fp16", {}), ("int8", {"quant": layers}), ("nf4", {"quant_nf4": layers})):
        start = time.time()
        model = web_rwkv.Model(path, **options)
        print(f"webrwkv {mode} load {time.time() - start:.1f} s", flush=True)
        model.clear_state()
        model.run(prompt[:64], token_chunk_size=256)  # warm-up
        model.clear_state()
        start = time.time()
        out = model.run(prompt, token_chunk_size=256)
        report(mode, "pre256", len(prompt), time.time() - start)
        token = int(np.argmax(out))
        model.run([token])
        start = time.time()
        for _ in range(n_decode):
            token = int(np.argmax(model.run([token])))
        report(mode, "decode", n_decode, time.time() - start)
        del model


if __name__ == "__main__":
    main()
