"""A request's grammar: Ai00's `bnf_schema`, or OpenAI's `response_format` (spec/bnf.md §3)."""
from __future__ import annotations

from ai00ref.server.errors import bad_request
from ai00ref.server.openapi import nullable, obj, typed

RESPONSE_TYPES = ("text", "json_object", "json_schema")
GRAMMAR_FIELDS = {  # the fields' schemas (the OpenAPI document)
    "bnf_schema": nullable(typed("string", "a KBNF grammar the output must follow (spec/bnf.md)", minLength=1)),
    "response_format": nullable(obj({"type": typed("string", enum=list(RESPONSE_TYPES)), "json_schema": obj(
        {"name": typed("string"), "schema": typed("object", "a JSON Schema (spec/bnf.md §4)")},
        required=("schema",))}, required=("type",), description="OpenAI's; not with bnf_schema"))}


def response_format_grammar(value) -> str | None:
    """KBNF for `response_format`: none for "text", any JSON object, or the JSON schema's language."""
    from ai00ref.server.grammar.schema import JSON_OBJECT_GRAMMAR, SchemaError, schema_to_kbnf

    if not isinstance(value, dict) or value.get("type") not in RESPONSE_TYPES:
        raise bad_request(f"response_format must be an object with type one of {', '.join(RESPONSE_TYPES)}",
                          "response_format")
    if value["type"] == "text":
        return None
    if value["type"] == "json_object":
        return JSON_OBJECT_GRAMMAR
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise bad_request("response_format.json_schema.schema must be a JSON Schema object", "response_format")
    try:
        return schema_to_kbnf(spec["schema"])
    except SchemaError as error:
        raise bad_request(f"response_format: {error}", "response_format", code="unsupported_schema") from None


def request_grammar(body: dict) -> tuple[str, str] | None:
    """(grammar text, the field it came from), or None: `bnf_schema` (KBNF or the old dialect) or
    `response_format`; not both."""
    bnf, response_format = body.get("bnf_schema"), body.get("response_format")
    if bnf is not None and response_format is not None:
        raise bad_request("send either bnf_schema or response_format, not both", "response_format")
    if bnf is not None:
        if not isinstance(bnf, str) or not bnf.strip():
            raise bad_request("bnf_schema must be a non-empty string (a KBNF grammar)", "bnf_schema")
        return bnf, "bnf_schema"
    if response_format is not None:
        text = response_format_grammar(response_format)
        return None if text is None else (text, "response_format")
    return None
