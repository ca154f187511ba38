"""Bedrock's action-group values read as the types of a request model's JSON schema.

Bedrock sends every parameter and body property as a string: "100" for an integer, and nested
arrays and objects as JSON text or, often, as Java's rendering of maps and lists
(`[{name=a, type=string, constraints={min=1}}]`, see powertools-lambda-typescript#3710), whose
leaves carry no type at all. Pure functions, no AWS imports.
"""

from __future__ import annotations

import json
from typing import Any


class UnreadableValueError(ValueError):
    """A property value that is neither JSON nor Bedrock's Java-style text of the schema's type."""


def coerce_properties(values: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Bedrock's string values as the types `schema` (a model's JSON schema) gives them; names
    the schema lacks pass through for the model to refuse."""
    defs = schema.get("$defs", {})
    properties = schema.get("properties", {})
    return {
        name: _coerce(value, properties.get(name, {}), defs, name, not isinstance(value, str))
        for name, value in values.items()
    }


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = {
            **defs[schema["$ref"].rsplit("/", 1)[-1]],
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    if len(schema.get("allOf", [])) == 1:
        schema = {
            **_resolve(schema["allOf"][0], defs),
            **{k: v for k, v in schema.items() if k != "allOf"},
        }
    return schema


def _coerce(
    value: Any, schema: dict[str, Any], defs: dict[str, Any], where: str, typed: bool
) -> Any:
    """`value` as `schema` types it. `typed`: it came out of JSON, so its strings are strings;
    otherwise it is Bedrock's text (or a leaf of Java-style text) and carries no type."""
    schema = _resolve(schema, defs)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        if typed or value is None:
            return value
        # Untyped text: the first option that reads it, the most specific first (a container
        # parsed from Java-style text: the option of its kind).
        ranked = sorted(options, key=lambda o: _RANK.get(_resolve(o, defs).get("type", ""), 5))
        if not isinstance(value, str):
            shape = "array" if isinstance(value, list) else "object"
            ranked = [o for o in ranked if _resolve(o, defs).get("type") == shape] or [{}]
        errors: list[str] = []
        for option in ranked:
            try:
                return _coerce(value, option, defs, where, typed)
            except UnreadableValueError as error:
                if _resolve(option, defs).get("type") != "null":
                    errors.append(str(error))
        if len(errors) == 1:
            raise UnreadableValueError(errors[0])
        raise UnreadableValueError(f"{where}: cannot read {value!r}")
    kind = schema.get("type")
    if isinstance(value, str) and not typed:
        if kind is None:  # a value the model leaves open (Any): read it as JSON would
            return _guess(value)
        value, typed = _scalar(value, kind, where)
    if kind is None and not typed and isinstance(value, list | dict):
        kind = "array" if isinstance(value, list) else "object"  # open containers: leaves too
    if kind == "array" and isinstance(value, list):
        items = schema.get("items", {})
        return [_coerce(v, items, defs, f"{where}[{i}]", typed) for i, v in enumerate(value)]
    if kind == "object" and isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return {
            k: _coerce(v, properties.get(k, extra), defs, f"{where}.{k}", typed)
            for k, v in value.items()
        }
    return value


_RANK = {"null": 0, "boolean": 1, "integer": 2, "number": 3, "array": 4, "object": 4, "string": 6}
_BOOLEANS = {"true": True, "false": False}


def _scalar(text: str, kind: str | None, where: str) -> tuple[Any, bool]:
    """Untyped text read as `kind`, and whether the result carries its own types (JSON)."""
    stripped = text.strip()
    try:
        if kind == "integer":
            if stripped.lstrip("+-").isdigit():
                return int(stripped), True
            number = float(stripped)  # "5.0" and "1e3" are integers too
            if not number.is_integer():
                raise ValueError
            return int(number), True
        if kind == "number":
            return float(stripped), True
        if kind == "boolean":
            return _BOOLEANS[stripped.lower()], True
        if kind == "null":
            if stripped.lower() not in ("null", "none", ""):
                raise ValueError
            return None, True
    except (ValueError, KeyError):
        raise UnreadableValueError(f"{where}: expected {kind}, got {text!r}") from None
    if kind in ("array", "object"):
        try:
            return json.loads(stripped), True
        except json.JSONDecodeError as not_json:
            try:
                return parse_java_style(stripped, where), False
            except UnreadableValueError as not_java:
                reason = str(not_java).removeprefix(f"{where}: ")
                raise UnreadableValueError(
                    f"{where}: neither JSON ({not_json}) nor Java-style text ({reason})"
                ) from None
    return text, True


def _guess(text: str) -> Any:
    """Untyped text with no type to read it as: a JSON number, boolean or null, else the text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if value is None or isinstance(value, bool | int | float) else text


def parse_java_style(text: str, where: str = "value") -> Any:
    """Java's rendering of a map or list (`{k=v, l=[a, b]}`), which Bedrock often sends for
    nested values: lists, maps and untyped text leaves."""
    value, end = _java_value(text, 0, where)
    if text[end:].strip():
        raise UnreadableValueError(
            f"{where}: unexpected {text[end:]!r} after the value in {text!r}"
        )
    if not isinstance(value, list | dict):
        raise UnreadableValueError(
            f"{where}: {text!r} is neither JSON nor a [..] list or {{..}} map"
        )
    return value


def _java_value(text: str, i: int, where: str) -> tuple[Any, int]:
    i = _skip(text, i)
    if i < len(text) and text[i] in "[{":
        return _java_container(text, i, where)
    end = i
    while end < len(text) and text[end] not in ",]}":
        end += 1
    leaf = text[i:end].strip()
    if len(leaf) >= 2 and leaf[0] == leaf[-1] and leaf[0] in "\"'":
        leaf = leaf[1:-1]
    return leaf, end


def _java_container(text: str, i: int, where: str) -> tuple[Any, int]:
    keyed, closing = text[i] == "{", "}" if text[i] == "{" else "]"
    entries: list[tuple[str, Any]] = []
    i = _skip(text, i + 1)
    while i >= len(text) or text[i] != closing:
        key = ""
        if keyed:
            eq = text.find("=", i)
            key = text[i:eq].strip() if eq >= 0 else ""
            if not key or any(c in key for c in ",[]{}"):
                raise UnreadableValueError(f"{where}: a map entry without 'key=' in {text!r}")
            i = eq + 1
        item, i = _java_value(text, i, where)
        entries.append((key, item))
        i = _skip(text, i)
        if i >= len(text):
            raise UnreadableValueError(f"{where}: {text!r} ends before its '{closing}'")
        if text[i] == ",":
            i = _skip(text, i + 1)
        elif text[i] != closing:
            raise UnreadableValueError(f"{where}: expected ',' or '{closing}' in {text!r}")
    value = dict(entries) if keyed else [item for _, item in entries]
    return value, i + 1


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i
