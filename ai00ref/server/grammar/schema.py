r"""JSON Schema -> KBNF, for OpenAI's `response_format` and tools' parameters (spec/bnf.md §3).

The text the grammar allows is JSON in one fixed layout: `", "` between items and members, `": "` after a key, no
other whitespace (Python's `json.dumps` default). Every text it allows is valid JSON that validates against the
schema; not every valid document is allowed (other layouts, other property orders).

Supported: `type` (a name or a list) object, array, string, number, integer, boolean, null; `properties` in their
order, `required` (the others may be left out), `additionalProperties` absent/false/true (no other properties are
written either way); `items`, `minItems`, `maxItems` (at most MAX_REPEAT); `minLength`, `maxLength` (at most
MAX_REPEAT); `pattern` when anchored `^...$` and made of literals, positive classes, `\d`, `\w`, groups,
alternation and quantifiers (nothing that could match a quote, a backslash or a control character); `enum`,
`const`; `anyOf`, `oneOf` (as alternatives: oneOf's exclusivity is not enforced); `$ref` to `#/$defs/...` or
`#/definitions/...` (recursion allowed); `{}` or `true` (any JSON value). A `type` list checks each type against its
own keywords (OpenAI's nullable `{"type": ["string", "null"], "maxLength": 3}`); without `type`, `properties`,
`items` or a string keyword imply object, array or string. Annotations (`title`, `description`,
`default`, `examples`, `$schema`, `$id`, `$comment`, ...) are ignored. Every other keyword (`format`, `allOf`, `not`,
`if`, `minimum`, `patternProperties`, `uniqueItems`, ...) is refused with SchemaError naming it and its path.
"""
from __future__ import annotations

import json
import re

MAX_REPEAT = 256
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "$defs", "definitions",
               "deprecated", "readOnly", "writeOnly"}
KEYWORDS = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "array": {"type", "items", "minItems", "maxItems"},
    "string": {"type", "minLength", "maxLength", "pattern"},
    "number": {"type"}, "integer": {"type"}, "boolean": {"type"}, "null": {"type"},
}
# one JSON string character: a raw one, or an escape (a \\u escape outside the surrogates, so that each counts as one
# character for minLength/maxLength, as JSON Schema counts them)
JSON_CHAR = r'([^"\\\x00-\x1f]|\\(["\\/bfnrt]|u([0-9a-cA-C][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}|[eEfF][0-9a-fA-F]{3})))'
NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
INTEGER = r"-?(0|[1-9][0-9]*)"
PATTERN_ESCAPE = re.compile(r"\\(.)")


def safe_pattern(pattern) -> bool:
    """An anchored `^...$` regex that cannot match a quote, a backslash or a control character: no `.`, no negated
    class, no class range over those characters, no escapes but \\d, \\w and escaped punctuation."""
    if not isinstance(pattern, str) or len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$":
        return False
    body = pattern[1:-1]
    try:
        re.compile(body)
    except re.error:
        return False
    chars = []  # (char, escaped, in a class)
    i, in_class = 0, False
    while i < len(body):
        if body[i] == "\\":
            if i + 1 >= len(body):
                return False
            chars.append((body[i + 1], True, in_class))
            i += 2
            continue
        if body[i] == "[" and not in_class:
            if body[i + 1:i + 2] == "^":
                return False
            in_class = True
        elif body[i] == "]" and in_class:
            in_class = False
        else:
            chars.append((body[i], False, in_class))
        i += 1
    for k, (char, escaped, inside) in enumerate(chars):
        if not char.isprintable() or char == '"' or (char in ".^$" and not escaped):
            return False
        if escaped and not (char in "dw" or (not char.isalnum() and char != "\\")):
            return False
        if inside and char == "-" and not escaped and 0 < k < len(chars) - 1 and chars[k - 1][2] and chars[k + 1][2]:
            low, high = chars[k - 1][0], chars[k + 1][0]
            if any(low <= bad <= high for bad in ('"', "\\")):
                return False
    return True


class SchemaError(ValueError):
    """A schema this converter cannot express: the message names the keyword and where it is."""


def kbnf_literal(text: str) -> str:
    """A KBNF double-quoted terminal: JSON string escapes are KBNF's too."""
    return json.dumps(text, ensure_ascii=False)


def kbnf_regex(pattern: str) -> str:
    """A KBNF `#"..."` regex: the pattern written as a KBNF string (backslashes and quotes escaped)."""
    return "#" + json.dumps(pattern, ensure_ascii=False)


