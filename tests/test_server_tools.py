"""Tool calls on chat completions (ai00ref/server/tools.py, spec/bnf.md §5): parsing, the prompt, the grammar, the
reader that turns the answer into OpenAI's `tool_calls`, and the whole path on loopback with the `openai` client.

Judges: `json.loads` and `jsonschema` on every call's arguments."""
from __future__ import annotations

import json

import jsonschema
import pytest

from ai00ref.server.app import make_app
from ai00ref.server.chat import chat_prompt
from ai00ref.server.config import config_from_dict
from ai00ref.server.errors import ApiError
from ai00ref.server.runtime import start_runtime
from ai00ref.server.tools import (ToolCallReader, call_text, history_messages, parse_tools, prefixed, tool_grammar)
from ai00ref.weights.random_model import RandomModelSpec, write_random_model
from test_server_api import ServerThread, call, sse_events

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                    "days": {"type": "integer", "enum": [1, 2, 3]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}
SCHEMAS = {"get_weather": WEATHER["function"]["parameters"], "get_time": TIME["function"]["parameters"]}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


# ---- parsing and the prompt ----

@pytest.mark.parametrize("body, param", [
    ({"tools": []}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_bad_tools_are_400(body, param):
    with pytest.raises(ApiError) as caught:
        parse_tools(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_choices():
    assert parse_tools({}) is None and parse_tools({"tools": [WEATHER], "tool_choice": "none"}) is None
    auto = parse_tools({"tools": [WEATHER, TIME]})
    assert not auto.required and [t.name for t in auto.tools] == ["get_weather", "get_time"]
    named = parse_tools({"tools": [WEATHER, TIME], "tool_choice": {"type": "function",
                                                                   "function": {"name": "get_time"}}})
    assert named.required and [t.name for t in named.tools] == ["get_time"]


def test_history_renders_tools_calls_and_results():
    choice = parse_tools({"tools": [WEATHER]})
    messages = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    prompt, _ = chat_prompt(history_messages(messages, choice))
    assert prompt.startswith("System: You can call tools.") and '"name": "get_weather"' in prompt
    assert call_text("get_weather", '{"city": "Paris"}') in prompt
    assert "Observation: sunny" in prompt and prompt.endswith("Assistant:")


def test_prefixed_renames_only_nonterminals():
    grammar = 'start ::= "start" item #"[a-z]+" (* start *) \'x\';\nitem ::= "\\"item";'
    assert prefixed(grammar, "p_") == 'p_start ::= "start" p_item #"[a-z]+" (* start *) \'x\';\np_item ::= "\\"item";'


def test_the_reader_streams_name_then_arguments_without_the_wrapper():
    text = call_text("get_weather", '{"city": "Pa}ris", "days": {"n": 1}}')
    reader, items = ToolCallReader(), []
    for k in range(0, len(text), 3):
        items += reader.feed(text[k:k + 3])
    items += reader.finish()
    assert items[0] == ("call", "get_weather")
    assert "".join(v for kind, v in items[1:] if kind == "arguments") == '{"city": "Pa}ris", "days": {"n": 1}}'
    assert reader.arguments() == '{"city": "Pa}ris", "days": {"n": 1}}'
    plain = ToolCallReader()
    assert plain.feed(" Hello") == [("content", "Hello")] and plain.feed(" there") == [("content", " there")]


# ---- end to end ----

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=7),
                       folder / "tiny.st")
    config = config_from_dict({"model": {"path": str(folder), "name": "tiny.st", "max_batch": 4},
                               "adapter": {"engine": "ref"}})
    served = ServerThread(make_app(start_runtime(config)))
    yield served
    served.close()


def check_call(tool_call: dict) -> None:
    name = tool_call["function"]["name"]
    jsonschema.validate(json.loads(tool_call["function"]["arguments"]), SCHEMAS[name])
    assert tool_call["type"] == "function" and tool_call["id"].startswith("call_")


@pytest.mark.parametrize("seed", range(4))
def test_a_required_call_follows_the_tool_schema(server, seed):
    status, reply = call(server, "/v1/chat/completions", {
        "messages": MESSAGES, "tools": [WEATHER, TIME], "tool_choice": "required", "max_tokens": 80, "seed": seed,
        "temperature": 1.0})
    assert status == 200, reply
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    check_call(choice["message"]["tool_calls"][0])


def test_the_stream_carries_the_same_call(server):
    body = {"messages": MESSAGES, "tools": [WEATHER], "tool_choice": {"type": "function",
                                                                      "function": {"name": "get_weather"}},
            "max_tokens": 80, "temperature": 0}
    whole = call(server, "/api/oai/chat/completions", body)[1]["choices"][0]["message"]["tool_calls"][0]
    status, text = call(server, "/api/oai/chat/completions", {**body, "stream": True})
    chunks = [c for c in sse_events(text) if c != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert "".join(c["function"]["arguments"] for c in calls) == whole["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("seed", range(3))
def test_auto_gives_text_or_a_valid_call(server, seed):
    status, reply = call(server, "/v1/chat/completions", {"messages": MESSAGES, "tools": [WEATHER, TIME],
                                                          "max_tokens": 40, "seed": seed, "temperature": 1.0})
    assert status == 200, reply
    message = reply["choices"][0]["message"]
    if message.get("tool_calls"):
        check_call(message["tool_calls"][0])
    else:
        assert not message["content"].startswith("{")


def test_tools_with_a_grammar_is_400(server):
    status, reply = call(server, "/v1/chat/completions", {"messages": MESSAGES, "tools": [WEATHER],
                                                          "bnf_schema": 'start ::= "x";'})
    assert status == 400 and reply["error"]["param"] == "tools"


def test_the_openai_client_reads_the_call(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, tools=[WEATHER, TIME],
                                           tool_choice="required", max_tokens=80, temperature=0)
    tool_call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(tool_call.function.arguments), SCHEMAS[tool_call.function.name])
    streamed = client.chat.completions.create(model="tiny", messages=MESSAGES, tools=[WEATHER, TIME],
                                              tool_choice="required", max_tokens=80, temperature=0, stream=True)
    pieces = [c.choices[0].delta.tool_calls[0].function.arguments or "" for c in streamed
              if c.choices and c.choices[0].delta.tool_calls]
    assert "".join(pieces) == tool_call.function.arguments


def test_a_tool_schema_the_converter_cannot_express_is_a_400(server):
    status, body = call(server, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "frobnicate": 1}}}]})
    assert status == 400 and body["error"]["code"] == "unsupported_schema" and "frobnicate" in body["error"]["message"]
