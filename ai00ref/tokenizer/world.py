"""The RWKV World tokenizer (rwkv_vocab_v20230424): greedy longest match over UTF-8 bytes, token 0 = end of text.

Gives the same ids as the official `rwkv` package's TRIE_TOKENIZER for every string (tests/test_tokenizer.py checks
this with hypothesis). Spec: spec/tokenizer.md.
"""
from __future__ import annotations

import codecs
from os import PathLike

from ai00ref.tokenizer.greedy import FastGreedyMatcher
from ai00ref.tokenizer.vocab import check_vocab

END_OF_TEXT = 0            # id 0 is not in the vocab file: it is the model's end-of-text / document separator
EMBEDDING_ROW_MULTIPLE = 64  # model vocab = (max id + 1) rounded up to this: 65530 -> 65536 rows for World


class StreamDecoder:
    """Turns ids into text one id at a time; bytes that end mid-character are held back until completed.

    Invalid UTF-8 becomes U+FFFD per bad sequence (Python's "replace", the Unicode maximal-subpart rule).
    For valid UTF-8, the pushes' outputs plus flush() equal decode(ids) for every way of splitting ids.
    """

    def __init__(self, tokenizer: "WorldTokenizer"):
        self.tokenizer = tokenizer
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one id; return the characters it completes (maybe "")."""
        return self.utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """End of stream: held-back bytes of an unfinished character come out as U+FFFD."""
        return self.utf8.decode(b"", final=True)


class WorldTokenizer:
    """Encode text to ids and ids to text or bytes with a byte-level vocab (id -> bytes)."""

    def __init__(self, vocab: dict[int, bytes], path: str | PathLike = "<vocab>", vocab_size: int | None = None):
        check_vocab(vocab, path)
        self.path = str(path)
        self.bytes_by_id = dict(vocab)
        self.bytes_by_id.setdefault(END_OF_TEXT, b"")        # decoding end of text adds no bytes
        self.matcher = FastGreedyMatcher({token: token_id for token_id, token in vocab.items()}, self.path)
        rows = -(-(max(vocab) + 1) // EMBEDDING_ROW_MULTIPLE) * EMBEDDING_ROW_MULTIPLE
        self.vocab_size = vocab_size if vocab_size is not None else rows  # model rows; ids 65530..65535 unused

    def __repr__(self) -> str:
        return f"WorldTokenizer({self.path!r}, {len(self.bytes_by_id) - 1} tokens, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Ids of text: greedy longest match over its UTF-8 bytes. No BOS, no special tokens, never id 0."""
        return self.matcher.encode(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Ids of raw bytes (need not be valid UTF-8)."""
        return self.matcher.encode(data)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (b"" for 0, end of text). Raises KeyError for an id the vocab does not have."""
        return self.bytes_by_id[token_id]

    def decode_bytes(self, ids: list[int]) -> bytes:
        """The concatenated bytes of ids. KeyError for an id the vocab does not have."""
        return self.matcher.join_tokens(ids)

    def decode(self, ids: list[int]) -> str:
        """Text of ids, as the official package decodes: if the bytes are not valid UTF-8, the result is the
        single character U+FFFD. For per-character replacement use decode_bytes(ids).decode("utf-8", "replace")
        or stream_decoder()."""
        try:
            return self.decode_bytes(ids).decode("utf-8")
        except UnicodeDecodeError:
            return "\ufffd"

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for ids that arrive one at a time (generation)."""
        return StreamDecoder(self)
