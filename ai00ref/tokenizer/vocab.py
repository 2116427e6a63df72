"""Vocabulary files of the RWKV World tokenizer: the `.txt` form of the `rwkv` package and Ai00's `.json` form.

Both are read into one shape, `dict[int, bytes]` (token id -> the token's bytes). Spec: spec/tokenizer.md §2.
The World vocab `rwkv_vocab_v20230424.txt` ships inside the package (ai00ref/assets/tokenizer/), so it is
found from any working directory and from an installed wheel.
"""
from __future__ import annotations

import json
from ast import literal_eval
from importlib import resources
from os import PathLike
from pathlib import Path

from ai00ref.errors import ModelFileError

WORLD_VOCAB_FILE = "rwkv_vocab_v20230424.txt"


def world_vocab_path() -> Path:
    """The path of the bundled World vocab (package data, so it works from a checkout and from a wheel)."""
    return Path(str(resources.files("ai00ref") / "assets" / "tokenizer" / WORLD_VOCAB_FILE))


# ---- .txt form: "<id> <python literal> <byte length>" per line ----

def parse_txt_line(line: str) -> tuple[int, bytes]:
    """One `.txt` line -> (id, token bytes). The literal may contain spaces, so split at the first and last space."""
    first_space, last_space = line.index(" "), line.rindex(" ")
    token_id = int(line[:first_space])
    literal = literal_eval(line[first_space:last_space].strip())
    token = literal.encode("utf-8") if isinstance(literal, str) else literal
    if not isinstance(token, bytes) or len(token) != int(line[last_space:]):
        raise ValueError(f"token {token_id}: literal does not have the stated byte length")
    return token_id, token


def read_txt_vocab(path: str | PathLike) -> dict[int, bytes]:
    """Read a `.txt` vocab. Lines end in CRLF (pip package copy) or LF (web-rwkv copy); both read the same."""
    text = Path(path).read_text(encoding="utf-8")
    vocab = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        try:
            token_id, token = parse_txt_line(line)
        except (ValueError, SyntaxError) as error:
            raise ModelFileError(path, f"line {number}: {error}") from None
        vocab[token_id] = token
    return vocab


# ---- .json form (web-rwkv/Ai00): {"<id>": "string" | [byte ints]} ----

def parse_json_vocab(entries: dict, path: str | PathLike) -> dict[int, bytes]:
    """Ai00 `.json` entries -> id -> bytes. Strings are UTF-8 encoded; lists are raw bytes."""
    vocab = {}
    for key, value in entries.items():
        if isinstance(value, str):
            vocab[int(key)] = value.encode("utf-8")
        elif isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
            vocab[int(key)] = bytes(value)
        else:
            raise ModelFileError(path, f"token {key}: expected a string or a list of byte values")
    return vocab


def is_ai00_json_vocab(entries: object) -> bool:
    """True for `{"<id>": ...}` (Ai00 vocab); False for anything else, e.g. a HF tokenizer.json."""
    return isinstance(entries, dict) and bool(entries) and all(key.isdigit() for key in entries)


def read_json_vocab(path: str | PathLike) -> dict[int, bytes]:
    """Read an Ai00 `.json` vocab."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    if not is_ai00_json_vocab(entries):
        raise ModelFileError(path, 'not an Ai00 vocab: expected {"<id>": "string" | [byte ints]}')
    return parse_json_vocab(entries, path)


def check_vocab(vocab: dict[int, bytes], path: str | PathLike) -> None:
    """A usable vocab has non-empty, distinct tokens and no token with id 0 (id 0 is end of text)."""
    if 0 in vocab:
        raise ModelFileError(path, "id 0 is reserved for end of text and must not be in the vocab")
    if any(not token for token in vocab.values()):
        raise ModelFileError(path, "the vocab has an empty token")
    if len(set(vocab.values())) != len(vocab):
        raise ModelFileError(path, "two ids have the same bytes")