def json_text(value) -> str:
    """`value` in the grammar's layout (NaN and infinities are not JSON)."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise SchemaError(f"{value!r} is not a JSON value (NaN or an infinity)") from None


def implied_type(schema: dict) -> str | None:
    """The type a schema without `type` constrains by its keywords (`properties` -> object, ...), else None."""
    for kind in ("object", "array", "string"):
        if any(key in schema for key in KEYWORDS[kind] - {"type"}):
            return kind
    return None


class Converter:
    def __init__(self, root: dict, max_rules: int):
        self.root, self.max_rules = root, max_rules
        self.rules: dict[str, str] = {}
        self.refs: dict[str, str] = {}  # "$ref" -> its rule name
        self.generic = False

    # ---- rules ----

    def new_rule(self, path: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", path.strip("#/")) or "root"
        name, n = "s_" + base, 1
        while name in self.rules:
            n += 1
            name = f"s_{base}_{n}"
        if len(self.rules) >= self.max_rules:
            raise SchemaError(f"the schema needs more than {self.max_rules} grammar rules")
        self.rules[name] = ""  # reserved: recursion may refer to it before its body is written
        return name

    def define(self, path: str, body: str) -> str:
        name = self.new_rule(path)
        self.rules[name] = body
        return name

    def any_value(self) -> str:
        self.generic = True
        return "json_value"

    # ---- schemas ----

    def value(self, schema, path: str) -> str:
        """A KBNF expression for the schema's JSON texts (often one nonterminal)."""
        if schema is True or schema == {}:
            return self.any_value()
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or true, got {json_text(schema)} at {path}")
        if "$ref" in schema:
            self.only(schema, {"$ref"}, path)
            return self.ref(schema["$ref"], path)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                self.only(schema, {combinator}, path)
                options = schema[combinator]
                if not isinstance(options, list) or not options:
                    raise SchemaError(f"'{combinator}' must be a non-empty list at {path}")
                return "(" + " | ".join(self.value(option, f"{path}/{combinator}/{k}")
                                        for k, option in enumerate(options)) + ")"
        if "const" in schema:
            self.only(schema, {"const", "type"}, path)
            return kbnf_literal(json_text(schema["const"]))
        if "enum" in schema:
            self.only(schema, {"enum", "type"}, path)
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise SchemaError(f"'enum' must be a non-empty list at {path}")
            return "(" + " | ".join(kbnf_literal(json_text(v)) for v in schema["enum"]) + ")"
        kinds = schema.get("type", implied_type(schema))
        if kinds is None:
            self.only(schema, set(), path)
            return self.any_value()
        if isinstance(kinds, list):
            if not kinds or not all(kind in KEYWORDS for kind in kinds):
                raise SchemaError(f"'type' must be a non-empty list of JSON types at {path}")
            self.only(schema, set().union(*(KEYWORDS[kind] for kind in kinds)), path)
            return "(" + " | ".join(self.typed({k: v for k, v in schema.items() if k in KEYWORDS[kind]} | {"type": kind},
                                               path) for kind in kinds) + ")"
        return self.typed({**schema, "type": kinds}, path)

    def only(self, schema: dict, allowed: set, path: str) -> None:
        for key in schema:
            if key not in allowed and key not in ANNOTATIONS:
                raise SchemaError(f"unsupported JSON Schema keyword '{key}' at {path}")

    def typed(self, schema: dict, path: str) -> str:
        kind = schema["type"]
        if kind not in KEYWORDS:
            raise SchemaError(f"unknown type {json_text(kind)} at {path}")
        self.only(schema, KEYWORDS[kind], path)
        if kind == "object":
            return self.object(schema, path)
        if kind == "array":
            return self.array(schema, path)
        if kind == "string":
            return self.string(schema, path)
        return {"number": kbnf_regex(NUMBER), "integer": kbnf_regex(INTEGER), "boolean": '("true" | "false")',
                "null": '"null"'}[kind]

    def ref(self, ref, path: str) -> str:
        match = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", ref) if isinstance(ref, str) else None
        if match is None:
            raise SchemaError(f"unsupported $ref {json_text(ref)} at {path} (only #/$defs/... and #/definitions/...)")
        if ref not in self.refs:
            target = self.root.get(match.group(1), {}).get(match.group(2))
            if target is None:
                raise SchemaError(f"$ref {ref} at {path} names no definition")
            name = self.new_rule(ref)
            self.refs[ref] = name
            self.rules[name] = self.value(target, ref)
        return self.refs[ref]

    def object(self, schema: dict, path: str) -> str:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, dict) or not isinstance(required, list):
            raise SchemaError(f"'properties' must be an object and 'required' a list at {path}")
        if schema.get("additionalProperties", False) not in (False, True):
            raise SchemaError(f"unsupported JSON Schema keyword 'additionalProperties' (a schema) at {path}")
        missing = [key for key in required if key not in properties]
        if missing:
            raise SchemaError(f"required property {missing[0]!r} has no schema in 'properties' at {path}")
        names = list(properties)
        members = [kbnf_literal(json_text(key) + ": ") + " " + self.value(properties[key], f"{path}/properties/{key}")
                   for key in names]
        needed = [key in required for key in names]
        # non_empty[i][s]: the members from i on, at least one, ", " first when s (one was written before)
        n, non_empty = len(names), {}
        for i in reversed(range(n)):
            for started in (False, True):
                head = ('", " ' if started else "") + members[i]
                rest = self.rest(non_empty, needed, i + 1)
                options = [f"{head} {rest}".strip()]
                if not needed[i] and i + 1 < n:
                    options.append(non_empty[(i + 1, started)])
                non_empty[(i, started)] = self.define(f"{path}/m{i}{'_more' if started else ''}",
                                                      " | ".join(options))
        inside = self.rest(non_empty, needed, 0, started=False)
        return self.define(path + "/object", f'"{{" {inside} "}}"'.replace("  ", " "))

    @staticmethod
    def rest(non_empty: dict, needed: list, i: int, started: bool = True) -> str:
        """The members from i on as an expression: required if any of them is, else optional."""
        if i >= len(needed):
            return ""
        return non_empty[(i, started)] + ("" if any(needed[i:]) else "?")

    def array(self, schema: dict, path: str) -> str:
        item = self.value(schema.get("items", True), f"{path}/items")
        low, high = bounds(schema, "minItems", "maxItems", path)
        if high == 0:
            return '"[]"'
        first = max(low, 1)
        parts = [item] + [f'", " {item}'] * (first - 1)
        if high is None:
            parts.append(f'(", " {item})*')
        else:
            optional = ""
            for _ in range(high - first):  # nested: each further item only after the one before
                optional = f'(", " {item}{" " + optional if optional else ""})?'
            if optional:
                parts.append(optional)
        inside = " ".join(parts) if low >= 1 else "(" + " ".join(parts) + ")?"
        return self.define(path + "/array", f'"[" {inside} "]"')

    def string(self, schema: dict, path: str) -> str:
        if "pattern" in schema:
            if "minLength" in schema or "maxLength" in schema:
                raise SchemaError(f"'pattern' together with a length is not supported at {path}")
            pattern = schema["pattern"]
            if not safe_pattern(pattern):
                raise SchemaError(f"unsupported JSON Schema keyword 'pattern' {json_text(pattern)} at {path}: only "
                                  "^...$ patterns of literals, positive classes, \\d, \\w, groups and quantifiers")
            return kbnf_regex('"(' + pattern[1:-1] + ')"')
        low, high = bounds(schema, "minLength", "maxLength", path)
        count = f"{{{low},{'' if high is None else high}}}"
        return kbnf_regex(f'"{JSON_CHAR}{count}"')

    def grammar(self) -> str:
        start = self.value(self.root, "#")
        lines = [f"start ::= {start};"] + [f"{name} ::= {body};" for name, body in self.rules.items()]
        if self.generic:
            lines += [f"{name} ::= {body};" for name, body in generic_rules().items()]
        return "\n".join(lines) + "\n"


