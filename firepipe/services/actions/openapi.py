"""The action API's OpenAPI document as OpenAPI 3.0.0, the subset a Bedrock action group takes.

FastAPI writes JSON Schema 2020-12 (OpenAPI 3.1) whatever version it is told, so its output is
rewritten: `anyOf` with `{"type": "null"}` -> `nullable: true`, numeric `exclusiveMinimum`/
`exclusiveMaximum` -> a bound plus a boolean, `examples` -> `example`, and `enum`/`const`
(refused by Bedrock) -> words in the description. `bedrock_problems` lists what Bedrock would
still refuse; the tests hold it empty.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

OPENAPI_VERSION = "3.0.0"  # Bedrock: "The OpenAPI version must be 3.0.0"
MAX_OPERATIONS = 11  # Bedrock's limit of API operations per action group
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_FORBIDDEN = ("enum", "const", "$defs", "examples", "prefixItems", "unevaluatedProperties")
_OPERATION_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def document(app: FastAPI) -> dict[str, Any]:
    """The app's routes as an OpenAPI 3.0.0 document."""
    raw = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        openapi_version=OPENAPI_VERSION,
    )
    converted: dict[str, Any] = _convert(raw)
    return converted


def document_text(app: FastAPI) -> str:
    """The document as committed: sorted keys, indented, ending in a newline."""
    return json.dumps(document(app), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _convert(value) for key, value in node.items()}
    for key in ("anyOf", "oneOf"):
        if key in out and {"type": "null"} in out[key]:
            rest = [s for s in out.pop(key) if s != {"type": "null"}]
            out["nullable"] = True
            if len(rest) == 1:
                out.update(_ref_free(rest[0]))
            elif rest:
                out[key] = rest
    if "$ref" in out and len(out) > 1:  # 3.0 ignores a $ref's siblings (description, nullable)
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound], out[key] = value, True
    if isinstance(out.get("examples"), list):
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    if "const" in out:
        _say(out, f"Must be {json.dumps(out.pop('const'))}.")
    if "enum" in out:
        _say(out, "One of: " + ", ".join(json.dumps(v) for v in out.pop("enum")) + ".")
    return out


def _ref_free(schema: dict[str, Any]) -> dict[str, Any]:
    """A $ref beside other keys must sit in allOf to keep them."""
    return {"allOf": [schema]} if "$ref" in schema else schema


def _say(schema: dict[str, Any], words: str) -> None:
    text = schema.get("description", "")
    schema["description"] = f"{text} {words}".strip()


def bedrock_problems(doc: dict[str, Any]) -> list[str]:
    """What a Bedrock action group would refuse in `doc` (empty: nothing)."""
    problems = []
    if doc.get("openapi") != OPENAPI_VERSION:
        problems.append(f"openapi is {doc.get('openapi')!r}, not {OPENAPI_VERSION!r}")
    operations = [
        (f"{method.upper()} {path}", op)
        for path, item in doc.get("paths", {}).items()
        for method, op in item.items()
        if method in _METHODS
    ]
    if len(operations) > MAX_OPERATIONS:
        problems.append(f"{len(operations)} operations, more than {MAX_OPERATIONS}")
    ids = [op.get("operationId") for _, op in operations]
    for name, op in operations:
        if not _OPERATION_ID.match(str(op.get("operationId", ""))):
            problems.append(f"{name}: no usable operationId")
        if not op.get("description"):
            problems.append(f"{name}: no description")
        if not op.get("responses"):
            problems.append(f"{name}: no responses")
        for param in op.get("parameters", []):
            if not param.get("description"):
                problems.append(f"{name}: parameter {param.get('name')!r} has no description")
        body = op.get("requestBody")
        if body is not None and not body.get("description"):
            problems.append(f"{name}: request body has no description")
    if len(set(ids)) != len(ids):
        problems.append("operationIds repeat")
    problems += [f"{where}: {what}" for where, what in _schema_problems(doc, "#")]
    return problems


def _schema_problems(node: Any, where: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, list):
        for i, item in enumerate(node):
            found += _schema_problems(item, f"{where}/{i}")
        return found
    if not isinstance(node, dict):
        return found
    for key in _FORBIDDEN:
        # `properties` maps field names, which may be called anything, to schemas.
        if key in node and not where.endswith("/properties"):
            found.append((where, f"uses {key!r}"))
    kind = node.get("type")
    if isinstance(kind, list) or kind == "null":
        found.append((where, f"type {kind!r} is not OpenAPI 3.0"))
    for key, value in node.items():
        found += _schema_problems(value, f"{where}/{key}")
    return found
