"""JSON Schema -> KBNF (ai00ref/server/grammar/schema.py): every text the grammar lets a sampler write is JSON that
validates, judged by `json.loads` and `jsonschema`; valid documents in the grammar's layout are accepted and invalid
ones refused; unsupported keywords are refused by name and path.

Texts are written by a random walk over kbnf's allowed tokens, with a small vocabulary of single printable bytes and
a few multi-byte JSON pieces, so straddling tokens are exercised too.
"""
from __future__ import annotations

import copy
import json
import random

import jsonschema
import kbnf
import pytest
from hypothesis import assume, given, strategies as st

from ai00ref.server.grammar.schema import JSON_OBJECT_GRAMMAR, SchemaError, schema_to_kbnf

PIECES = [bytes([b]) for b in range(0x20, 0x7F)] + [b'{"', b'": ', b", ", b"true", b"null", b"false", b'"}',
                                                    b"12", b"\\n", b"\\u00e9", "é".encode()]
VOCABULARY = kbnf.Vocabulary({i + 1: kbnf.Token(p) for i, p in enumerate(PIECES)},
                             {i + 1: p.decode() for i, p in enumerate(PIECES)})
MAX_STEPS = 400

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
     "required": ["name", "age"]},
    {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}, "c": {"type": "number"}}},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["x", "y", 3]}, "minItems": 1,
                                               "maxItems": 3}}, "required": ["tags"]},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
                                      "kind": {"const": "fixed"}}, "required": ["code", "kind"]},
    {"type": "object", "properties": {"v": {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 2,
                                                                            "maxLength": 4}]},
                                      "w": {"type": ["boolean", "null"]}}, "required": ["v"]},
    {"$defs": {"node": {"type": "object", "properties": {"id": {"type": "integer"},
                                                         "kids": {"type": "array", "items": {"$ref": "#/$defs/node"},
                                                                  "maxItems": 2}},
                        "required": ["id"]}},
     "type": "object", "properties": {"root": {"$ref": "#/$defs/node"}}, "required": ["root"]},
    {"type": "object", "properties": {"any": {}, "list": {"type": "array"}}, "required": ["any"],
     "additionalProperties": False, "title": "t", "description": "d"},
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {"n": {"type": ["string", "null"], "maxLength": 3},  # OpenAI's nullable form
                                      "o": {"type": ["object", "null"], "properties": {"k": {"type": "integer"}},
                                            "required": ["k"]},
                                      "p": {"properties": {"q": {"const": 1}}, "required": ["q"]}},  # implied object
     "required": ["n", "o", "p"]},
]


def engine_for(grammar: str):
    return kbnf.Engine(grammar, VOCABULARY, kbnf.Config())


def random_text(grammar: str, seed: int) -> str | None:
    """A text the grammar allows, chosen at random; None if MAX_STEPS ran out. Closing tokens are favoured after a
    while so that most walks end."""
    engine, rng, out = engine_for(grammar), random.Random(seed), b""
    for step in range(MAX_STEPS):
        engine.compute_allowed_token_ids()
        allowed = engine.get_allowed_token_ids_from_last_computation()
        if not allowed:
            return None
        closing = [t for t in allowed if PIECES[t - 1] in (b"}", b"]", b'"', b'"}')]
        token = rng.choice(closing if closing and step > 40 and rng.random() < 0.7 else allowed)
        out += PIECES[token - 1]
        if engine.try_accept_new_token(token) == kbnf.AcceptTokenResult.Finished:
            return out.decode()
    return None


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_written_texts_validate(schema, seed):
    text = random_text(schema_to_kbnf(schema), seed)
    assume(text is not None)
    jsonschema.validate(json.loads(text), schema)


@st.composite
def schemas(draw, depth: int = 0):
    """Random schemas from the supported subset."""
    leaves = [{"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
              {"type": "string", "maxLength": draw(st.integers(0, 6))}, {"enum": ["a", 1, None]}, {"const": [1, "b"]}]
    if depth >= 2:
        return draw(st.sampled_from(leaves))
    kind = draw(st.sampled_from(["leaf", "object", "array", "anyOf"]))
    if kind == "leaf":
        return draw(st.sampled_from(leaves))
    if kind == "array":
        low = draw(st.integers(0, 2))
        return {"type": "array", "items": draw(schemas(depth + 1)), "minItems": low,
                "maxItems": low + draw(st.integers(0, 2))}
    if kind == "anyOf":
        return {"anyOf": [draw(schemas(depth + 1)), draw(schemas(depth + 1))]}
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4))
    return {"type": "object", "properties": {n: draw(schemas(depth + 1)) for n in names},
            "required": draw(st.lists(st.sampled_from(names), unique=True)) if names else []}


