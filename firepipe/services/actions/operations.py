"""The action API's operations, one method per operationId, shared by the HTTP service
(app.py) and the Bedrock action group's Lambda: each takes its request model and answers its
answer model, or raises ActionError with the status and the reason."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from firepipe.core.genai.quality import quality_metrics
from firepipe.core.genai.schema_check import SchemaCheck, SchemaError, validate_schema
from firepipe.core.genai.tabular import OUTPUT_FORMATS, TabularSchema, generate, write
from firepipe.services.actions.models import (
    MAX_INLINE_ROWS,
    Cell,
    GenerateRequest,
    GenerateResponse,
    QualityRequest,
    ValidateRequest,
)
from firepipe.settings import local_paths

DESTINATIONS = ("inline", "local")
_EXTENSIONS = {"parquet": "parquet", "csv": "csv", "json": "jsonl"}


class ActionError(Exception):
    """A well-formed request that cannot be served: answered with its
    status (400 unless said otherwise) and the reason."""

    def __init__(
        self, detail: str, errors: list[SchemaError] | None = None, status: int = 400
    ) -> None:
        super().__init__(detail)
        self.detail, self.errors, self.status = detail, errors or [], status


class Actions:
    """The operations over one output folder (default $FIREPIPE_HOME/generated)."""

    def __init__(self, output_root: Path | None = None) -> None:
        self.output_root = (output_root or local_paths().home / "generated").resolve()

    def generate_synthetic_data(self, request: GenerateRequest) -> GenerateResponse:
        """generateSyntheticData."""
        return _generate(request, self.output_root)

    def validate_schema(self, request: ValidateRequest) -> SchemaCheck:
        """validateSchema: a schema with errors is an answer (valid false)."""
        return validate_schema(request.table, request.compliance_requirements)

    def calculate_quality_metrics(self, request: QualityRequest) -> dict[str, Any]:
        """calculateQualityMetrics over rows given with their schema."""
        _valid(request.table, None, None)
        frame = _frame(request.table, request.data)
        try:
            return quality_metrics(frame, request.table)
        except (ValueError, pl.exceptions.PolarsError) as exc:
            raise ActionError(f"cannot measure these rows: {exc}") from exc


def _valid(table: TabularSchema, compliance: list[str] | None, rows: int | None) -> SchemaCheck:
    check = validate_schema(table, compliance, rows)
    if not check.valid:
        raise ActionError(
            "the schema is invalid", [e for e in check.errors if e.severity == "error"]
        )
    return check


def _generate(request: GenerateRequest, root: Path) -> GenerateResponse:
    started = time.perf_counter()
    kind, fmt = request.data_type.strip().lower(), request.output_format.strip().lower()
    where = request.destination.type.strip().lower()
    if kind != "custom":
        raise ActionError(
            f"data_type {request.data_type!r} is not served here: this API generates 'custom' "
            "tables from a schema; fire-sensor data will come through the fire-scenario "
            "request, which is not built yet"
        )
    if fmt not in OUTPUT_FORMATS:
        raise ActionError(f"output_format {request.output_format!r}: use one of {OUTPUT_FORMATS}")
    if where == "s3":
        raise ActionError("destination 's3' is not available yet: use 'inline' or 'local'")
    if where not in DESTINATIONS:
        raise ActionError(
            f"destination type {request.destination.type!r}: use one of {DESTINATIONS}"
        )
    if where == "inline" and request.volume > MAX_INLINE_ROWS:
        raise ActionError(
            f"an inline answer holds at most {MAX_INLINE_ROWS} rows, {request.volume} asked: "
            "use destination 'local'"
        )
    check = _valid(request.table, request.compliance_requirements, request.volume)
    generation_id = uuid.uuid4().hex
    target = (
        _target(root, request.destination.location, generation_id, fmt)
        if where == "local"
        else None
    )
    seed = secrets.randbits(32) if request.seed is None else request.seed
    try:
        frame = generate(request.table, request.volume, seed)
    except ValueError as exc:  # what only drawing finds, e.g. a unique float with min == max
        raise ActionError(f"cannot generate: {exc}") from exc
    if target is not None:
        try:
            write(frame, fmt, target)
        except OSError as exc:  # e.g. a name too long for the file system
            location = request.destination.location
            raise ActionError(f"cannot write to location {location!r}: {exc}") from exc
    warnings = [f"{e.field}: {e.message}" for e in check.errors if e.severity == "warning"]
    warnings += [
        f"{i.field}: {i.framework} {i.category}. {i.handling}" for i in check.compliance_issues
    ]
    return GenerateResponse(
        generation_id=generation_id,
        status="completed",
        records_generated=frame.height,
        output_location=None if target is None else str(target),
        data_quality_metrics=quality_metrics(frame, request.table),
        execution_time_ms=round((time.perf_counter() - started) * 1000, 3),
        seed=seed,
        warnings=warnings,
        data=_rows(frame) if target is None else None,
    )


def _target(root: Path, location: str | None, generation_id: str, fmt: str) -> Path:
    """The file under `root`; a location that leaves the root (absolute, `..`, a link out)
    is refused."""
    try:
        folder = (root / (location or "")).resolve()
    except (ValueError, OSError):  # a NUL byte, a link loop
        folder = Path("/")
    if Path(location or "").is_absolute() or not folder.is_relative_to(root):
        raise ActionError(f"location {location!r} must be a folder inside the output folder")
    return folder / f"{generation_id}.{_EXTENSIONS[fmt]}"


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON values (dates and datetimes as ISO text), as a JSON file would hold them."""
    rows: list[dict[str, Any]] = json.loads(frame.write_json())
    return rows


def _frame(table: TabularSchema, data: list[dict[str, Cell]]) -> pl.DataFrame:
    names = [f.name for f in table.fields]
    unknown = sorted({k for row in data for k in row} - set(names))
    if unknown:
        raise ActionError(f"rows hold keys that are not fields of the schema: {unknown}")
    columns = []
    for name in names:
        values = [row.get(name) for row in data]
        numbers = [v for v in values if v is not None]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers)
        if numeric and any(isinstance(v, float) for v in numbers):  # polars refuses int + float
            values = [None if v is None else float(v) for v in values]
        try:
            columns.append(pl.Series(name, values))
        except (TypeError, OverflowError, pl.exceptions.PolarsError) as exc:
            raise ActionError(f"field {name!r} mixes value types: {exc}") from exc
    return pl.DataFrame(columns)
