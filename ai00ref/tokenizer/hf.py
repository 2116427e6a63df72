"""A HF `tokenizer.json` (e.g. the GPT-NeoX 20B tokenizer of v4 Pile/Raven models) behind the World tokenizer's API.

A thin wrapper over `tokenizers.Tokenizer.from_file`; no special tokens are added. Spec: spec/tokenizer.md §6.
"""
from __future__ import annotations

from os import PathLike

from tokenizers import Tokenizer


class HFStreamDecoder:
    """Stream decoding for a HF tokenizer: decode all ids so far, emit only the new whole characters.

    A trailing U+FFFD may be an unfinished multi-byte character, so it is held back until the next id or flush().
    """

    def __init__(self, tokenizer: "HFTokenizer"):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0  # characters of decode(ids) already returned

    def push(self, token_id: int) -> str:
        """Add one id; return the new whole characters."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        stable = len(text.rstrip("\ufffd"))
        new, self.emitted = text[self.emitted:stable], max(self.emitted, stable)
        return new

    def flush(self) -> str:
        """End of stream: whatever is left, replacement characters included."""
        text = self.tokenizer.decode(self.ids)
        rest, self.emitted = text[self.emitted:], len(text)
        return rest


class HFTokenizer:
    """encode/decode/stream_decoder over a HF tokenizers.Tokenizer."""

    def __init__(self, path: str | PathLike):
        self.path = str(path)
        self.tokenizer = Tokenizer.from_file(self.path)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Ids of text, without special tokens added."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of ids (special tokens kept)."""
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes of one id's decoded text (byte-level BPE pieces of one character may give U+FFFD)."""
        return self.decode([token_id]).encode("utf-8")

    def decode_bytes(self, ids: list[int]) -> bytes:
        """decode(ids) as UTF-8 bytes."""
        return self.decode(ids).encode("utf-8")

    def stream_decoder(self) -> HFStreamDecoder:
        """A decoder for ids that arrive one at a time."""
        return HFStreamDecoder(self)
