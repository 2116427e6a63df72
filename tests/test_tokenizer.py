"""Tests of ai00ref.tokenizer: the World tokenizer against the official `rwkv` package's TRIE_TOKENIZER
(same ids on any string), the reference greedy matcher, round trips, stream decoding, the Ai00 .json vocab form
and HF tokenizer.json loading. Run: .venv/bin/python -m pytest tests/test_tokenizer.py -q
"""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai00ref import load_tokenizer
from ai00ref.tokenizer import HFTokenizer, WorldTokenizer
from ai00ref.tokenizer.greedy import FEW_WORDS, greedy_longest_match
from ai00ref.tokenizer.vocab import read_txt_vocab, world_vocab_path

# rwkv-math.md §5.1 vectors; test_vectors_match_official checks them against the official package too.
VECTORS = {
    "Hello world": [33155, 40213],
    "\n\nUser: hi\n\nAssistant:": [261, 24281, 59, 4571, 261, 5585, 41693, 59],
    "The Eiffel tower is in the city of": [6699, 304, 25740, 109, 39990, 4600, 4596, 22590, 30449, 4706],
    "我能吞下玻璃而不伤身体。": [12605, 15752, 11056, 10258, 14452, 14543, 15646, 10260, 10429, 17038, 10452, 10080],
    " 12345": [3485, 654, 54],
}


@pytest.fixture(scope="module")
def tok() -> WorldTokenizer:
    return load_tokenizer()


@pytest.fixture(scope="module")
def official():
    """The official tokenizer; `rwkv/__init__.py` is empty, so this needs only the wheel (no torch)."""
    module = pytest.importorskip("rwkv.rwkv_tokenizer")
    return module.TRIE_TOKENIZER(str(world_vocab_path()))


# ---- strategies: general unicode plus the characters tokenizers get wrong ----
awkward_pieces = (list(" \n\r\t\x00\x0b\x1b\x7f\x80\xa0") + list("aé我能。，😀\u200d\ufeff\U0010ffff")
                  + ["👍🏽", "  ", "\n\n"])
awkward_text = st.lists(st.sampled_from(awkward_pieces), max_size=60).map("".join)
any_text = st.one_of(st.text(), awkward_text, st.text(alphabet=" \n\ta", min_size=100, max_size=400))


# ---- the vocab ----

def test_vocab_facts(tok):
    vocab = read_txt_vocab(world_vocab_path())
    assert sorted(vocab) == list(range(1, 65530))
    assert [vocab[i] for i in range(1, 257)] == [bytes([b]) for b in range(256)]
    assert max(map(len, vocab.values())) == 128 and vocab[65529] == b" " * 128
    assert sum(1 for token in vocab.values() if not is_utf8(token)) == 486
    assert tok.vocab_size == 65536 and tok.token_bytes(0) == b"" and tok.token_bytes(129) == b"\x80"


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_vocab_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert world_vocab_path().is_file() and load_tokenizer().encode("Hello world") == VECTORS["Hello world"]


# ---- encoding ----

@pytest.mark.parametrize("text", list(VECTORS))
def test_vectors(tok, text):
    assert tok.encode(text) == VECTORS[text]


@pytest.mark.parametrize("text", list(VECTORS))
def test_vectors_match_official(official, text):
    assert official.encode(text) == VECTORS[text]


@given(text=any_text)
def test_encode_equals_official(tok, official, text):
    assert tok.encode(text) == official.encode(text)


@given(data=st.binary(max_size=300))
def test_fast_matcher_equals_reference_on_any_bytes(tok, data):
    matcher = tok.matcher
    assert matcher.encode(data) == greedy_longest_match(data, matcher.ids_by_bytes, matcher.longest)


@pytest.mark.parametrize("text", ["a" * 5000, "我" * 3000, " " * 1000 + "x", "ab" * (FEW_WORDS + 3), "", "x",
                                  ("Tokenization" * 40 + "\x00") * (2 * FEW_WORDS)])  # many long words at once
def test_long_and_short_inputs(tok, official, text):
    assert tok.encode(text) == official.encode(text)


def test_hash_collision_falls_back_to_reference(tok, official, monkeypatch):
    """If the chosen tokens did not spell the input (a hash collision), the reference encodes it instead."""
    text = "Hello world, 我能吞下玻璃" * (FEW_WORDS + 1)
    monkeypatch.setattr(type(tok.matcher), "spells", lambda *args: False)
    assert tok.encode(text) == official.encode(text)


