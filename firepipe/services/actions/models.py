"""The action API's request and answer bodies.

No Literal or Enum: Bedrock refuses `enum` in an action group's schema, so the allowed values
are listed in descriptions and checked by the handlers (a 400 that names them)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from firepipe.core.genai.schema_check import SchemaError
from firepipe.core.genai.tabular import TabularSchema

MAX_INLINE_ROWS = 1_000  # the rows travel in the answer (and through Bedrock's small payloads)
MAX_ROWS = 200_000  # a synchronous answer: larger tables belong to a Dagster run
MAX_METRIC_ROWS = 100_000
Cell = str | int | float | bool | None
# Examples in the document show Bedrock's model a whole request, and schemathesis sends them.
_SCHEMA_EXAMPLE: dict[str, JsonValue] = {
    "fields": [
        {"name": "customer_id", "type": "uuid", "constraints": {"unique": True}},
        {"name": "age", "type": "integer", "constraints": {"min": 18, "max": 90}},
        {"name": "email", "type": "email"},
        {"name": "signup", "type": "date", "constraints": {"min": "2024-01-01", "nullable": True}},
    ]
}
_GENERATE_EXAMPLE: dict[str, JsonValue] = {
    "data_type": "custom",
    "volume": 20,
    "schema": _SCHEMA_EXAMPLE,
    "compliance_requirements": ["GDPR"],
    "output_format": "json",
    "destination": {"type": "inline"},
    "seed": 42,
}
_ROWS_EXAMPLE: list[JsonValue] = [
    {"customer_id": "0b5e0d6c-6d7b-4a37-9d5e-5d1f0a3c2b11", "age": 34, "email": "a.1@example.com"},
    {"customer_id": "7f1c9e2a-3b4d-4e5f-8a6b-1c2d3e4f5a6b", "age": 51, "signup": "2024-03-02"},
]


class Destination(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(
        "inline",
        description="Where the rows go: 'inline' (in the answer, at most 1000 rows) or 'local' "
        "(a file under the service's output folder). 's3' is not available yet.",
    )
    location: str | None = Field(
        None,
        description="For 'local': a folder relative to the service's output folder (default: "
        "its top); the file is <generation_id>.<format> inside it.",
    )


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra={"examples": [_GENERATE_EXAMPLE]}
    )
    data_type: str = Field(
        ...,
        description="'custom' for a generic table described by `schema`. Fire-sensor data is "
        "asked for with a fire-scenario request, which this API does not take yet.",
    )
    volume: int = Field(..., ge=1, le=MAX_ROWS, description="How many rows to generate.")
    table: TabularSchema = Field(..., alias="schema", description="The table's columns.")
    compliance_requirements: list[str] = Field(
        default_factory=list, description="Frameworks to check against: GDPR, HIPAA, PCI-DSS."
    )
    output_format: str = Field("json", description="'parquet', 'csv' or 'json' (JSON lines).")
    destination: Destination = Field(
        default_factory=lambda: Destination(type="inline", location=None),
        description="Where the rows go.",
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Random seed; the same seed gives the same rows."
    )

    @model_validator(mode="after")
    def _finite_bounds(self) -> GenerateRequest:
        # JSON parsers take NaN/Infinity; a non-finite bound would draw rows JSON cannot carry.
        for spec in self.table.fields:
            for bound in (spec.constraints.min, spec.constraints.max):
                if isinstance(bound, float) and not math.isfinite(bound):
                    raise ValueError(f"field {spec.name!r}: min and max must be finite numbers")
        return self


class GenerateResponse(BaseModel):
    generation_id: str = Field(..., description="The generation's id (32 hex digits).")
    status: str = Field(..., description="'completed' (the answer comes when the rows exist).")
    records_generated: int = Field(..., description="Rows generated.")
    output_location: str | None = Field(..., description="The file written; null for inline.")
    data_quality_metrics: dict[str, Any] = Field(
        ..., description="Completeness, validity, uniqueness and distributions of the rows."
    )
    execution_time_ms: float = Field(..., description="Time taken to generate and write.")
    seed: int = Field(..., description="The seed used (give it again for the same rows).")
    errors: list[str] = Field(default_factory=list, description="Always empty on success.")
    warnings: list[str] = Field(
        default_factory=list, description="Schema warnings and compliance notes."
    )
    data: list[dict[str, Any]] | None = Field(
        None, description="The rows, for an inline destination; null otherwise."
    )


class ValidateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [{"schema": _SCHEMA_EXAMPLE, "compliance_requirements": ["GDPR"]}]
        },
    )
    # Kept raw so that every mistake reaches the checker and comes back as an error per field.
    table: dict[str, Any] = Field(
        ...,
        alias="schema",
        description="The schema to check: {fields: [{name, type, constraints}]}.",
    )
    compliance_requirements: list[str] = Field(
        default_factory=list, description="Frameworks to check against: GDPR, HIPAA, PCI-DSS."
    )


class QualityRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"schema": _SCHEMA_EXAMPLE, "data": _ROWS_EXAMPLE}]},
    )
    table: TabularSchema = Field(..., alias="schema", description="The table's columns.")
    data: list[dict[str, Cell]] = Field(
        ...,
        max_length=MAX_METRIC_ROWS,
        description="The rows, one object per row keyed by field name; a missing key is null.",
    )


class ErrorBody(BaseModel):
    detail: str = Field(..., description="What was wrong with the request.")
    errors: list[SchemaError] = Field(
        default_factory=list, description="The schema's errors, when the schema was the problem."
    )
