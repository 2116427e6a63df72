"""BNF-constrained sampling (ai00ref/server/grammar/, spec/bnf.md): the old dialect's translation, the seed README's
grammar verbatim, every sampler under a grammar, batching, the cache and the limits; end to end on loopback.

The judge of "the output follows the grammar" is independent of the sampling path: a fresh kbnf engine fed the
output's bytes must accept them (a finished output must finish the grammar), and for the JSON grammars `json.loads`.
"""
from __future__ import annotations

import copy
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kbnf
import pytest
from hypothesis import given, settings, strategies as st

from ai00ref.server.app import make_app
from ai00ref.server.config import config_from_dict
from ai00ref.server.grammar import constraint as constraint_module
from ai00ref.server.grammar.constraint import compile_engine, make_vocabulary, vocabulary_table
from ai00ref.server.grammar.legacy import LegacyBnfError, is_legacy, translate
from ai00ref.server.runtime import start_runtime
from ai00ref.tokenizer import load_tokenizer
from ai00ref.weights.random_model import RandomModelSpec, write_random_model
from test_server_api import ServerThread, call

SEED_GRAMMAR = (Path(__file__).parent / "data" / "seed_readme_grammar.bnf").read_text()
DIGITS = 'start ::= #"[1-9][0-9]{0,3}" " apples";'
SAMPLERS = [
    {"temperature": 0, "top_k": 0},
    {"temperature": 1.5, "top_p": 0.9, "seed": 1},
    {"sampler": {"type": "Typical", "tau": 0.5, "temperature": 1.0}, "seed": 2},
    {"sampler": {"type": "Mirostat", "tau": 3.0, "rate": 0.1}, "seed": 3},
    {"temperature": 1.0, "top_p": 1.0, "logit_bias": {"15": 100.0}, "seed": 4},  # a bias cannot break the grammar
]


@pytest.fixture(scope="module")
def vocabulary():
    tokenizer = load_tokenizer(None)
    return make_vocabulary(vocabulary_table(tokenizer, 65536))


def accepts(vocabulary, grammar: str, text: str, finished: bool) -> bool:
    """Whether a fresh engine for `grammar` accepts `text` (and, with `finished`, is finished after it)."""
    engine = compile_engine(grammar, vocabulary, constraint_module.GrammarLimits())
    try:
        result = engine.try_accept_new_bytes(text.encode())
    except ValueError:
        return False
    return not finished or result == kbnf.AcceptTokenResult.Finished


# ---- the old dialect ----

def test_the_seed_grammar_is_recognised_and_translated(vocabulary):
    assert is_legacy(SEED_GRAMMAR) and not is_legacy(DIGITS)
    grammar = translate(SEED_GRAMMAR)
    assert "except!" not in grammar and "<" not in grammar.split("::=", 1)[0]
    for text in ['{"name": "Bob"}', '{"age": 12, "job": "x\\"y"}', '{"job": "a", "name": "b", "age": 0}']:
        assert accepts(vocabulary, grammar, text, finished=True), text
    for text in ['{"name": ""}', '{"age": 012}', '{"name": "a\nb"}', '{"city": "x"}', '{"name": "a"']:
        assert not accepts(vocabulary, grammar, text, finished=True), text


@pytest.mark.parametrize("text, message", [
    ("<a> ::= 'x'", "no <start>"),
    ("<start> ::= <b>", "never defined"),
    ("<start> ::= <except!([s])>\n<s> ::= 'a' | 'a' <s>", "recursive"),
    ("<start> ::= 'a\\q'", "unknown escape"),
    ("<start> ::= 'abc", "unterminated"),
    ("<start> ::= 'a' |", "empty alternative"),
    ("<start> ::= 'a'\nnot a rule", "line 2"),
])
def test_old_dialect_errors_name_the_problem(text, message):
    with pytest.raises(LegacyBnfError, match=message):
        translate(text)


def test_except_of_one_literal_and_any(vocabulary):
    grammar = translate("<start> ::= '(' <except!(')')> ')' <tail>\n<tail> ::= '!' <any!>")
    assert accepts(vocabulary, grammar, "(abc)!x", finished=False)
    assert not accepts(vocabulary, grammar, "(a)b)!x", finished=False)


# ---- end to end ----

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=7),
                       folder / "tiny.st")
    config = config_from_dict({"model": {"path": str(folder), "name": "tiny.st", "max_batch": 4},
                               "adapter": {"engine": "ref"},
                               "bnf": {"compile_seconds": 3.0, "regex_memory_bytes": 2 ** 30,
                                       "max_grammar_bytes": 4096}})
    runtime = start_runtime(config)
    served = ServerThread(make_app(runtime))
    served.runtime = runtime
    yield served
    served.close()


def complete(server, **body):
    status, reply = call(server, "/api/oai/completions", {"prompt": "I have", "max_tokens": 12, "stop": None, **body})
    assert status == 200, reply
    return reply["choices"][0]["text"], reply["choices"][0]["finish_reason"]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_follows_the_grammar(server, sampler):
    text, reason = complete(server, bnf_schema=DIGITS, **sampler)
    assert reason == "stop" and re.fullmatch(r"[1-9][0-9]{0,3} apples", text), text


def test_the_seed_grammar_verbatim_in_a_request(server, vocabulary):
    grammar = translate(SEED_GRAMMAR)
    for seed in range(4):
        status, reply = call(server, "/api/oai/chat/completions", {
            "messages": [{"role": "user", "content": "Describe a person as JSON."}], "bnf_schema": SEED_GRAMMAR,
            "max_tokens": 40, "seed": seed, "temperature": 1.0, "top_p": 0.5})
        assert status == 200, reply
        choice = reply["choices"][0]
        text = choice["message"]["content"]  # chat content is trimmed; the grammar starts with "{", no space
        assert accepts(vocabulary, grammar, text, finished=choice["finish_reason"] == "stop"), text
        if choice["finish_reason"] == "stop":
            assert set(json.loads(text)) <= {"name", "age", "job"}


