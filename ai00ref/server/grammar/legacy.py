r"""The old angle-bracket BNF dialect -> KBNF (spec/bnf.md §2).

Ai00 before v0.5.3 used `bnf_sampler`, whose dialect the project's seed documents still show:

    <start> ::= <json_object>
    <content>::=<except!([escaped_literals])>|<except!([escaped_literals])><content>|'\\"'<content>|'\\"'
    <escaped_literals>::='\t'|'\n'|'\r'|'"'

One rule per line, `<name> ::= alternatives` without a terminating `;`; a sequence holds `<nonterminal>`s and
'single' or "double" quoted terminals (escapes \t \n \r \" \' \\ \uXXXX \xHH); there is no grouping or repetition.
Two special nonterminals:
- `<any!>`: any one token; here any non-empty text, `#"(.|\n)+"`;
- `<except!('lit')>` / `<except!([name])>`: a non-empty text containing none of the excepted literals (one literal,
  or every string the nonterminal `name` derives, which must be a finite set). KBNF dropped `except!`; its regex
  complement `#ex"l1|l2|..."` (a non-empty text containing no match of the regex, the literals regex-escaped) says
  the same, so each distinct `except!` becomes a helper rule `except_k ::= #ex"...";`.
Nonterminal names become KBNF identifiers (other characters -> `_`, made unique).
"""
from __future__ import annotations

import re

RULE = re.compile(r"^\s*<([^<>]+)>\s*::=(.*)$")
SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", '"': '"', "'": "'", "\\": "\\", "0": "\0", "/": "/"}


class LegacyBnfError(ValueError):
    """The grammar is not valid in the old dialect: the message names the line."""


def is_legacy(text: str) -> bool:
    """The old dialect starts (after blank lines) with `<name> ::=`; a KBNF rule name cannot start with `<`."""
    return RULE.match(text.lstrip().split("\n", 1)[0]) is not None


def _unescape(body: str, line: int) -> str:
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(body):
            raise LegacyBnfError(f"line {line}: a terminal ends with a lone backslash")
        code = body[i + 1]
        if code in SIMPLE_ESCAPES:
            out.append(SIMPLE_ESCAPES[code])
            i += 2
        elif code in "ux":
            width = 4 if code == "u" else 2
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise LegacyBnfError(f"line {line}: bad escape \\{code}{digits}")
            if code == "x" and int(digits, 16) >= 0x80:  # bnf_sampler: a raw byte, which KBNF text cannot hold
                raise LegacyBnfError(f"line {line}: \\x{digits} is a raw non-ASCII byte; write the character")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise LegacyBnfError(f"line {line}: unknown escape \\{code}")
    return "".join(out)


def _tokens(expression: str, line: int) -> list[tuple[str, str]]:
    """(kind, value) items of one rule's right side: "nt", "t" (unescaped text), "any", "except", "|"."""
    items, i = [], 0
    while i < len(expression):
        char = expression[i]
        if char.isspace():
            i += 1
        elif char == "|":
            items.append(("|", ""))
            i += 1
        elif char in "'\"":
            end = i + 1
            while end < len(expression) and expression[end] != char:
                end += 2 if expression[end] == "\\" else 1
            if end >= len(expression):
                raise LegacyBnfError(f"line {line}: unterminated terminal {expression[i:]!r}")
            items.append(("t", _unescape(expression[i + 1:end], line)))
            i = end + 1
        elif expression.startswith("<any!>", i):
            items.append(("any", ""))
            i += len("<any!>")
        elif expression.startswith("<except!(", i):
            end = expression.find(")>", i)
            if end < 0:
                raise LegacyBnfError(f"line {line}: unterminated <except!(...)>")
            items.append(("except", expression[i + len("<except!("):end].strip()))
            i = end + 2
        elif char == "<":
            end = expression.find(">", i)
            if end < 0:
                raise LegacyBnfError(f"line {line}: unterminated nonterminal {expression[i:]!r}")
            items.append(("nt", expression[i + 1:end].strip()))
            i = end + 1
        else:
            raise LegacyBnfError(f"line {line}: unexpected {expression[i:i + 20]!r}")
    return items


