"""Benchmark: ai00ref's World tokenizer vs the official `rwkv` package TRIE_TOKENIZER on ~1 MB of mixed text.

Not collected by default (the file is not test_*.py). Run:
    .venv/bin/python -m pytest tests/bench_tokenizer.py --benchmark-enable
or, for MB/s and tokens/s as plain numbers:
    .venv/bin/python tests/bench_tokenizer.py
Both check that the two tokenizers give identical ids before timing anything.
"""
from __future__ import annotations

import random
import time

import pytest

from ai00ref import load_tokenizer
from ai00ref.tokenizer.vocab import world_vocab_path

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.", "RWKV is an RNN with transformer-level LLM performance.",
    "It can be directly trained like a GPT, which is parallelizable.", "Hello world! How are you doing today?",
    "In 1984, the committee met on March 3rd to discuss the budget of $12,345.67.",
    "User: what is the capital of France?\n\nAssistant: Paris.", "def main():\n    print('hello')\n    return 0\n",
    "Tokenizers split text into pieces called tokens.", "She said, \"I'll be there at 5 p.m.\"",
    "Machine learning models require large amounts of data.", "The Eiffel tower is in the city of Paris.",
]
CHINESE = [
    "我能吞下玻璃而不伤身体。", "今天天气很好，我们去公园散步吧！", "人工智能正在改变我们的生活方式。",
    "这是一个测试句子，用于检查分词器的速度。", "北京是中华人民共和国的首都，有着悠久的历史。", "他说：“明天见。”",
    "机器学习需要大量的数据和计算资源。", "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
]


def mixed_text(size_bytes: int = 1_000_000, seed: int = 0) -> str:
    """Deterministic text: 60% English and 40% Chinese sentences, joined by spaces, newlines or nothing."""
    rng = random.Random(seed)
    pieces, size = [], 0
    while size < size_bytes:
        piece = rng.choice(ENGLISH) if rng.random() < 0.6 else rng.choice(CHINESE)
        piece += rng.choice([" ", " ", "\n", "\n\n", ""])
        pieces.append(piece)
        size += len(piece.encode("utf-8"))
    return "".join(pieces)


def official_tokenizer():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    return TRIE_TOKENIZER(str(world_vocab_path()))


@pytest.fixture(scope="module")
def setup():
    pytest.importorskip("rwkv.rwkv_tokenizer")
    text = mixed_text()
    ours, official = load_tokenizer(), official_tokenizer()
    ids = ours.encode(text)
    assert ids == official.encode(text), "ids differ: benchmark refused"
    return text, ids, ours, official


def test_encode_ours(benchmark, setup):
    text, ids, ours, _ = setup
    assert benchmark(ours.encode, text) == ids


def test_encode_official(benchmark, setup):
    text, ids, _, official = setup
    benchmark.pedantic(official.encode, args=(text,), rounds=3)


def test_decode_ours(benchmark, setup):
    text, ids, ours, _ = setup
    assert benchmark(ours.decode, ids) == text


def test_decode_official(benchmark, setup):
    text, ids, _, official = setup
    benchmark(official.decode, ids)


def best_seconds(function, argument, repeats: int) -> float:
    """The fastest of `repeats` timed calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    text = mixed_text()
    megabytes = len(text.encode("utf-8")) / 1e6
    ours, official = load_tokenizer(), official_tokenizer()
    ids = ours.encode(text)
    assert ids == official.encode(text) and ours.decode(ids) == official.decode(ids) == text
    print(f"{megabytes:.2f} MB of mixed English/Chinese text, {len(ids)} tokens")
    rows = [("encode", ours.encode, official.encode, text), ("decode", ours.decode, official.decode, ids)]
    for name, ours_function, official_function, argument in rows:
        ours_s = best_seconds(ours_function, argument, 10)
        official_s = best_seconds(official_function, argument, 3)
        print(f"{name}: ours {megabytes / ours_s:6.1f} MB/s {len(ids) / ours_s / 1e6:5.2f} Mtok/s | "
              f"official {megabytes / official_s:6.1f} MB/s {len(ids) / official_s / 1e6:5.2f} Mtok/s | "
              f"{official_s / ours_s:4.1f}x")


if __name__ == "__main__":
    main()
