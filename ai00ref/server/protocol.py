"""Request fields and response shapes of the OpenAI routes, as Ai00 defines them (spec/api.md §Requests, §Responses).

Parsing turns a JSON body into plain values or raises `ApiError` 400 naming the field; building turns results into
the JSON Ai00 clients read (plus OpenAI's `id`, `created` and `*_tokens`, which Ai00 lacks).
"""
from __future__ import annotations

import json
import time

from ai00ref.server.errors import ApiError, bad_request
from ai00ref.server.openapi import array, nullable, obj, typed

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 1 << 20  # larger requests are refused (Ai00 has no limit)
DEFAULT_STOPS = ["\n\n"]  # only when `stop` is absent; null or [] means none
MAX_STOPS = 32

# ---- the fields' schemas (the OpenAPI document, ai00ref/server/openapi.py), from the limits the parsers check ----

STRINGS = {"anyOf": [typed("string"), array(typed("string"))]}
PROMPT = nullable({**STRINGS, "description": "a string, or a list of strings joined with \"\" (not a batch)"})
MAX_TOKENS = nullable(typed("integer", f"tokens to generate at most (default {DEFAULT_MAX_TOKENS})", minimum=1,
                            maximum=MAX_TOKENS_LIMIT))
STOP = nullable({"anyOf": [typed("string"), array(typed("string"), maxItems=MAX_STOPS)],
                 "description": "stop strings; absent: [\"\\n\\n\"], null or []: none"})
BOOLEAN = nullable(typed("boolean"))
GENERATION_FIELDS = {"max_tokens": MAX_TOKENS, "max_completion_tokens": MAX_TOKENS, "stop": STOP,
                     "stream": nullable(typed("boolean", "server-sent events (spec/api.md §4)"))}


def parse_json_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_max_tokens(body: dict) -> int:
    """`max_tokens`, or OpenAI's newer `max_completion_tokens`; 1 .. MAX_TOKENS_LIMIT, default 256."""
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(name)
    if value is None:
        return DEFAULT_MAX_TOKENS
    if not is_int(value) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise bad_request(f"{name} must be an integer from 1 to {MAX_TOKENS_LIMIT}, got {value!r}", name)
    return value


def parse_stops(body: dict) -> list[str]:
    if "stop" not in body:
        return list(DEFAULT_STOPS)
    value = body["stop"]
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise bad_request("stop must be a string, a list of strings or null", "stop")
    if len(value) > MAX_STOPS:
        raise bad_request(f"at most {MAX_STOPS} stop strings", "stop")
    return [s for s in value if s]


def parse_bool(body: dict, name: str) -> bool:
    """An optional boolean field (absent or null: false)."""
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false", name)
    return value


def parse_stream(body: dict) -> bool:
    return parse_bool(body, "stream")


def joined_text(body: dict, name: str) -> str:
    """`prompt` / `input`: a string, or a list of strings joined with "" (not a batch), or null."""
    value = body.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return "".join(value)
    raise bad_request(f"{name} must be a string or a list of strings", name)


# ---- responses ----

USAGE = obj({"prompt": typed("integer"), "completion": typed("integer"), "total": typed("integer"),
             "duration": obj({"secs": typed("integer"), "nanos": typed("integer")}),
             "prompt_tokens": typed("integer"), "completion_tokens": typed("integer"),
             "total_tokens": typed("integer")}, required=("prompt_tokens", "completion_tokens", "total_tokens"))
FINISH_REASON = nullable(typed("string", enum=["stop", "length", "tool_calls"]))
ENVELOPE = {"id": typed("string"), "object": typed("string"), "created": typed("integer"), "model": typed("string")}
COMPLETION_RESPONSE = obj({**ENVELOPE, "choices": array(obj({"text": typed("string"), "index": typed("integer"),
                                                              "finish_reason": FINISH_REASON},
                                                             required=("text", "index", "finish_reason"))),
                           "usage": USAGE}, required=("id", "object", "choices", "usage"))
TOOL_CALL = obj({"id": typed("string"), "type": typed("string", enum=["function"]),
                 "function": obj({"name": typed("string"), "arguments": typed("string")},
                                 required=("name", "arguments"))}, required=("id", "type", "function"))
CHAT_MESSAGE = obj({"role": typed("string"), "content": nullable(typed("string")), "tool_calls": array(TOOL_CALL)},
                   required=("role", "content"))
CHAT_RESPONSE = obj({**ENVELOPE, "choices": array(obj({"message": CHAT_MESSAGE, "index": typed("integer"),
                                                        "finish_reason": FINISH_REASON},
                                                       required=("message", "index", "finish_reason"))),
                     "usage": USAGE}, required=("id", "object", "choices", "usage"))

def usage(prompt_tokens: int, completion_tokens: int, seconds: float) -> dict:
    """Ai00's keys and OpenAI's together."""
    secs = int(seconds)
    return {"prompt": prompt_tokens, "completion": completion_tokens, "total": prompt_tokens + completion_tokens,
            "duration": {"secs": secs, "nanos": int(round((seconds - secs) * 1e9))},
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def envelope(kind: str, request_id: str, model: str) -> dict:
    return {"id": request_id, "object": kind, "created": int(time.time()), "model": model}


def completion_response(request_id, model, text, reason, use) -> dict:
    return {**envelope("text_completion", request_id, model),
            "choices": [{"text": text, "index": 0, "finish_reason": reason}], "usage": use}


def completion_chunk(request_id, model, text: str | None, reason: str | None) -> dict:
    choice = {"delta": {} if text is None else {"content": text}, "index": 0, "finish_reason": reason}
    if text is not None:
        choice["text"] = text  # OpenAI's field; Ai00 sends delta.content only
    return {**envelope("text_completion.chunk", request_id, model), "choices": [choice]}


def chat_response(request_id, model, text, reason, use) -> dict:
    return {**envelope("chat.completion", request_id, model),
            "choices": [{"message": {"role": "Assistant", "content": text.strip()}, "index": 0,
                         "finish_reason": reason}], "usage": use}


def tool_call_response(request_id, model, call: dict, reason, use) -> dict:
    """A chat answer that is a tool call: content null, OpenAI's `tool_calls`."""
    return {**envelope("chat.completion", request_id, model),
            "choices": [{"message": {"role": "Assistant", "content": None, "tool_calls": [call]}, "index": 0,
                         "finish_reason": reason}], "usage": use}


def chat_chunk(request_id, model, delta: dict, reason: str | None) -> dict:
    return {**envelope("chat.completion.chunk", request_id, model),
            "choices": [{"delta": delta, "index": 0, "finish_reason": reason}]}


def sse(payload) -> bytes:
    """One server-sent event: `data: <json>` and a blank line (`data:[DONE]` ends a stream)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
