"""The action API's ASGI app: generateSyntheticData, validateSchema, calculateQualityMetrics,
and its OpenAPI 3.0.0 document at GET /openapi.json (committed at docs/openapi/actions.json).

Keys are the inference service's (`FIREPIPE_API_KEYS`, `keys.Access`), checked before FastAPI
reads the body, so a caller without a key learns nothing about the request format.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from fastapi import FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from firepipe.core.genai.quality import quality_metrics
from firepipe.core.genai.schema_check import SchemaCheck, SchemaError, validate_schema
from firepipe.core.genai.tabular import OUTPUT_FORMATS, TabularSchema, generate, write
from firepipe.services.actions import openapi
from firepipe.services.actions.models import (
    MAX_INLINE_ROWS,
    Cell,
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    QualityRequest,
    ValidateRequest,
)
from firepipe.services.inference.keys import Access
from firepipe.settings import local_paths

API_VERSION = "1"
OPEN_PATHS = frozenset({"/openapi.json"})
DESTINATIONS = ("inline", "local")
_EXTENSIONS = {"parquet": "parquet", "csv": "csv", "json": "jsonl"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A request that cannot be served, and why"},
    401: {"model": ErrorBody, "description": "No valid x-api-key (when keys are on)"},
    429: {"model": ErrorBody, "description": "The key's rate limit; see Retry-After"},
}
_KEY = [Security(APIKeyHeader(name="x-api-key", auto_error=False))]  # documents the scheme


def _action(
    api: FastAPI, path: str, operation_id: str, answer: Any, body: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A POST operation as Bedrock reads it: an operationId, the key scheme, the 4xx answers and
    a description of the request body."""
    return api.post(
        path,
        operation_id=operation_id,
        response_model=answer,
        responses=_ERRORS,
        dependencies=_KEY,
        openapi_extra={"requestBody": {"description": body}},
    )


class ActionError(Exception):
    """A well-formed request that cannot be served: answered 400 with the reason."""

    def __init__(self, detail: str, errors: list[SchemaError] | None = None) -> None:
        super().__init__(detail)
        self.detail, self.errors = detail, errors or []


class RequireKey:
    """ASGI middleware: the inference service's key and rate checks, on every path but the
    document's."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        refused = self.access.refusal(dict(scope["headers"]).get(b"x-api-key"))
        if refused is None:
            return await self.app(scope, receive, send)
        retry = {} if refused.retry_after is None else {"retry-after": refused.retry_after}
        answer = JSONResponse({"detail": refused.detail}, refused.status, retry)
        await answer(scope, receive, send)


def create_app(access: Access, output_root: Path | None = None) -> FastAPI:
    """The app; local destinations are written under `output_root` (default
    $FIREPIPE_HOME/generated)."""
    root = (output_root or local_paths().home / "generated").resolve()
    api = FastAPI(
        title="firepipe actions",
        version=API_VERSION,
        description="Generates synthetic tabular data from a schema, checks schemas (with "
        "GDPR, HIPAA and PCI-DSS notes) and measures the quality of a table's rows.",
        docs_url=None,
        redoc_url=None,
    )
    api.add_middleware(RequireKey, access=access)

    @api.exception_handler(ActionError)
    async def refused(_: Request, exc: ActionError) -> JSONResponse:
        body = ErrorBody(detail=exc.detail, errors=exc.errors)
        return JSONResponse(body.model_dump(), status_code=400)

    @_action(
        api,
        "/generate-synthetic-data",
        "generateSyntheticData",
        GenerateResponse,
        "What to generate and where to put it.",
    )
    def generate_synthetic_data(request: GenerateRequest) -> GenerateResponse:
        """Generate a table of synthetic rows from a schema (data_type 'custom'): inline rows
        in the answer (up to 1000) or a Parquet/CSV/JSON-lines file in the service's output
        folder, with quality metrics, schema warnings and compliance notes."""
        return _generate(request, root)

    @_action(
        api,
        "/validate-schema",
        "validateSchema",
        SchemaCheck,
        "The schema and the frameworks to check.",
    )
    def validate(request: ValidateRequest) -> SchemaCheck:
        """Check a schema: errors per field (with severity), suggestions, and the fields that
        hold regulated data under the requested frameworks. A schema with errors is an answer
        (valid false), not a bad request."""
        return validate_schema(request.table, request.compliance_requirements)

    @_action(
        api,
        "/calculate-quality-metrics",
        "calculateQualityMetrics",
        dict[str, Any],
        "The schema and the rows to measure.",
    )
    def calculate_quality_metrics(request: QualityRequest) -> dict[str, Any]:
        """Completeness, validity, uniqueness and per-field distributions of rows against
        their schema."""
        _valid(request.table, None, None)
        frame = _frame(request.table, request.data)
        try:
            return quality_metrics(frame, request.table)
        except (ValueError, pl.exceptions.PolarsError) as exc:
            raise ActionError(f"cannot measure these rows: {exc}") from exc

    document: dict[str, Any] | None = None

    def served() -> dict[str, Any]:
        nonlocal document
        document = document or openapi.document(api)
        return document

    api.openapi = served  # type: ignore[method-assign]
    return api


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
