"""The action API's request and answer bodies.

No Literal or Enum: Bedrock refuses `enum` in an action group's schema, so the allowed values
are listed in descriptions and checked by the handlers (a 400 that names them)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from firepipe.core.genai.fire_request import (
    DEFAULT_DEVICES,
    DEFAULT_DURATION_S,
    DEFAULT_FAULT_SHARE,
    MAX_DURATION_S,
    MIN_DURATION_S,
)
from firepipe.core.genai.fire_request import MAX_DEVICES as MAX_FIRE_DEVICES
from firepipe.core.genai.schema_check import SchemaError
from firepipe.core.genai.tabular import MAX_INLINE_ROWS as MAX_INLINE_ROWS
from firepipe.core.genai.tabular import TabularSchema

MAX_ROWS = 200_000  # a synchronous answer: larger tables belong to a Dagster run
MAX_METRIC_ROWS = 100_000
DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT = 20, 200  # listGenerations
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
        description="Where a custom table's rows go: 'inline' (in the answer, at most 1000 "
        "rows), 'local' (a file under the service's output folder) or 's3' (an object "
        "s3://bucket/prefix/<generation_id>.<format>, with the service's AWS credentials). "
        "Fire-scenario data always goes to the lake table bronze.synthetic_readings.",
    )
    location: str | None = Field(
        None,
        description="For 'local': a folder relative to the service's output folder (default: "
        "its top); the file is <generation_id>.<format> inside it. For 's3': "
        "s3://bucket/prefix (required).",
    )


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [_GENERATE_EXAMPLE]},
    )
    data_type: str = Field(
        ...,
        description="'custom' for a generic table described by `schema` (with `volume` rows), "
        "or 'fire_scenarios' for physics-informed fire-sensor readings (families, mix, "
        "devices, duration_s, fault_share, use_gpu, batch) landed in the lake table "
        "bronze.synthetic_readings by Dagster runs. A field of the other data_type is "
        "refused (seed serves both).",
    )
    volume: int | None = Field(
        None, ge=1, le=MAX_ROWS, description="'custom': how many rows to generate (required)."
    )
    table: TabularSchema | None = Field(
        None, alias="schema", description="'custom': the table's columns (required)."
    )
    compliance_requirements: list[str] = Field(
        default_factory=list, description="Frameworks to check against: GDPR, HIPAA, PCI-DSS."
    )
    output_format: str = Field(
        "json", description="'custom': 'parquet', 'csv' or 'json' (JSON lines)."
    )
    destination: Destination = Field(
        default_factory=lambda: Destination(type="inline", location=None),
        description="'custom': where the rows go.",
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Random seed; the same seed gives the same rows."
    )
    families: list[str] | None = Field(
        None,
        description="'fire_scenarios': scenario families, among baseline, flaming, smouldering, "
        "nuisance (default: all four, equal shares).",
    )
    mix: dict[str, float] | None = Field(
        None,
        description="'fire_scenarios': each family's share of the devices, adding up to 1, "
        'e.g. {"flaming": 0.75, "smouldering": 0.25}; its keys are the families.',
    )
    devices: int = Field(
        DEFAULT_DEVICES,
        ge=1,
        le=MAX_FIRE_DEVICES,
        description="'fire_scenarios': simulated rooms over all families, shared by the mix.",
    )
    duration_s: int = Field(
        DEFAULT_DURATION_S,
        ge=MIN_DURATION_S,
        le=MAX_DURATION_S,
        description="'fire_scenarios': seconds of readings per device (one row a second).",
    )
    fault_share: float = Field(
        DEFAULT_FAULT_SHARE,
        ge=0.0,
        le=1.0,
        description="'fire_scenarios': share of devices with sensor faults.",
    )
    use_gpu: bool = Field(
        False, description="'fire_scenarios': generate on a GPU (CuPy backend) or not (NumPy)."
    )
    batch: int | None = Field(
        None,
        ge=0,
        le=15,
        description="'fire_scenarios': the batch (0-15) every family writes, replacing what it "
        "held. Default: per family, the lowest batch from 1 that holds no rows and no "
        "running generation writes; batch 0 is each family's reference for the quality "
        "comparison and is written only when named.",
    )

    @model_validator(mode="after")
    def _finite_bounds(self) -> GenerateRequest:
        # JSON parsers take NaN/Infinity; a non-finite bound would draw rows JSON cannot carry.
        for spec in self.table.fields if self.table else ():
            for bound in (spec.constraints.min, spec.constraints.max):
                if isinstance(bound, float) and not math.isfinite(bound):
                    raise ValueError(f"field {spec.name!r}: min and max must be finite numbers")
        return self


class RunInfo(BaseModel):
    run_id: str = Field(..., description="The Dagster run's id.")
    partition: str | None = Field(
        ..., description="Its partition of bronze/synthetic_readings, 'batch|family'."
    )
    status: str = Field(
        ...,
        description="Dagster's run status: QUEUED, NOT_STARTED, STARTING, STARTED, SUCCESS, "
        "FAILURE, CANCELING or CANCELED.",
    )
    checks: dict[str, bool] = Field(
        default_factory=dict, description="The bronze checks' outcomes, by check name."
    )


class GenerateResponse(BaseModel):
    generation_id: str = Field(..., description="The generation's id (32 hex digits).")
    status: str = Field(
        ...,
        description="'completed' for a custom table (the answer comes when the rows exist); "
        "for fire scenarios the runs' state: 'queued', 'running', 'succeeded' or 'failed' "
        "(follow it with getGeneration).",
    )
    records_generated: int = Field(
        ..., description="Rows generated (fire scenarios: the rows the runs will write)."
    )
    output_location: str | None = Field(
        ..., description="The file, object or lake table written; null for inline."
    )
    data_quality_metrics: dict[str, Any] | None = Field(
        None,
        description="Completeness, validity, uniqueness and distributions of the rows; null "
        "for fire scenarios until their runs finish (ask calculateQualityMetrics then).",
    )
    execution_time_ms: float = Field(..., description="Time taken to answer.")
    seed: int = Field(..., description="The seed used (give it again for the same rows).")
    errors: list[str] = Field(default_factory=list, description="Always empty on success.")
    warnings: list[str] = Field(
        default_factory=list, description="Schema warnings, compliance notes, batch notes."
    )
    data: list[dict[str, Any]] | None = Field(
        None, description="The rows, for an inline destination; null otherwise."
    )
    runs: list[RunInfo] = Field(
        default_factory=list, description="Fire scenarios: the Dagster runs, one per family."
    )
    partitions: list[str] = Field(
        default_factory=list,
        description="Fire scenarios: the partitions written, 'batch|family'.",
    )


class PartitionQuality(BaseModel):
    partition: str = Field(..., description="The partition, 'batch|family'.")
    passed: list[str] = Field(..., description="The bronze checks that passed.")
    failed: list[str] = Field(
        ...,
        description="The bronze checks that failed: schema, physical_ranges and "
        "label_consistency stop the write; scenario_mix and distribution_vs_reference warn.",
    )
    rows: int | None = Field(default=None, description="Rows written, once its run has succeeded.")


class QualitySummary(BaseModel):
    passed: bool = Field(..., description="Whether every check of every partition passed.")
    partitions: list[PartitionQuality] = Field(
        ..., description="Each partition whose checks have run, with their outcomes."
    )


class Generation(BaseModel):
    generation_id: str = Field(..., description="The generation's id.")
    data_type: str = Field(..., description="'custom' or 'fire_scenarios'.")
    status: str = Field(
        ..., description="'queued', 'running', 'succeeded', 'failed' or 'completed' (custom)."
    )
    records_generated: int = Field(..., description="Rows written so far.")
    output_location: str | None = Field(
        ..., description="Where the rows are: a file, an object, 'inline' or the lake table."
    )
    started_at: str | None = Field(..., description="When it started (ISO 8601, UTC).")
    duration_s: float | None = Field(
        ..., description="Seconds generating, summed over its partitions."
    )
    seed: int | None = Field(None, description="The seed it used.")
    runs: list[RunInfo] = Field(default_factory=list, description="Fire scenarios: its runs.")
    partitions: list[str] = Field(
        default_factory=list, description="Fire scenarios: its partitions, 'batch|family'."
    )
    quality_summary: QualitySummary | None = Field(
        default=None,
        description="Fire scenarios: the bronze checks' outcomes per partition, once they have "
        "run (null before; calculateQualityMetrics gives the measures themselves).",
    )


class GenerationList(BaseModel):
    generations: list[Generation] = Field(..., description="Newest first.")


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
    table: TabularSchema | None = Field(
        None, alias="schema", description="Rows given here: the table's columns."
    )
    data: list[dict[str, Cell]] | None = Field(
        None,
        max_length=MAX_METRIC_ROWS,
        description="Rows given here: one object per row keyed by field name; a missing key "
        "is null.",
    )
    generation_id: str | None = Field(
        None,
        max_length=64,
        description="Fire scenarios: a generation whose partitions to measure against each "
        "family's reference batch 000.",
    )
    partitions: list[str] | None = Field(
        None,
        max_length=64,
        description="Fire scenarios: partitions of bronze.synthetic_readings to measure, "
        "'batch|family' (e.g. '001|flaming').",
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"query": "what does a smouldering fire look like", "k": 3}]
        },
    )
    query: str = Field(..., min_length=1, max_length=2000, description="The question.")
    k: int = Field(5, ge=1, le=20, description="How many passages to answer.")


class Passage(BaseModel):
    source: str = Field(..., description="The document the passage comes from.")
    heading: str | None = Field(None, description="The heading it sits under.")
    text: str = Field(..., description="The passage.")
    score: float = Field(..., description="Similarity to the question (higher is closer).")


class SearchAnswer(BaseModel):
    passages: list[Passage] = Field(..., description="The closest passages, best first.")


class ErrorBody(BaseModel):
    detail: str = Field(..., description="What was wrong with the request.")
    errors: list[SchemaError] = Field(
        default_factory=list, description="The schema's errors, when the schema was the problem."
    )