def parse_rules(text: str) -> dict[str, list[list[tuple[str, str]]]]:
    """name -> alternatives (each a list of items), in the order first defined."""
    rules: dict[str, list] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        match = RULE.match(raw)
        if match is None:
            raise LegacyBnfError(f"line {number}: expected `<name> ::= ...`, got {raw.strip()[:40]!r}")
        name, expression = match.group(1).strip(), match.group(2)
        alternatives, current = rules.setdefault(name, []), []
        for item in _tokens(expression, number):
            if item[0] == "|":
                alternatives.append(current)
                current = []
            else:
                current.append(item)
        alternatives.append(current)
        if any(not alternative for alternative in alternatives):
            raise LegacyBnfError(f"line {number}: an empty alternative in <{name}>")
    if "start" not in rules:
        raise LegacyBnfError("there is no <start> rule")
    return rules


def finite_strings(rules, name: str, seen: tuple = (), limit: int = 256) -> list[str]:
    """Every string `name` derives (for `except!([name])`), or LegacyBnfError if that set is infinite or huge."""
    if name not in rules:
        raise LegacyBnfError(f"<except!([{name}])> names an undefined nonterminal")
    if name in seen:
        raise LegacyBnfError(f"<except!([{name}])>: <{name}> is recursive, so its strings are not a finite set")
    strings: list[str] = []
    for alternative in rules[name]:
        partial = [""]
        for kind, value in alternative:
            if kind == "t":
                options = [value]
            elif kind == "nt":
                options = finite_strings(rules, value, seen + (name,), limit)
            else:
                raise LegacyBnfError(f"<except!([{name}])>: <{name}> uses a special nonterminal")
            partial = [p + o for p in partial for o in options]
            if len(partial) > limit:
                raise LegacyBnfError(f"<except!([{name}])>: more than {limit} excepted strings")
        strings += partial
    return sorted(set(strings))


def kbnf_string(text: str) -> str:
    """A KBNF double-quoted terminal (JavaScript escapes) for `text`."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif char == "\r":
            escaped.append("\\r")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def kbnf_regex(pattern: str) -> str:
    """A KBNF `#ex"..."` body: the regex is written as a KBNF string (quotes and backslashes escaped)."""
    return kbnf_string(pattern)[1:-1]


def identifiers(names) -> dict[str, str]:
    """Old names -> unique KBNF identifiers ([A-Za-z_][A-Za-z0-9_]*); `start` stays `start`."""
    taken, result = set(), {}
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "rule"
        if base[0].isdigit():
            base = "r_" + base
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        result[name] = candidate
    return result


def translate(text: str) -> str:
    """The old dialect's grammar as KBNF text with the same language (start rule `start`)."""
    rules = parse_rules(text)
    names = identifiers(rules)
    extra: dict[str, str] = {}  # excepted-literal regex -> helper rule name

    def except_rule(argument: str) -> str:
        if argument.startswith("[") and argument.endswith("]"):
            literals = finite_strings(rules, argument[1:-1].strip())
        elif len(argument) >= 2 and argument[0] == argument[-1] and argument[0] in "'\"":
            literals = [_unescape(argument[1:-1], 0)]
        else:
            raise LegacyBnfError(f"<except!({argument})> must name a literal or [nonterminal]")
        if not literals or "" in literals:
            raise LegacyBnfError(f"<except!({argument})> excepts the empty string")
        pattern = "|".join(re.escape(literal) for literal in literals)
        if pattern not in extra:
            extra[pattern] = f"except_{len(extra) + 1}"
            while extra[pattern] in names.values():
                extra[pattern] += "_"
        return extra[pattern]

    def item(kind: str, value: str) -> str:
        if kind == "t":
            return kbnf_string(value)
        if kind == "nt":
            if value not in rules:
                raise LegacyBnfError(f"<{value}> is used but never defined")
            return names[value]
        if kind == "any":
            return '#"(.|\\n)+"'
        return except_rule(value)

    lines = []
    for name, alternatives in rules.items():
        body = " | ".join(" ".join(item(kind, value) for kind, value in alternative) for alternative in alternatives)
        lines.append(f"{names[name]} ::= {body};")
    for pattern, rule in extra.items():
        lines.append(f'{rule} ::= #ex"{kbnf_regex(pattern)}";')
    return "\n".join(lines) + "\n"
