"""Greedy longest match over bytes: the World tokenizer's encoding algorithm, twice.

`greedy_longest_match` is the reference: at each position emit the longest vocab token that is a prefix of the
remaining bytes (the `rwkv` package's TRIE_TOKENIZER.find_longest and web-rwkv compute the same).
`FastGreedyMatcher` computes the identical ids with NumPy, many positions at once; it is checked against the
reference (and against the official package) in tests/test_tokenizer.py. Spec: spec/tokenizer.md §3.
"""
from __future__ import annotations

import numpy as np

from ai00ref.errors import ModelFileError


def longest_token_by_first_byte(ids_by_bytes: dict[bytes, int]) -> list[int]:
    """For each first byte 0..255, the byte length of the longest token starting with it (0 if none)."""
    longest = [0] * 256
    for token in ids_by_bytes:
        longest[token[0]] = max(longest[token[0]], len(token))
    return longest


def greedy_longest_match(data: bytes, ids_by_bytes: dict[bytes, int], longest: list[int]) -> list[int]:
    """Reference encoder: repeatedly take the longest token that is a prefix of data[position:]."""
    ids = []
    position = 0
    while position < len(data):
        for length in range(min(longest[data[position]], len(data) - position), 0, -1):
            token_id = ids_by_bytes.get(data[position:position + length])
            if token_id is not None:
                break
        else:
            raise ValueError(f"no vocab token starts with byte {data[position]:#04x}")
        ids.append(token_id)
        position += length
    return ids


# ---- fast path ----
# 1. Split the bytes into "words" at every boundary (x, y) where the byte pair x y occurs inside no token. No token
#    can cross such a boundary, so greedy matching of each word alone gives the same ids as of the whole text.
# 2. Match all words at once: each word holds (position, candidate length); a vectorized hash lookup tells which
#    candidates are tokens; hits advance the position, misses try one byte shorter.
# 3. Verify: the chosen tokens' bytes must spell the input (this rules out hash collisions), else use the reference.

HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so it has an inverse modulo 2**64
HASH_BASE_INVERSE = np.uint64(pow(int(HASH_BASE), -1, 2**64))
TABLE_BITS = 18                            # 2**18 slots for at most 65536 tokens: load <= 0.25, probes stay short
FEW_WORDS = 16                             # below this many unfinished words, finish them with the reference


def power_table(base: np.uint64, count: int) -> np.ndarray:
    """[base**0, base**1, ..., base**(count-1)] modulo 2**64."""
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


