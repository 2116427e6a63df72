"""Tests of ai00ref.server.text (stop strings and UTF-8 emission, ai00-server.md §3) and ai00ref.server.chat
(the chat prompt template, §2). Run: .venv/bin/python -m pytest tests/test_server_text.py -q
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai00ref.server.chat import chat_prompt
from ai00ref.server.errors import ApiError
from ai00ref.server.text import StopScanner

ZHONG = "中".encode()  # e4 b8 ad


def feed_all(scanner: StopScanner, pieces) -> list[tuple[str, bool]]:
    return [scanner.feed(piece) for piece in pieces]


# ---- StopScanner ----

def test_stop_split_across_tokens():
    assert feed_all(StopScanner(["\n\n"]), [b"Hi", b"\n", b"\n"]) == [("Hi", False), ("", False), ("", True)]


def test_partial_match_then_mismatch_releases_the_text():
    assert feed_all(StopScanner(["\n\n"]), [b"a\n", b"b"]) == [("a", False), ("\nb", False)]


def test_utf8_fed_one_byte_at_a_time():
    pieces = [ZHONG[:1], ZHONG[1:2], ZHONG[2:], b"!"]
    assert feed_all(StopScanner([]), pieces) == [("", False), ("", False), ("中", False), ("!", False)]


def test_stop_removes_everything_after_it():
    scanner = StopScanner(["User:"])
    assert scanner.feed(b"Hello\nUser: more") == ("Hello\n", True)
    assert scanner.feed(b"ignored") == ("", True)
    assert scanner.flush() == ""


def test_earliest_full_match_wins():
    assert StopScanner(["b", "ab"]).feed(b"xaby") == ("x", True)


def test_overlapping_prefix_is_found():  # Ai00 misses "ab" in "aab"; a substring search does not
    assert StopScanner(["ab"]).feed(b"aab") == ("a", True)


@pytest.mark.parametrize("stops", [["abc", "bd"], ["bd", "abc"]])
def test_longest_partial_over_all_stops_is_held(stops):
    scanner = StopScanner(stops)
    assert scanner.feed(b"xab") == ("x", False)  # "ab" may start "abc"
    assert scanner.feed(b"d") == ("a", True)  # "bd" completes


def test_multibyte_stop_split_across_tokens():
    scanner = StopScanner(["中"])
    assert feed_all(scanner, [b"a" + ZHONG[:1], ZHONG[1:2], ZHONG[2:]]) == [("a", False), ("", False), ("", True)]


def test_flush_returns_the_withheld_text():
    scanner = StopScanner(["\n\n"])
    assert scanner.feed(b"ok\n") == ("ok", False)
    assert scanner.flush() == "\n"
    assert scanner.flush() == ""


def test_flush_of_a_partial_character_is_a_replacement_char():
    scanner = StopScanner([])
    assert scanner.feed(ZHONG[:2]) == ("", False)
    assert scanner.flush() == "\ufffd"


def test_invalid_bytes_are_replaced_not_held():
    assert StopScanner([]).feed(b"a\x80b") == ("a\ufffdb", False)
    assert feed_all(StopScanner([]), [b"\xe4", b"a"]) == [("", False), ("\ufffda", False)]


def test_empty_stop_strings_are_ignored():
    assert StopScanner(["", "x"]).stops == [b"x"]
    assert StopScanner([""]).feed(b"a\n\n") == ("a\n\n", False)
    assert StopScanner([]).feed(b"a\n\n") == ("a\n\n", False)


def expected_output(data: bytes, cuts: list[int], stops: list[bytes]) -> bytes:
    """A slow model of the scanner: at the first token end where any stop is present, cut at the earliest one."""
    for end in cuts:
        found = [data[:end].find(s) for s in stops if s in data[:end]]
        if found:
            return data[:min(found)]
    return data


@given(st.text("ab\n中é", max_size=20), st.lists(st.text("ab\n中", min_size=1, max_size=3), max_size=3),
       st.lists(st.integers(0, 60), max_size=8))
def test_scanner_matches_a_slow_model(text, stops, splits):
    data = text.encode()
    cuts = sorted({min(s, len(data)) for s in splits} | {len(data)})
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts)]
    scanner = StopScanner(stops)
    out = "".join(chunk for chunk, _ in feed_all(scanner, pieces)) + scanner.flush()
    assert out == expected_output(data, cuts, [s.encode() for s in stops]).decode()


# ---- chat_prompt (§2) ----

CONVERSATION = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello..."},
                {"role": "user", "content": "Tell me about water."}]


def test_chat_prompt_reference_example():
    prompt, model_text = chat_prompt(CONVERSATION)
    assert prompt == "User: Hi!\n\nAssistant: Hello...\n\nUser: Tell me about water.\n\nAssistant:"
    assert model_text == "Hello..."


def test_chat_prompt_names_and_role_spellings():
    messages = [{"role": "System", "content": "Be brief."}, {"role": "tool", "content": "42"},
                {"role": "User", "content": "Hi"}]
    prompt, _ = chat_prompt(messages, names={"user": "Bob", "Assistant": "Alice", "Tool": "Obs"})
    assert prompt == "System: Be brief.\n\nObs: 42\n\nBob: Hi\n\nAlice:"


def test_chat_prompt_collapses_blank_lines_but_model_text_is_raw():
    messages = [{"role": "user", "content": " a\n\n\nb\n  \t\nc "}, {"role": "assistant", "content": "x\n\n y "},
                {"role": "assistant", "content": "z"}]
    prompt, model_text = chat_prompt(messages)
    assert prompt == "User: a\nb\nc\n\nAssistant: x\n y\n\nAssistant: z\n\nAssistant:"  # inner spaces stay
    assert model_text == "x\n\n y \n\nz"


def test_chat_prompt_single_message_empty_and_template():
    assert chat_prompt({"role": "user", "content": "Hi"}) == ("User: Hi\n\nAssistant:", "")
    assert chat_prompt([]) == ("\n\nAssistant:", "")
    assert chat_prompt(None) == ("\n\nAssistant:", "")
    template = {"record": "<{role}>{content}", "prefix": "<{assistant}|{user}>", "sep": "|"}
    assert chat_prompt(CONVERSATION[:2], template=template) == ("<User>Hi!|<Assistant>Hello...|<Assistant|User>",
                                                                "Hello...")
    assert chat_prompt(CONVERSATION[:1], template={"sep": "\n"}) == ("User: Hi!\nAssistant:", "")


@pytest.mark.parametrize("kwargs, param", [
    ({"messages": [{"role": "developer", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "USER", "content": "x"}]}, "messages"),
    ({"messages": [{"content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": None}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, "messages"),
    ({"messages": "Hi"}, "messages"),
    ({"messages": ["Hi"]}, "messages"),
    ({"messages": [], "names": ["User"]}, "names"),
    ({"messages": [], "names": {"developer": "Dev"}}, "names"),
    ({"messages": [], "names": {"user": 1}}, "names"),
    ({"messages": [], "template": "{role}: {content}"}, "template"),
    ({"messages": [], "template": {"sep": 2}}, "template.sep"),
])
def test_chat_prompt_errors(kwargs, param):
    with pytest.raises(ApiError) as err:
        chat_prompt(**kwargs)
    assert (err.value.status, err.value.param) == (400, param)
