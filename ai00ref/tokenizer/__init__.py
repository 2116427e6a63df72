"""Tokenizers: the RWKV World tokenizer (default) and HF `tokenizer.json` files. Spec: spec/tokenizer.md.

    tok = load_tokenizer()                  # bundled World vocab rwkv_vocab_v20230424.txt
    tok = load_tokenizer("vocab.json")      # Ai00 .json vocab, or a HF tokenizer.json, or a .txt vocab
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

from ai00ref.errors import ModelFileError
from ai00ref.tokenizer.hf import HFTokenizer
from ai00ref.tokenizer.vocab import is_ai00_json_vocab, parse_json_vocab, read_txt_vocab, world_vocab_path
from ai00ref.tokenizer.world import END_OF_TEXT, StreamDecoder, WorldTokenizer

__all__ = ["load_tokenizer", "WorldTokenizer", "HFTokenizer", "StreamDecoder", "END_OF_TEXT"]

_world_cache: dict[str, WorldTokenizer] = {}


def load_tokenizer(path: str | PathLike | None = None) -> WorldTokenizer | HFTokenizer:
    """World tokenizer by default; else by file: `.txt` vocab, Ai00 `.json` vocab, or HF `tokenizer.json`.

    The bundled World tokenizer is built once per process and shared (it is read-only).
    """
    if path is None:
        key = str(world_vocab_path())
        if key not in _world_cache:
            _world_cache[key] = WorldTokenizer(read_txt_vocab(key), key)
        return _world_cache[key]
    path = Path(path)
    if path.suffix == ".txt":
        return WorldTokenizer(read_txt_vocab(path), path)
    if path.suffix != ".json":
        raise ModelFileError(path, "unknown tokenizer file: expected a .txt or Ai00 .json vocab or a HF tokenizer.json")
    entries = json.loads(path.read_text(encoding="utf-8"))
    if is_ai00_json_vocab(entries):
        return WorldTokenizer(parse_json_vocab(entries, path), path)
    return HFTokenizer(path)
