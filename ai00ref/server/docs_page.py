"""The `/api-docs` page: the OpenAPI document (ai00ref/server/openapi.py) as one HTML page, rendered on the server.

Plain HTML and CSS, no script, nothing fetched. Operations that are the same under several paths (the OpenAI routes
under their three prefixes, the admin routes and their legacy `/api/...` aliases) are shown once with every path.
Each body is a table of its top-level fields (type, limits, description); the full schema is under "schema".
"""
from __future__ import annotations

import html
import json

STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1040px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}code,pre{font:13px ui-monospace,monospace}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}details{margin:.3em 0}
.op{margin:1.2em 0;padding:.3em .9em;border-left:4px solid #8ab}.m{display:inline-block;min-width:3.5em;
font-weight:bold}table{border-collapse:collapse;margin:.4em 0;width:100%}td,th{border-bottom:1px solid #e4e4e4;
padding:.2em .5em;text-align:left;vertical-align:top}th{font-weight:600}nav a{margin-right:1em}"""


def escape(text) -> str:
    return html.escape(str(text))


def type_of(schema: dict) -> str:
    """A short reading of a schema: `integer 1 … 1048576 | null`, `array of string`, `"none" | "auto"`."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        named = sum(option.get("type") == "object" for option in schema["anyOf"]) > 1  # which object is which
        return " | ".join(option_of(option) if named else type_of(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    limits = [f"{word} {schema[key]}" for key, word in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                                        ("maximum", "≤"), ("minLength", "length ≥"),
                                                        ("maxItems", "items ≤"), ("format", "format"),
                                                        ("pattern", "pattern")) if key in schema]
    return kind + (f" ({', '.join(limits)})" if limits else "")


def option_of(schema: dict) -> str:
    """One of several object alternatives, named by its description."""
    if schema.get("type") == "object" and schema.get("description"):
        return f"object ({schema['description']})"
    return type_of(schema)


def description_of(schema: dict) -> str:
    if schema.get("description"):
        return schema["description"]
    return next((option["description"] for option in schema.get("anyOf", []) if option.get("description")), "")


def fields_table(schema: dict) -> str:
    properties = schema.get("properties")
    if not properties:
        return f"<p>{escape(type_of(schema))} {escape(description_of(schema))}</p>"
    required = set(schema.get("required", []))
    rows = "".join(f"<tr><td><code>{escape(name)}</code>{' (required)' if name in required else ''}</td>"
                   f"<td>{escape(type_of(field))}</td><td>{escape(description_of(field))}</td></tr>"
                   for name, field in properties.items())
    return f"<table><tr><th>field</th><th>type</th><th>meaning</th></tr>{rows}</table>"


def schema_block(title: str, schema: dict) -> str:
    return (f"<p><b>{escape(title)}</b></p>{fields_table(schema)}<details><summary>schema</summary>"
            f"<pre>{escape(json.dumps(schema, indent=2))}</pre></details>")


def render_operation(method: str, paths: list[str], op: dict) -> str:
    heads = "<br>".join(f"<span class='m'>{method.upper()}</span> <code>{escape(path)}</code>" for path in paths)
    out = [f"<div class='op'><p>{heads}</p><p>{escape(op['summary'])}"
           f"{' <i>(admin token)</i>' if op.get('security') else ''}</p>"]
    if op.get("description"):
        out.append(f"<p>{escape(op['description'])}</p>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        out.append(schema_block("Request body (JSON)", body))
    for media, content in op["responses"].get("200", {}).get("content", {}).items():
        if "schema" in content:
            out.append(schema_block(f"200 {media}", content["schema"]))
    errors = [status for status in op["responses"] if status != "200"]
    if errors:
        out.append(f"<p>Other statuses: {', '.join(errors)}, with the Error body below.</p>")
    out.append("</div>")
    return "".join(out)


def grouped(document: dict) -> dict[str, list]:
    """tag -> [(method, [paths], operation)], operations that differ only in their path together."""
    groups: dict[str, tuple] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            key = method + json.dumps({k: v for k, v in op.items() if k != "operationId"}, sort_keys=True)
            groups.setdefault(key, (method, [], op))[1].append(path)
    by_tag: dict[str, list] = {}
    for method, paths, op in groups.values():
        by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method, sorted(paths), op))
    return by_tag


def render_page(document: dict) -> str:
    info, by_tag = document["info"], grouped(document)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(info['title'])}</title>"
             f"<style>{STYLE}</style></head><body><h1>{escape(info['title'])}</h1><p>{escape(info['description'])}</p>"
             f"<p>Machine-readable: <a href='/api-docs/openapi.json'>/api-docs/openapi.json</a> (OpenAPI "
             f"{escape(document['openapi'])}).</p><nav>"]
    parts += [f"<a href='#{escape(tag)}'>{escape(tag)}</a>" for tag in by_tag]
    parts.append("<a href='#errors'>errors</a></nav>")
    for tag, operations in by_tag.items():
        parts.append(f"<h2 id='{escape(tag)}'>{escape(tag)}</h2>")
        parts += [render_operation(method, paths, op) for method, paths, op in sorted(operations, key=lambda o: o[1])]
    error = document["components"]["schemas"]["Error"]
    parts.append(f"<h2 id='errors'>errors</h2><p>{escape(error.get('description', ''))}</p>"
                 f"<pre>{escape(json.dumps(error, indent=2))}</pre></body></html>")
    return "".join(parts)