def test_grammars_in_a_batch_each_keep_their_own(server):
    grammars = [DIGITS, 'start ::= "yes" | "no";', 'start ::= #"[a-z]{3}" "!";']
    patterns = [r"[1-9][0-9]{0,3} apples", r"yes|no", r"[a-z]{3}!"]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda k: complete(server, bnf_schema=grammars[k % 3], seed=k, temperature=1.2),
                                range(6)))
    for k, (text, reason) in enumerate(results):
        assert reason == "stop" and re.fullmatch(patterns[k % 3], text), (k, text)


def test_a_grammar_is_compiled_once(server, monkeypatch):
    calls = []
    original = constraint_module.compile_engine
    monkeypatch.setattr(constraint_module, "compile_engine", lambda *a: calls.append(1) or original(*a))
    grammar = 'start ::= "cached" #"[0-9]";'
    assert complete(server, bnf_schema=grammar, seed=1)[1] == "stop"
    assert complete(server, bnf_schema=grammar, seed=2)[1] == "stop"
    assert len(calls) == 1  # the preflight process compiles too, but not in this interpreter


@pytest.mark.parametrize("body, code, words", [
    ({"bnf_schema": "start ::= ;"}, "invalid_grammar", "KBNF"),
    ({"bnf_schema": 'start ::= other;'}, "invalid_grammar", "other"),
    ({"bnf_schema": "<start> ::= <missing>"}, "invalid_grammar", "never defined"),
    ({"bnf_schema": 'start ::= "' + "a" * 5000 + '";'}, "grammar_too_large", "4096"),
    ({"bnf_schema": 'start ::= #"(a|b)*a(a|b){18}";'}, "grammar_timeout", "3.0 s"),
    ({"bnf_schema": 42}, "invalid_value", "string"),
    ({"bnf_schema": "\U00100bcbD."}, "invalid_grammar", "compiler failed"),  # kbnf 0.4 panics (schemathesis)
    ({"bnf_schema": DIGITS, "response_format": {"type": "json_object"}}, "invalid_value", "not both"),
])
def test_bad_grammars_are_400_naming_the_problem(server, body, code, words):
    status, reply = call(server, "/api/oai/completions", {"prompt": "x", "max_tokens": 4, **body})
    assert status == 400, reply
    assert reply["error"]["code"] == code and words in reply["error"]["message"]


def test_the_server_answers_while_a_grammar_times_out(server):
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(call, server, "/api/oai/completions",
                           {"prompt": "x", "bnf_schema": 'start ::= #"(a|b)*a(a|b){19}";'})
        assert complete(server, max_tokens=2, temperature=0)[1] == "length"  # served meanwhile
        assert slow.result()[0] == 400


# ---- OpenAI's response_format ----

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"},
                                           "pets": {"type": "array", "items": {"enum": ["cat", "dog"]},
                                                    "maxItems": 2}},
          "required": ["name", "age"]}


@pytest.mark.parametrize("seed", range(3))
def test_json_schema_answers_validate(server, seed):
    import jsonschema

    status, reply = call(server, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "A person, please."}], "max_tokens": 80, "seed": seed,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}})
    assert status == 200, reply
    assert reply["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(reply["choices"][0]["message"]["content"]), PERSON)


def test_json_object_answers_parse(server):
    for seed in range(3):
        status, reply = call(server, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "JSON!"}], "max_tokens": 60, "seed": seed,
            "temperature": 0.7, "response_format": {"type": "json_object"}})
        assert status == 200, reply
        if reply["choices"][0]["finish_reason"] == "stop":
            assert isinstance(json.loads(reply["choices"][0]["message"]["content"]), dict)


@pytest.mark.parametrize("response_format, words", [
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"x": {"allOf": []}}}}},
     "'allOf' at #/properties/x"),
    ({"type": "json_schema", "json_schema": {}}, "schema"),
    ({"type": "yaml"}, "type one of"),
])
def test_bad_response_formats_are_400(server, response_format, words):
    status, reply = call(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                          "response_format": response_format})
    assert status == 400 and reply["error"]["param"] == "response_format" and words in reply["error"]["message"]


def test_text_response_format_is_free_text(server):
    text, reason = complete(server, response_format={"type": "text"}, max_tokens=3, temperature=0)
    assert reason == "length"


@settings(max_examples=12)
@given(sampler=st.sampled_from(SAMPLERS), seed=st.integers(0, 2 ** 32 - 1))
def test_every_sampler_and_seed_keeps_to_the_schema(server, vocabulary, sampler, seed):
    """Property: whatever the sampler and seed, a finished answer validates and a cut one is a prefix the grammar
    accepts."""
    import jsonschema
    from ai00ref.server.grammar.schema import schema_to_kbnf

    status, reply = call(server, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "A person."}], "max_tokens": 40,
        "response_format": {"type": "json_schema", "json_schema": {"schema": PERSON}}, **sampler, "seed": seed})
    assert status == 200, reply
    text, reason = reply["choices"][0]["message"]["content"], reply["choices"][0]["finish_reason"]
    if reason == "stop":
        jsonschema.validate(json.loads(text), PERSON)
    else:
        assert accepts(vocabulary, schema_to_kbnf(PERSON), text, finished=False)
