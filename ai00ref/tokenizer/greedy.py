"""Greedy longest match over bytes: the World tokenizer's encoding algorithm, twice.

`greedy_longest_match` is the reference: at each position emit the longest vocab token that is a prefix of the
remaining bytes (the `rwkv` package's TRIE_TOKENIZER.find_longest and web-rwkv compute the same).
`FastGreedyMatcher` computes the identical ids with NumPy, many positions at once; it is checked against the
reference (and against the official package) in tests/test_tokenizer.py. Spec: spec/tokenizer.md §3.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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
# 2. Match all words at once: each word holds (position, candidate length); a vectorized hash-table lookup tells
#    which candidates are tokens; hits advance the position, misses try one byte shorter.
# 3. Verify: the chosen tokens' bytes must spell the input (this rules out hash collisions), else use the reference.

MODULUS = 2**64                             # all hash arithmetic is uint64 and wraps modulo 2**64
HASH_BASE = 0x9E3779B97F4A7C15              # odd, so it has an inverse modulo 2**64
HASH_BASE_INVERSE = pow(HASH_BASE, -1, MODULUS)
LENGTH_MIX = 0xC2B2AE3D27D4EB4F             # key = hash + length * LENGTH_MIX: equal keys need equal lengths too
SLOT_MIX = 0xD6E8FEB86659FD93               # multiplicative hashing of a key to its home slot
EMPTY = 0                                   # key of an empty slot (no token may have it)
FEW_WORDS = 16                              # below this many unfinished words, finish them with the reference
PARALLEL_MIN_BYTES = 1 << 18                # texts this long are split into one part per core (NumPy frees the GIL)
CUT_SEARCH_BYTES = 4096                     # how far past a planned split point to look for a word boundary
_threads: ThreadPoolExecutor | None = None  # shared by all matchers, made on the first long text


def power_table(base: int, count: int) -> np.ndarray:
    """(count,) uint64: [base**0, base**1, ..., base**(count-1)] modulo 2**64."""
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


def token_key(token: bytes) -> int:
    """sum_m (byte_m + 1) * INVERSE**m + length * LENGTH_MIX modulo 2**64 (`substring_keys` gives the same)."""
    total, power = 0, 1
    for byte in token:
        total = (total + (byte + 1) * power) % MODULUS
        power = power * HASH_BASE_INVERSE % MODULUS
    return (total + len(token) * LENGTH_MIX) % MODULUS


def thread_pool() -> ThreadPoolExecutor:
    """One pool of worker threads for long texts, created when first needed."""
    global _threads
    if _threads is None:
        _threads = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="ai00ref-tokenizer")
    return _threads


def substring_keys(prefix: np.ndarray, powers: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """token_key(data[start:start+length]) for every (start, length) pair, from the prefix sums of data.

    prefix[start+length] - prefix[start] = sum_m (c_{start+m} + 1) * INVERSE**(start+m); times BASE**start
    removes the INVERSE**start offset.
    """
    hashes = (prefix[start + length] - prefix[start]) * powers[start]
    return hashes + length.astype(np.uint64) * np.uint64(LENGTH_MIX)


def home_slot(keys: np.ndarray, table_bits: int) -> np.ndarray:
    """The top table_bits bits of key * SLOT_MIX."""
    return ((keys * np.uint64(SLOT_MIX)) >> np.uint64(64 - table_bits)).astype(np.int64)


class FastGreedyMatcher:
    """Same ids as `greedy_longest_match`, computed with NumPy over all words of the text at once."""

    def __init__(self, ids_by_bytes: dict[bytes, int], path: str = "<vocab>"):
        self.ids_by_bytes = ids_by_bytes
        self.longest = longest_token_by_first_byte(ids_by_bytes)
        self.longest_array = np.array(self.longest, dtype=np.int64)              # (256,)
        self.cut_between = ~self.pairs_inside_tokens(ids_by_bytes).ravel()      # (65536,) by x*256 + y
        self.build_token_arrays(ids_by_bytes)
        self.build_hash_table(ids_by_bytes, path)
        self.powers = power_table(HASH_BASE, 1)                                 # grown on demand
        self.inverse_powers = power_table(HASH_BASE_INVERSE, 1)

    @staticmethod
    def pairs_inside_tokens(ids_by_bytes: dict[bytes, int]) -> np.ndarray:
        """(256, 256) bool: pair[x, y] is True when bytes x y stand next to each other inside some token."""
        pair = np.zeros((256, 256), dtype=bool)
        for token in ids_by_bytes:
            codes = np.frombuffer(token, dtype=np.uint8)
            pair[codes[:-1], codes[1:]] = True
        return pair

    def build_token_arrays(self, ids_by_bytes: dict[bytes, int]) -> None:
        """All tokens concatenated in one buffer, with each id's offset and length (for `spells`)."""
        ids = np.fromiter(ids_by_bytes.values(), dtype=np.int64, count=len(ids_by_bytes))
        lengths = np.fromiter(map(len, ids_by_bytes), dtype=np.int64, count=len(ids_by_bytes))
        self.token_buffer = np.frombuffer(b"".join(ids_by_bytes), dtype=np.uint8)  # (total bytes,)
        self.token_length = np.zeros(ids.max() + 1, dtype=np.int64)                 # (max id + 1,)
        self.token_offset = np.zeros(ids.max() + 1, dtype=np.int64)                 # (max id + 1,)
        self.token_length[ids] = lengths
        self.token_offset[ids] = np.cumsum(lengths) - lengths

    def build_hash_table(self, ids_by_bytes: dict[bytes, int], path: str) -> None:
        """Open-addressing (linear probing) table: slot -> token key, token id. At most 1/4 of the slots are used
        (2**18 slots for the World vocab), so probe chains stay short."""
        self.table_bits = max(8, (4 * len(ids_by_bytes)).bit_length())
        size = 1 << self.table_bits
        self.slot_key = np.full(size, EMPTY, dtype=np.uint64)   # (size,)
        self.slot_id = np.full(size, -1, dtype=np.int64)        # (size,)
        keys = [token_key(token) for token in ids_by_bytes]
        if len(set(keys)) != len(keys) or EMPTY in keys:
            raise ModelFileError(path, "two tokens have the same hash key; the fast matcher cannot index this vocab")
        homes = home_slot(np.array(keys, dtype=np.uint64), self.table_bits).tolist()
        for key, slot, token_id in zip(keys, homes, ids_by_bytes.values()):
            while self.slot_key[slot] != EMPTY:
                slot = (slot + 1) % size
            self.slot_key[slot], self.slot_id[slot] = key, token_id

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Token id for each key, or -1 where no token has it."""
        slots = home_slot(keys, self.table_bits)
        slot_keys = self.slot_key[slots]
        found = np.where(slot_keys == keys, self.slot_id[slots], -1)
        pending = np.flatnonzero((found < 0) & (slot_keys != EMPTY))  # home slot holds another key: probe on
        while pending.size:
            slots[pending] = (slots[pending] + 1) & ((1 << self.table_bits) - 1)
            slot_keys = self.slot_key[slots[pending]]
            found[pending] = np.where(slot_keys == keys[pending], self.slot_id[slots[pending]], -1)
            pending = pending[(found[pending] < 0) & (slot_keys != EMPTY)]
        return found

    def power_tables(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """BASE**j and INVERSE**j for j < count (kept between calls, grown by doubling)."""
        if len(self.powers) < count:
            size = max(count, 2 * len(self.powers))
            self.powers, self.inverse_powers = power_table(HASH_BASE, size), power_table(HASH_BASE_INVERSE, size)
        return self.powers[:count], self.inverse_powers[:count]

    def encode(self, data: bytes) -> list[int]:
        """Token ids of data; identical to greedy_longest_match(data, ...). Long texts are cut at word boundaries
        into one part per core, matched in threads."""
        parts = self.split_for_threads(data)
        if len(parts) == 1:
            return self.encode_part(data).tolist()
        return np.concatenate(list(thread_pool().map(self.encode_part, parts))).tolist()

    def encode_part(self, data: bytes) -> np.ndarray:
        """Ids of data as an array: vectorized matching, checked by `spells`, else the reference."""
        if len(data) >= 2:
            codes = np.frombuffer(data, dtype=np.uint8)
            starts, ids = self.match_words(codes, data)
            if self.spells(codes, starts, ids):
                return ids
        return np.array(greedy_longest_match(data, self.ids_by_bytes, self.longest), dtype=np.int64)

    def split_for_threads(self, data: bytes) -> list[bytes]:
        """data cut into about one part per core, each cut at a word boundary (so the ids do not change)."""
        count = min(os.cpu_count() or 1, len(data) // PARALLEL_MIN_BYTES)
        bounds = [0]
        for target in (len(data) * k // count for k in range(1, count)):
            window = np.frombuffer(data[target - 1:target + CUT_SEARCH_BYTES], dtype=np.uint8)
            pairs = (window[:-1].astype(np.uint16) << 8) | window[1:]
            cuts = np.flatnonzero(self.cut_between[pairs])
            if cuts.size and target + cuts[0] > bounds[-1]:
                bounds.append(target + int(cuts[0]))
        bounds.append(len(data))
        return [data[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]

    def word_bounds(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the words: cut wherever the byte pair occurs inside no token."""
        pairs = (codes[:-1].astype(np.uint16) << 8) | codes[1:]                 # (n-1,) x*256 + y
        cuts = np.flatnonzero(self.cut_between[pairs]) + 1
        return np.concatenate(([0], cuts)), np.concatenate((cuts, [len(codes)]))

    def match_words(self, codes: np.ndarray, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Greedy longest match of every word at once -> token start positions and ids, in text order."""
        prefix, powers = self.prefix_sums(codes)
        token_at = np.full(len(codes), -1, dtype=np.int64)            # (n,) id of the token starting here
        position, end = self.word_bounds(codes)                       # (words,) each, updated as words advance
        length = np.minimum(end - position, self.longest_array[codes[position]])
        while position.size >= FEW_WORDS:
            found = self.lookup(substring_keys(prefix, powers, position, length))
            hit = found >= 0
            token_at[position] = found                               # misses write -1 where -1 already is
            position = np.where(hit, position + length, position)
            length = length - 1                                      # misses try one byte shorter
            live = position < end
            position, end, length, hit = position[live], end[live], length[live], hit[live]
            length[hit] = np.minimum(end[hit] - position[hit], self.longest_array[codes[position[hit]]])
            if np.any(length <= 0):
                raise ValueError("a byte of the text starts no vocab token")
        for start, stop in zip(position.tolist(), end.tolist()):
            word_ids = greedy_longest_match(data[start:stop], self.ids_by_bytes, self.longest)
            token_at[start + np.cumsum(self.token_length[word_ids]) - self.token_length[word_ids]] = word_ids
        starts = np.flatnonzero(token_at >= 0)
        return starts, token_at[starts]

    def prefix_sums(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prefix, powers): prefix[k] = sum_{j<k} (c_j + 1) * INVERSE**j (n+1,), powers[j] = BASE**j (n,)."""
        powers, inverse_powers = self.power_tables(len(codes))
        prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
        np.cumsum((codes + np.uint64(1)) * inverse_powers, out=prefix[1:])
        return prefix, powers

    def spells(self, codes: np.ndarray, starts: np.ndarray, ids: np.ndarray) -> bool:
        """True when the tokens (ids at starts) tile the text and their bytes equal it: rules out hash collisions."""
        lengths = self.token_length[ids]
        if starts[0] != 0 or np.any(np.diff(starts, append=len(codes)) != lengths):
            return False
        gather = np.repeat(self.token_offset[ids] - starts, lengths) + np.arange(len(codes))
        return bool(np.array_equal(self.token_buffer[gather], codes))

    def join_tokens(self, ids: list[int]) -> bytes:
        """The concatenated bytes of ids (id 0, end of text, adds none). KeyError for an id the vocab lacks."""
        ids = np.fromiter(ids, dtype=np.int64)
        known = (ids >= 0) & (ids < len(self.token_length))
        known[known] = (self.token_length[ids[known]] > 0) | (ids[known] == 0)
        if not known.all():
            raise KeyError(f"ids not in the vocab: {ids[~known][:5].tolist()}")
        lengths = self.token_length[ids]
        output_start = np.cumsum(lengths) - lengths
        gather = np.repeat(self.token_offset[ids] - output_start, lengths) + np.arange(lengths.sum())
        return self.token_buffer[gather].tobytes()