class FastGreedyMatcher:
    """Same ids as `greedy_longest_match`, computed with NumPy over all words of the text at once."""

    def __init__(self, ids_by_bytes: dict[bytes, int], path: str = "<vocab>"):
        self.ids_by_bytes = ids_by_bytes
        self.token_length = np.zeros(max(ids_by_bytes.values()) + 1, dtype=np.int64)  # (V,) bytes per id
        self.token_offset = np.zeros_like(self.token_length)                         # (V,) start in buffer
        self.token_buffer = np.frombuffer(b"".join(ids_by_bytes), dtype=np.uint8)    # all tokens, concatenated
        ids = np.fromiter(ids_by_bytes.values(), dtype=np.int64, count=len(ids_by_bytes))
        self.token_length[ids] = [len(token) for token in ids_by_bytes]
        self.token_offset[ids] = np.cumsum(self.token_length[ids]) - self.token_length[ids]
        self.longest = longest_token_by_first_byte(ids_by_bytes)
        self.longest_array = np.array(self.longest, dtype=np.int64)
        self.pair_inside_token = self.pairs_inside_tokens(ids_by_bytes)  # (256, 256) bool
        self.build_hash_table(ids_by_bytes, path)

    @staticmethod
    def pairs_inside_tokens(ids_by_bytes: dict[bytes, int]) -> np.ndarray:
        """pair[x, y] is True when bytes x y stand next to each other inside some token."""
        pair = np.zeros((256, 256), dtype=bool)
        for token in ids_by_bytes:
            if len(token) > 1:
                codes = np.frombuffer(token, dtype=np.uint8)
                pair[codes[:-1], codes[1:]] = True
        return pair

    def build_hash_table(self, ids_by_bytes: dict[bytes, int], path: str) -> None:
        """Open-addressing table: slot -> (token hash, token length, token id); length 0 marks an empty slot."""
        size = 1 << TABLE_BITS
        self.slot_hash = np.zeros(size, dtype=np.uint64)
        self.slot_length = np.zeros(size, dtype=np.int64)
        self.slot_id = np.full(size, -1, dtype=np.int64)
        tokens = list(ids_by_bytes)
        hashes = [self.hash_of(token) for token in tokens]
        if len(set(zip(hashes, map(len, tokens)))) != len(tokens):
            raise ModelFileError(path, "two tokens have the same hash; the fast matcher cannot index this vocab")
        home = self.home_slot(np.array(hashes, dtype=np.uint64)).tolist()
        for token, token_hash, slot in zip(tokens, hashes, home):
            while self.slot_length[slot]:
                slot = (slot + 1) % size
            self.slot_hash[slot], self.slot_length[slot], self.slot_id[slot] = token_hash, len(token), ids_by_bytes[token]

    @staticmethod
    def hash_of(token: bytes) -> int:
        """Polynomial hash sum_m (byte_m + 1) * INVERSE**m modulo 2**64, the same value `substring_hashes` gives."""
        total, power = 0, 1
        for byte in token:
            total = (total + (byte + 1) * power) % 2**64
            power = power * int(HASH_BASE_INVERSE) % 2**64
        return total

    @staticmethod
    def home_slot(hashes: np.ndarray) -> np.ndarray:
        """Multiplicative hashing: the top TABLE_BITS bits of hash * constant."""
        return ((hashes * np.uint64(0xD6E8FEB86659FD93)) >> np.uint64(64 - TABLE_BITS)).astype(np.int64)

    def lookup(self, hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Token id for each (hash, length), or -1 where no token has it."""
        slots = self.home_slot(hashes)
        found = np.full(len(hashes), -1, dtype=np.int64)
        pending = np.arange(len(hashes))
        while pending.size:
            slot = slots[pending]
            hit = (self.slot_hash[slot] == hashes[pending]) & (self.slot_length[slot] == lengths[pending])
            found[pending[hit]] = self.slot_id[slot[hit]]
            keep = ~hit & (self.slot_length[slot] != 0)
            pending = pending[keep]
            slots[pending] = (slots[pending] + 1) & ((1 << TABLE_BITS) - 1)
        return found

    def encode(self, data: bytes) -> list[int]:
        """Token ids of data; identical to greedy_longest_match(data, ...)."""
        if len(data) < 2:
            return greedy_longest_match(data, self.ids_by_bytes, self.longest)
        codes = np.frombuffer(data, dtype=np.uint8)
        starts, ids = self.match_words(codes, data)
        if not self.spells(codes, starts, ids):
            return greedy_longest_match(data, self.ids_by_bytes, self.longest)
        return ids.tolist()

    def word_bounds(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the words: cut wherever the byte pair occurs inside no token."""
        cuts = np.flatnonzero(~self.pair_inside_token[codes[:-1], codes[1:]]) + 1
        return np.concatenate(([0], cuts)), np.concatenate((cuts, [len(codes)]))

    def match_words(self, codes: np.ndarray, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Greedy longest match of every word at once -> token start positions and ids, in text order."""
        n = len(codes)
        prefix = np.zeros(n + 1, dtype=np.uint64)                       # (n+1,) prefix[k] = sum_{j<k} c_j INV**j
        np.cumsum((codes.astype(np.uint64) + np.uint64(1)) * power_table(HASH_BASE_INVERSE, n), out=prefix[1:])
        powers = power_table(HASH_BASE, n)                               # (n,) BASE**j, undoes the INV**i offset
        token_at = np.full(n, -1, dtype=np.int64)                        # (n,) id of the token starting here
        position, end = self.word_bounds(codes)
        length = np.minimum(end - position, self.longest_array[codes[position]])
        while position.size >= FEW_WORDS:
            hashes = (prefix[position + length] - prefix[position]) * powers[position]
            found = self.lookup(hashes, length)
            hit = found >= 0
            token_at[position[hit]] = found[hit]
            position = np.where(hit, position + length, position)
            length = length - 1                                         # misses try one byte shorter
            live = position < end
            position, end, length, hit = position[live], end[live], length[live], hit[live]
            length[hit] = np.minimum(end[hit] - position[hit], self.longest_array[codes[position[hit]]])
            if np.any(length <= 0):
                raise ValueError("a byte of the text starts no vocab token")
        for start, stop in zip(position.tolist(), end.tolist()):
            word_ids = greedy_longest_match(data[start:stop], self.ids_by_bytes, self.longest)
            token_starts = start + np.cumsum(self.token_length[word_ids]) - self.token_length[word_ids]
            token_at[token_starts] = word_ids
        starts = np.flatnonzero(token_at >= 0)
        return starts, token_at[starts]

    def spells(self, codes: np.ndarray, starts: np.ndarray, ids: np.ndarray) -> bool:
        """True when the tokens (ids at starts) tile the text and their bytes equal it: rules out hash collisions."""
        lengths = self.token_length[ids]
        if starts[0] != 0 or np.any(np.diff(starts, append=len(codes)) != lengths):
            return False
        gather = np.repeat(self.token_offset[ids] - starts, lengths) + np.arange(len(codes))
        return bool(np.array_equal(self.token_buffer[gather], codes))
