"""Cross-stack references as templates hold them: an export of one stack, imported by another."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Template


def imported(exporter: Template, value: Any) -> dict[str, str]:
    """How another stack refers to `value` of the exporting stack: an import of its export."""
    [name] = [
        o["Export"]["Name"]
        for o in exporter.find_outputs("*").values()
        if "Export" in o and o["Value"] == value
    ]
    return {"Fn::ImportValue": name}


def resolve_imports(value: Any, producer: Template) -> Any:
    """`value` with each import of an export of `producer`'s template replaced by the value
    exported: what the reference names in the producer's own terms."""
    exports = {
        o["Export"]["Name"]: o["Value"]
        for o in producer.to_json()["Outputs"].values()
        if "Export" in o
    }

    def resolve(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Fn::ImportValue"}:
            return exports.get(node["Fn::ImportValue"], node)
        if isinstance(node, dict):
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(value)