@given(schema=schemas(), seed=st.integers(0, 2 ** 32 - 1))
def test_written_texts_validate_for_random_schemas(schema, seed):
    text = random_text(schema_to_kbnf(schema), seed)
    assume(text is not None)
    jsonschema.validate(json.loads(text), schema)


def accepts(grammar: str, text: str) -> bool:
    engine = engine_for(grammar)
    try:
        return engine.try_accept_new_bytes(text.encode()) == kbnf.AcceptTokenResult.Finished
    except ValueError:
        return False


def test_documents_in_the_layout_are_accepted_and_invalid_ones_refused():
    person = schema_to_kbnf(SCHEMAS[0])
    assert accepts(person, '{"name": "Ann", "age": 41}')
    assert accepts(person, '{"name": "a\\"b\\u00e9", "age": -3}')
    for bad in ['{"name": "Ann"}', '{"age": 41, "name": "Ann"}', '{"name": "Annabelle!", "age": 1}',
                '{"name": "Ann", "age": 4.5}', '{"name": "Ann", "age": 041}', '{"name":"Ann","age":41}']:
        assert not accepts(person, bad), bad
    tree = schema_to_kbnf(SCHEMAS[5])
    assert accepts(tree, '{"root": {"id": 1, "kids": [{"id": 2}, {"id": 3, "kids": []}]}}')
    assert not accepts(tree, '{"root": {"id": 1, "kids": [{"id": 2}, {"id": 3}, {"id": 4}]}}')  # maxItems 2
    code = schema_to_kbnf(SCHEMAS[3])
    assert accepts(code, '{"code": "AB-123", "kind": "fixed"}') and not accepts(code, '{"code": "A-1", "kind": "fixed"}')


def test_escapes_count_as_one_character_and_surrogates_are_not_written():
    short = schema_to_kbnf({"type": "object", "properties": {"s": {"type": "string", "minLength": 2}},
                            "required": ["s"]})
    assert accepts(short, '{"s": "\\u00e9\\n"}')
    assert not accepts(short, '{"s": "\\ud83d\\ude00"}')  # one character for JSON Schema, and never written


def test_json_object_grammar():
    assert accepts(JSON_OBJECT_GRAMMAR, '{"a": [1, {"b": null}, "x"], "c": -1.5e3}')
    assert accepts(JSON_OBJECT_GRAMMAR, "{}")
    assert not accepts(JSON_OBJECT_GRAMMAR, "[1]") and not accepts(JSON_OBJECT_GRAMMAR, '"x"')
    for seed in range(20):
        text = random_text(JSON_OBJECT_GRAMMAR, seed)
        if text is not None:
            assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("schema, words", [
    ({"allOf": [{"type": "integer"}]}, "'allOf' at #"),
    ({"type": "object", "properties": {"x": {"not": {"type": "null"}}}}, "'not' at #/properties/x"),
    ({"type": "integer", "minimum": 3}, "'minimum' at #"),
    ({"type": "string", "format": "date"}, "'format' at #"),
    ({"type": "object", "patternProperties": {"a": {}}}, "'patternProperties'"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, "'additionalProperties'"),
    ({"type": "string", "pattern": "^.*$"}, "'pattern'"),
    ({"type": "string", "pattern": "abc"}, "'pattern'"),  # unanchored: "contains", not expressible here
    ({"type": "string", "pattern": "^[ -~]+$"}, "'pattern'"),  # the range holds '"' and '\\'
    ({"type": "string", "pattern": "^(a|[\\])$"}, "'pattern'"),  # not a valid regex
    ({"const": float("nan")}, "not a JSON value"),
    ({"$ref": "#/$defs/missing"}, "names no definition"),
    ({"$ref": "http://example.com/s.json"}, "unsupported $ref"),
    ({"type": "object", "required": ["x"]}, "'x' has no schema"),
    ({"type": "string", "maxLength": 10 ** 6}, "above"),
    ({"type": "thing"}, "unknown type"),
    ([1], "must be an object"),
])
def test_unsupported_schemas_are_named(schema, words):
    with pytest.raises(SchemaError, match=None) as caught:
        schema_to_kbnf(schema)
    assert words in str(caught.value)


def test_too_many_rules():
    schema = {"type": "object", "properties": {f"p{k}": {"type": "object", "properties": {"q": {"type": "integer"}}}
                                               for k in range(40)}}
    with pytest.raises(SchemaError, match="more than 50 grammar rules"):
        schema_to_kbnf(schema, max_rules=50)


def test_copies_of_an_engine_are_independent():
    engine = engine_for(schema_to_kbnf(SCHEMAS[0]))
    first, second = copy.copy(engine), copy.copy(engine)
    first.try_accept_new_bytes(b'{"name": "A')
    assert second.try_accept_new_bytes(b'{"name": "B", "age": 1}') == kbnf.AcceptTokenResult.Finished
