"""The action API's OpenAPI document: 3.0.0, what Bedrock accepts, and committed as generated."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from firepipe.services.actions.app import create_app
from firepipe.services.actions.openapi import _convert, bedrock_problems, document, document_text
from firepipe.services.inference.keys import Access
from firepipe_tests.conftest import REPO_ROOT

OPENAPI_PATH = REPO_ROOT / "docs" / "openapi" / "actions.json"
REGENERATE = (
    "regenerate it: .venv/bin/python -c 'from firepipe.services.actions.app import create_app; "
    "from firepipe.services.actions.openapi import document_text; "
    "from firepipe.services.inference.keys import Access; "
    'print(document_text(create_app(Access(None, None))), end="")\' > docs/openapi/actions.json'
)


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    return document(create_app(Access(None, None)))


def test_the_document_is_valid_openapi_3_0_that_bedrock_accepts(generated):  # type: ignore[no-untyped-def]
    assert generated["openapi"] == "3.0.0"
    validate(generated)  # openapi-spec-validator picks the 3.0 schema from the version
    assert bedrock_problems(generated) == []
    operations = {op["operationId"] for item in generated["paths"].values() for op in item.values()}
    assert operations == {
        "generateSyntheticData",
        "validateSchema",
        "calculateQualityMetrics",
        "getGeneration",
        "listGenerations",
        "searchKnowledgeBase",
    }
    for path, method in (("/generations/{generation_id}", "get"), ("/generations", "get")):
        [parameter] = generated["paths"][path][method]["parameters"]
        assert parameter["description"]
    assert "enum" not in json.dumps(generated)


def test_the_committed_document_is_the_generated_one(generated, open_url, http):  # type: ignore[no-untyped-def]
    committed = json.loads(OPENAPI_PATH.read_text())
    served = http.get(f"{open_url}/openapi.json").json()
    assert served == committed == generated, REGENERATE
    assert OPENAPI_PATH.read_text() == document_text(create_app(Access(None, None))), REGENERATE


def test_3_1_constructs_become_3_0():  # type: ignore[no-untyped-def]
    schema = {
        "properties": {
            "a": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}]},
            "b": {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]},
            "c": {"type": "string", "enum": ["x", "y"], "description": "Kind."},
            "d": {"const": 3, "examples": [1, 2]},
            "e": {"$ref": "#/components/schemas/X", "description": "An X."},
        }
    }
    assert _convert(schema)["properties"] == {
        "a": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "nullable": True},
        "b": {"allOf": [{"$ref": "#/components/schemas/X"}], "nullable": True},
        "c": {"type": "string", "description": 'Kind. One of: "x", "y".'},
        "d": {"description": "Must be 3.", "example": 1},
        "e": {"allOf": [{"$ref": "#/components/schemas/X"}], "description": "An X."},
    }


def test_the_lint_names_what_bedrock_refuses():  # type: ignore[no-untyped-def]
    doc = {
        "openapi": "3.1.0",
        "paths": {
            f"/p{i}": {
                "get": {"operationId": f"op{i}", "description": "d", "responses": {"200": {}}}
            }
            for i in range(11)
        },
    }
    doc["paths"]["/p0"]["post"] = {
        "responses": {"200": {}},
        "parameters": [{"name": "q", "in": "query"}],
        "requestBody": {"content": {}},
    }
    doc["components"] = {"schemas": {"K": {"type": ["string", "null"], "enum": ["a"]}}}
    assert bedrock_problems(doc) == [
        "openapi is '3.1.0', not '3.0.0'",
        "12 operations, more than 11",
        "POST /p0: no usable operationId",
        "POST /p0: no description",
        "POST /p0: parameter 'q' has no description",
        "POST /p0: request body has no description",
        "#/components/schemas/K: uses 'enum'",
        "#/components/schemas/K: type ['string', 'null'] is not OpenAPI 3.0",
    ]
