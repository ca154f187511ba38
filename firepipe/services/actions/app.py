"""The action API's ASGI app: generateSyntheticData, validateSchema, calculateQualityMetrics,
and its OpenAPI 3.0.0 document at GET /openapi.json (committed at docs/openapi/actions.json).

Keys are the inference service's (`FIREPIPE_API_KEYS`, `keys.Access`), checked before FastAPI
reads the body, so a caller without a key learns nothing about the request format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from firepipe.core.genai.schema_check import SchemaCheck
from firepipe.services.actions import openapi
from firepipe.services.actions.models import (
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    QualityRequest,
    ValidateRequest,
)
from firepipe.services.actions.operations import ActionError, Actions
from firepipe.services.inference.keys import Access

API_VERSION = "1"
OPEN_PATHS = frozenset({"/openapi.json"})
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
    actions = Actions(output_root)
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
        return JSONResponse(body.model_dump(), status_code=exc.status)

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
        return actions.generate_synthetic_data(request)

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
        return actions.validate_schema(request)

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
        return actions.calculate_quality_metrics(request)

    document: dict[str, Any] | None = None

    def served() -> dict[str, Any]:
        nonlocal document
        document = document or openapi.document(api)
        return document

    api.openapi = served  # type: ignore[method-assign]
    return api
