"""Server overhead per generated token, and a loopback load test.

    PYTHONPATH=. .venv/bin/python benchmarks/server_overhead.py [--engine ref|cpu] [--tokens 200] [--streams 64]

1. One greedy stream of --tokens tokens through HTTP (SSE) vs the same decoding by direct `forward` calls on the same
   engine: the difference per token is what the server adds (HTTP, scheduler, sampler, text handling).
2. --streams concurrent streams against [model].max_batch slots: every stream must end with [DONE]; prints the
   wall time and the tokens per second of all streams together.
The model is a small random RWKV-7 (L2 C64, vocab 65536), so the engine's own time is small and the overhead shows.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ai00ref.server.app import make_app  # noqa: E402
from ai00ref.server.config import config_from_dict  # noqa: E402
from ai00ref.server.runtime import start_runtime  # noqa: E402
from ai00ref.weights.random_model import RandomModelSpec, write_random_model  # noqa: E402
from test_server_api import ServerThread  # noqa: E402


def stream(url: str, body: dict) -> tuple[list[dict], float]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        text = response.read().decode()
    events = [json.loads(b[5:]) for b in text.split("\n\n") if b.startswith("data:") and "[DONE]" not in b]
    assert text.rstrip().endswith("[DONE]"), "a stream did not finish"
    return events, time.perf_counter() - start


def direct_decode(engine, prompt: list[int], n: int) -> float:
    """Seconds for the prompt and n greedy single-token steps by direct forward calls (the engine's own time)."""
    start = time.perf_counter()
    logits, state = engine.forward([prompt], engine.new_state(1))
    for _ in range(n - 1):
        logits, state = engine.forward([[int(np.argmax(logits[0]))]], state, inplace=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="ref", help="ref, or a Taichi arch (cpu, vulkan, cuda)")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    write_random_model(RandomModelSpec("v7", n_layer=2, n_embd=64, n_vocab=65536, head_size=16, seed=1),
                       folder / "bench.st")
    config = config_from_dict({"model": {"path": str(folder), "name": "bench.st", "max_batch": args.slots,
                                         "token_chunk_size": 128}, "adapter": {"engine": args.engine}})
    runtime = start_runtime(config)
    server = ServerThread(make_app(runtime))
    url = server.url + "/api/oai/completions"
    body = {"prompt": "The", "max_tokens": args.tokens, "stop": None, "stream": True, "temperature": 0, "top_k": 0}
    stream(url, {**body, "max_tokens": 4})  # warm-up (Taichi compiles here)
    events, seconds = stream(url, body)
    prompt = runtime.tokenizer.encode("The")
    engine_seconds = runtime.scheduler.call(lambda engine: direct_decode(engine, prompt, args.tokens)).result()
    print(f"RESULT one stream: {args.tokens} tokens in {seconds:.3f} s ({args.tokens / seconds:.1f} tok/s); "
          f"direct forward {engine_seconds:.3f} s; server overhead "
          f"{(seconds - engine_seconds) / args.tokens * 1e3:.3f} ms/token")
    load = {**body, "max_tokens": 16, "temperature": 1.0}
    start = time.perf_counter()
    with ThreadPoolExecutor(args.streams) as pool:
        results = list(pool.map(lambda i: stream(url, {**load, "seed": i}), range(args.streams)))
    wall = time.perf_counter() - start
    errors = [e for events, _ in results for e in events if "error" in e]
    assert not errors, errors[:3]
    tokens = sum(len([e for e in events if e["choices"][0].get("text")]) for events, _ in results)
    finished = sum(events[-1]["choices"][0]["finish_reason"] in ("stop", "length") for events, _ in results)
    print(f"RESULT load: {args.streams} streams on {args.slots} slots, {finished} finished, {wall:.2f} s, "
          f"{tokens} text chunks, {tokens / wall:.1f} chunks/s")
    server.close()
    runtime.close()


if __name__ == "__main__":
    main()
