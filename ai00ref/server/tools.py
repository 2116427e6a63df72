"""Tool calls on chat completions, as OpenAI's API has them (spec/bnf.md §5; Ai00 has none).

With `tools`, the prompt gains a System message listing them, and a grammar makes the answer either a call, a
JSON object `{"name": "<tool>", "arguments": {...}}` whose arguments follow that tool's parameter schema, or (with
`tool_choice: "auto"`, the default) plain text that does not start with "{". `"required"` or a named function
forces a call; `"none"` sends no tools. A call comes back as `message.tool_calls` (streamed as OpenAI streams them:
the name first, then pieces of the arguments) with `finish_reason: "tool_calls"`. History messages with `tool_calls`
render as the call text; `role: "tool"` messages render as Observation.
"""
from __future__ import annotations

import dataclasses
import json
import re
import uuid

from ai00ref.server.errors import bad_request
from ai00ref.server.openapi import array, nullable, obj, typed

CALL_OPEN = '{"name": "'
ARGUMENTS = '", "arguments": '
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
FUNCTION_NAME = typed("string", pattern=NAME_PATTERN.pattern)
TOOLS = nullable(array(obj({"type": typed("string", enum=["function"]), "function": obj(
    {"name": FUNCTION_NAME, "description": typed("string"),
     "parameters": typed("object", "a JSON Schema of the arguments (what spec/bnf.md §4 can express)")},
    required=("name",))}, required=("type", "function")), "OpenAI's tools (chat only)", minItems=1))
TOOL_CHOICE = nullable({"anyOf": [typed("string", enum=["none", "auto", "required"]),
                                  obj({"type": typed("string", enum=["function"]),
                                       "function": obj({"name": FUNCTION_NAME}, required=("name",))},
                                      required=("function",))]})
TOOL_FIELDS = {"tools": TOOLS, "tool_choice": TOOL_CHOICE}
PLAIN_TEXT = 'plain_text ::= #e"[^{ \\t\\n](.|\\n)*\\n\\n";'  # text up to the default stop "\n\n", not a "{"


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict


@dataclasses.dataclass(frozen=True)
class ToolChoice:
    tools: tuple[Tool, ...]  # the tools the answer may call (one, for a named choice)
    required: bool  # a call is the only answer


def _tool(item, i: int) -> Tool:
    function = item.get("function") if isinstance(item, dict) and item.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\", ...}}}}", "tools")
    if not NAME_PATTERN.match(function["name"]):
        raise bad_request(f"tools[{i}].function.name must be 1-64 letters, digits, _ or -", "tools")
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise bad_request(f"tools[{i}].function.parameters must be a JSON Schema object", "tools")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise bad_request(f"tools[{i}].function.description must be a string", "tools")
    return Tool(function["name"], description, parameters)


def parse_tools(body: dict) -> ToolChoice | None:
    """`tools` and `tool_choice`; None when there are no tools or the choice is "none"."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none"):
            raise bad_request("tool_choice needs tools", "tool_choice")
        return None
    if not isinstance(tools, list) or not tools:
        raise bad_request("tools must be a non-empty list", "tools")
    parsed = tuple(_tool(item, i) for i, item in enumerate(tools))
    if len({tool.name for tool in parsed}) != len(parsed):
        raise bad_request("tool names must be unique", "tools")
    if choice in (None, "auto"):
        return ToolChoice(parsed, required=False)
    if choice == "none":
        return None
    if choice == "required":
        return ToolChoice(parsed, required=True)
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    chosen = [tool for tool in parsed if tool.name == name]
    if not chosen:
        raise bad_request('tool_choice must be "none", "auto", "required" or {"type": "function", "function": '
                          '{"name": <one of the tools>}}', "tool_choice")
    return ToolChoice(tuple(chosen), required=True)


def tools_message(choice: ToolChoice) -> dict:
    """The System message that tells the model its tools and how to call one."""
    lines = ["You can call tools. To call one, answer with only a JSON object "
             '{"name": <tool name>, "arguments": <arguments object>}. The tools:']
    for tool in choice.tools:
        lines.append(json.dumps({"name": tool.name, "description": tool.description, "parameters": tool.parameters},
                                ensure_ascii=False))
    return {"role": "system", "content": "\n".join(lines)}


def call_text(name: str, arguments: str) -> str:
    """A call as the model writes it (the grammar's layout)."""
    return f"{CALL_OPEN}{name}{ARGUMENTS}{arguments}}}"


def history_messages(messages: list, choice: ToolChoice | None) -> list:
    """The request's messages for the template: the tools message first, assistant tool calls as call text."""
    out = [tools_message(choice)] if choice is not None else []
    for message in messages if isinstance(messages, list) else [messages]:
        if isinstance(message, dict) and message.get("tool_calls") and message.get("content") in (None, ""):
            calls = message["tool_calls"]
            if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function"), dict)
                                                      for c in calls):
                raise bad_request("messages[].tool_calls must be a list of {function: {name, arguments}}",
                                  "messages")
            text = "\n".join(call_text(str(c["function"].get("name", "")), str(c["function"].get("arguments", "{}")))
                             for c in calls)
            message = {**message, "content": text}
        out.append(message)
    return out


