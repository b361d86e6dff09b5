"""Small readers over synthesized CloudFormation: find references without relying on hashed ids."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def walk(value: Any) -> Iterator[Any]:
    """Every nested value of a template fragment, depth first."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def referenced_ids(value: Any) -> set[str]:
    """Logical ids named by Ref or Fn::GetAtt anywhere inside `value`."""
    found: set[str] = set()
    for node in walk(value):
        if isinstance(node, dict):
            if "Ref" in node and isinstance(node["Ref"], str) and not node["Ref"].startswith("AWS::"):
                found.add(node["Ref"])
            if "Fn::GetAtt" in node:
                found.add(node["Fn::GetAtt"][0])
    return found


def strings(value: Any) -> list[str]:
    return [node for node in walk(value) if isinstance(node, str)]


def statements(policy_resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy_resource["Properties"]["PolicyDocument"]["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def render(value: Any) -> str:
    """A template string with pseudo parameters filled in (partition `aws`) and other references as <Id>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if value.get("Ref") == "AWS::Partition":
            return "aws"
        if value.get("Ref") == "AWS::URLSuffix":
            return "amazonaws.com"
        if "Ref" in value:
            return f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            return f"<{'.'.join(value['Fn::GetAtt'])}>"
        if "Fn::ImportValue" in value:
            return f"<import {value['Fn::ImportValue']}>"
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return str(separator).join(render(part) for part in parts)
    return str(value)
