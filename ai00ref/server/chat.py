"""The chat prompt template (shared/reference/ai00-server.md §2, request fields §1.5).

`chat_prompt(messages, names, template)` renders `{role}: {content}` records joined by "\\n\\n", then the
"{assistant}:" prefix, and returns the raw assistant contents too (they seed the repetition penalties, §4.2).
"""
from __future__ import annotations

import re

from ai00ref.server.errors import bad_request
from ai00ref.server.openapi import array, nullable, obj, typed

# Accepted spellings of each role (§1.5) -> its key.
ROLE_KEYS = {"system": "system", "System": "system", "user": "user", "User": "user",
             "assistant": "assistant", "Assistant": "assistant", "observation": "observation",
             "Observation": "observation", "tool": "observation", "Tool": "observation"}
DEFAULT_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "observation": "Observation"}
DEFAULT_TEMPLATE = {"record": "{role}: {content}", "prefix": "{assistant}:", "sep": "\n\n"}
BLANK_LINES = re.compile(r"\n(\s*\n)+")  # a run of blank lines collapses to one "\n"

# the fields' schemas (the OpenAPI document), from the tables above
ROLE = typed("string", enum=sorted(ROLE_KEYS))
MESSAGE = obj({"role": ROLE, "content": typed("string"), "name": typed("string"),
               "tool_calls": array(obj({"function": obj({"name": typed("string"), "arguments": typed("string")})}),
                                   "an assistant's earlier tool calls (content null)")},
              required=("role",), description="content is a string, except for an assistant message with tool_calls")
MESSAGES = nullable({"anyOf": [array(MESSAGE), MESSAGE], "description": "the conversation, oldest first"})
NAMES = nullable({"type": "object", "propertyNames": ROLE, "additionalProperties": typed("string"),
                  "description": f"role -> display name (default {DEFAULT_NAMES})"})
TEMPLATE = nullable(obj({key: nullable(typed("string")) for key in DEFAULT_TEMPLATE},
                        description=f"the prompt template (default {DEFAULT_TEMPLATE})"))
CHAT_FIELDS = {"messages": MESSAGES, "names": NAMES, "template": TEMPLATE}


def role_key(role: object, param: str) -> str:
    if not isinstance(role, str) or role not in ROLE_KEYS:
        raise bad_request(f"`{param}` must be one of system, user, assistant, observation or tool; got {role!r}",
                          param)
    return ROLE_KEYS[role]


def clean_content(content: str) -> str:
    """Blank-line runs become a single newline, then the ends are stripped (§2)."""
    return BLANK_LINES.sub("\n", content).strip()


def display_names(names: object) -> dict[str, str]:
    """DEFAULT_NAMES overridden by the request's `names` ({role: display name}; any accepted role spelling)."""
    if names is None:
        return dict(DEFAULT_NAMES)
    if not isinstance(names, dict):
        raise bad_request("`names` must be an object of role -> name", "names")
    out = dict(DEFAULT_NAMES)
    for role, name in names.items():
        if not isinstance(name, str):
            raise bad_request(f"`names.{role}` must be a string", "names")
        out[role_key(role, "names")] = name
    return out


def chat_template(template: object) -> dict[str, str]:
    """DEFAULT_TEMPLATE with the request's `record`, `prefix` and `sep` (each a string) in place."""
    if template is None:
        return dict(DEFAULT_TEMPLATE)
    if not isinstance(template, dict):
        raise bad_request("`template` must be an object {record, prefix, sep}", "template")
    out = dict(DEFAULT_TEMPLATE)
    for key in DEFAULT_TEMPLATE:
        value = template.get(key)
        if value is not None and not isinstance(value, str):
            raise bad_request(f"`template.{key}` must be a string", f"template.{key}")
        out[key] = value if value is not None else out[key]
    return out


def parse_messages(messages: object) -> list[tuple[str, str]]:
    """(role key, raw content) pairs from a list of `{role, content}` or a single one; null -> []."""
    if messages is None:
        return []
    items = [messages] if isinstance(messages, dict) else messages
    if not isinstance(items, list):
        raise bad_request("`messages` must be a list of {role, content}", "messages")
    parsed = []
    for i, message in enumerate(items):
        if not isinstance(message, dict):
            raise bad_request(f"`messages[{i}]` must be an object {{role, content}}", "messages")
        if not isinstance(message.get("content"), str):
            raise bad_request(f"`messages[{i}].content` must be a string", "messages")
        parsed.append((role_key(message.get("role"), "messages"), message["content"]))
    return parsed


def chat_prompt(messages: object, names: object = None, template: object = None) -> tuple[str, str]:
    """(prompt, model_text) per §2: records joined by `sep`, then `sep` and the prefix; model_text is the raw
    contents of the assistant messages joined by `sep`."""
    parsed, name, tpl = parse_messages(messages), display_names(names), chat_template(template)
    records = [tpl["record"].replace("{role}", name[role]).replace("{content}", clean_content(content))
               for role, content in parsed]
    prefix = tpl["prefix"].replace("{assistant}", name["assistant"]).replace("{user}", name["user"])
    model_text = tpl["sep"].join(content for role, content in parsed if role == "assistant")
    return tpl["sep"].join(records) + tpl["sep"] + prefix, model_text