# ---- the grammar ----

KBNF_LEXEME = re.compile(r'''(\(\*.*?\*\))|(#[a-z]*"(?:[^"\\]|\\.)*"|#[a-z]*'(?:[^'\\]|\\.)*')|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([A-Za-z_][A-Za-z0-9_]*)''', re.S)


def prefixed(grammar: str, prefix: str) -> str:
    """The KBNF `grammar` with every nonterminal renamed `prefix + name` (strings, regexes, comments untouched)."""
    def rename(match: re.Match) -> str:
        return prefix + match.group(4) if match.group(4) else match.group(0)

    return KBNF_LEXEME.sub(rename, grammar)


def kbnf_string(text: str) -> str:
    return json.dumps(text)  # JSON string escapes are valid KBNF terminal escapes


def tool_grammar(choice: ToolChoice) -> str:
    """KBNF: a call of one of the tools (arguments by its parameter schema), or, unless required, plain text."""
    from ai00ref.server.grammar.schema import SchemaError, schema_to_kbnf

    rules, calls = [], []
    for k, tool in enumerate(choice.tools):
        try:
            arguments = prefixed(schema_to_kbnf(tool.parameters), f"t{k}_")
        except SchemaError as error:  # a schema the converter cannot express is the client's to change
            raise bad_request(f"tools: {tool.name}'s parameters: {error}", "tools", code="unsupported_schema") from None
        rules.append(arguments)
        calls.append(f"{kbnf_string(CALL_OPEN + tool.name + ARGUMENTS)} t{k}_start \"}}\"")
    # the chat prefix "Assistant:" is usually followed by a space: one may come first
    start = 'start ::= " "? tool_call;' if choice.required else 'start ::= " "? (tool_call | plain_text);\n' + PLAIN_TEXT
    return "\n".join([start, "tool_call ::= " + " | ".join(calls) + ";", *rules]) + "\n"


# ---- reading the answer ----

class ToolCallReader:
    """Turns the answer's text pieces into OpenAI deltas: `("content", text)` for plain text, or for a call
    `("call", name)` once the name is complete, then `("arguments", piece)`; the wrapper's last "}" is held back."""

    def __init__(self):
        self.text = ""
        self.mode = None  # "content" or "call", decided by the first non-space character
        self.name = None
        self.sent = 0  # characters of the arguments already given out

    def feed(self, piece: str) -> list[tuple[str, str]]:
        self.text += piece
        if self.mode is None:
            stripped = self.text.lstrip()
            if not stripped:
                return []
            self.mode = "call" if stripped.startswith("{") else "content"
            if self.mode == "content":
                return [("content", stripped)]
        if self.mode == "content":
            return [("content", piece)]
        return self._call_deltas()

    def _call_deltas(self) -> list[tuple[str, str]]:
        out = []
        body = self.text.lstrip()
        if self.name is None:
            end = body.find(ARGUMENTS)
            if not body.startswith(CALL_OPEN) or end < 0:
                return out
            self.name = body[len(CALL_OPEN):end]
            out.append(("call", self.name))
        arguments = body[body.find(ARGUMENTS) + len(ARGUMENTS):]
        ready = arguments[:-1] if arguments.endswith("}") else arguments  # maybe the wrapper's "}"
        if len(ready) > self.sent:
            out.append(("arguments", ready[self.sent:]))
            self.sent = len(ready)
        return out

    def finish(self) -> list[tuple[str, str]]:
        """At the end: the arguments without the wrapper's "}" (all given out by now in a finished call)."""
        if self.mode != "call" or self.name is None:
            return []
        arguments = self.text.lstrip()[self.text.lstrip().find(ARGUMENTS) + len(ARGUMENTS):]
        complete = arguments[:-1] if arguments.endswith("}") else arguments
        rest = complete[self.sent:]
        self.sent = len(complete)
        return [("arguments", rest)] if rest else []

    def arguments(self) -> str:
        arguments = self.text.lstrip()[self.text.lstrip().find(ARGUMENTS) + len(ARGUMENTS):]
        return arguments[:-1] if arguments.endswith("}") else arguments


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]