def test_never_emits_end_of_text(tok):
    assert 0 not in tok.encode("\x00 <|endoftext|> \x00")


# ---- decoding ----

@given(text=any_text)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode_bytes(tok.encode(text)) == text.encode("utf-8")


@given(ids=st.lists(st.integers(0, 65529), max_size=30))
def test_decode_equals_official_on_any_ids(tok, official, ids):
    """Ids that cut UTF-8 characters: the official package (and we) return a single U+FFFD."""
    expected = official.decode([i for i in ids if i != 0])
    assert tok.decode(ids) == expected


def test_decode_cut_characters(tok):
    emoji = tok.encode("😀")                        # four byte tokens
    assert len(emoji) > 1 and tok.decode(emoji[:-1]) == "\ufffd"
    assert tok.decode([0] + tok.encode("hi") + [0]) == "hi"


def stream(tok, ids) -> str:
    decoder = tok.stream_decoder()
    return "".join(decoder.push(i) for i in ids) + decoder.flush()


@given(text=any_text)
def test_stream_equals_full_decode(tok, text):
    ids = tok.encode(text)
    assert stream(tok, ids) == tok.decode(ids) == text


@given(ids=st.lists(st.integers(1, 65529), max_size=30))
def test_stream_on_cut_characters_is_lossy_decode(tok, ids):
    assert stream(tok, ids) == tok.decode_bytes(ids).decode("utf-8", "replace")


def test_stream_holds_back_partial_character(tok):
    decoder = tok.stream_decoder()
    first, *rest = tok.encode("😀")
    assert decoder.push(first) == ""
    assert "".join(decoder.push(i) for i in rest) == "😀"
    decoder.push(first)
    assert decoder.flush() == "\ufffd"


# ---- other vocab files ----

def write_ai00_json(path, vocab: dict[int, bytes]) -> None:
    """Ai00's convert_tokenizer.py form: UTF-8 tokens as strings, the others as lists of byte values."""
    entries = {str(i): token.decode("utf-8") if is_utf8(token) else list(token) for i, token in vocab.items()}
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")


def test_ai00_json_vocab_gives_same_ids(tok, tmp_path):
    path = tmp_path / "rwkv_vocab_v20230424.json"
    write_ai00_json(path, read_txt_vocab(world_vocab_path()))
    from_json = load_tokenizer(path)
    assert isinstance(from_json, WorldTokenizer)
    text = "".join(VECTORS) + " \x80 😀 \xff"
    assert from_json.encode(text) == tok.encode(text)
    assert json.loads(path.read_text(encoding="utf-8"))["129"] == [128]


def test_txt_vocab_with_lf_lines(tok, tmp_path):
    path = tmp_path / "vocab_lf.txt"
    path.write_bytes(world_vocab_path().read_bytes().replace(b"\r\n", b"\n"))
    assert load_tokenizer(path).encode("".join(VECTORS)) == tok.encode("".join(VECTORS))


def test_hf_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "!": 3}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    tok = load_tokenizer(path)
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == 4
    assert tok.encode("hello world !") == [1, 2, 3]
    assert tok.decode([1, 2]) == "hello world" and tok.decode_bytes([3]) == b"!"
    decoder = tok.stream_decoder()
    assert "".join(decoder.push(i) for i in [1, 2]) + decoder.flush() == "hello world"


def test_unknown_ids_raise(tok):
    for bad in ([65530], [-1], [1, 70000]):
        with pytest.raises(KeyError):
            tok.decode_bytes(bad)


def test_long_text_split_across_threads(tok, official):
    from ai00ref.tokenizer.greedy import PARALLEL_MIN_BYTES
    text = ("Hello world, 我能吞下玻璃。\n\n" * (3 * PARALLEL_MIN_BYTES // 30))[: 3 * PARALLEL_MIN_BYTES]
    data = text.encode()
    parts = tok.matcher.split_for_threads(data)
    assert b"".join(parts) == data and len(parts) == min(os.cpu_count() or 1, len(data) // PARALLEL_MIN_BYTES)
    assert tok.encode(text) == official.encode(text)
    assert tok.encode("a" * (2 * PARALLEL_MIN_BYTES)) == official.encode("a" * (2 * PARALLEL_MIN_BYTES))