def bounds(schema: dict, low_key: str, high_key: str, path: str) -> tuple[int, int | None]:
    low, high = schema.get(low_key, 0), schema.get(high_key)
    for key, value in ((low_key, low), (high_key, high)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise SchemaError(f"'{key}' must be a non-negative integer at {path}")
        if value is not None and value > MAX_REPEAT:
            raise SchemaError(f"'{key}' above {MAX_REPEAT} is not supported at {path}")
    if high is not None and high < low:
        raise SchemaError(f"'{high_key}' is below '{low_key}' at {path}")
    return low, high


def generic_rules() -> dict[str, str]:
    """Any JSON value, in the grammar's layout."""
    return {
        "json_value": 'json_object | json_array | json_string | json_number | "true" | "false" | "null"',
        "json_object": '"{" (json_member (", " json_member)*)? "}"',
        "json_member": 'json_string ": " json_value',
        "json_array": '"[" (json_value (", " json_value)*)? "]"',
        "json_string": kbnf_regex(f'"{JSON_CHAR}*"'),
        "json_number": kbnf_regex(NUMBER),
    }


def schema_to_kbnf(schema, max_rules: int = 512) -> str:
    """The KBNF grammar (start rule `start`) of the schema's JSON texts, or SchemaError."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaError("a JSON Schema must be an object")
    return Converter(schema if isinstance(schema, dict) else {}, max_rules).grammar()


JSON_OBJECT_GRAMMAR = "start ::= json_object;\n" + "\n".join(f"{n} ::= {b};" for n, b in generic_rules().items()) + "\n"
