"""The action API's ASGI app: generateSyntheticData, validateSchema, calculateQualityMetrics,
getGeneration, listGenerations, searchKnowledgeBase, and its OpenAPI 3.0.0 document at
GET /openapi.json (committed at docs/openapi/actions.json).

Keys are the inference service's (`FIREPIPE_API_KEYS`, `keys.Access`), checked before FastAPI
reads the body, so a caller without a key learns nothing about the request format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

from fastapi import FastAPI, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from firepipe.core.genai.schema_check import SchemaCheck
from firepipe.services.actions import openapi
from firepipe.services.actions.models import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    Generation,
    GenerationList,
    QualityRequest,
    SearchAnswer,
    SearchRequest,
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
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No generation with that id"}
}
_BUSY: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The generation has not succeeded yet"},
    **_NOT_FOUND,
}
_GENERATING: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Another generation writes that batch now"},
    503: {"model": ErrorBody, "description": "No Dagster instance or daemon to run on"},
}
_NO_INDEX: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "No knowledge base index: run `firepipe kb build`"}
}
_KEY = [Security(APIKeyHeader(name="x-api-key", auto_error=False))]  # documents the scheme


def _action(
    api: FastAPI,
    path: str,
    operation_id: str,
    answer: Any,
    body: str,
    more: dict[int | str, dict[str, Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A POST operation as Bedrock reads it: an operationId, the key scheme, the 4xx answers and
    a description of the request body."""
    return api.post(
        path,
        operation_id=operation_id,
        response_model=answer,
        responses={**_ERRORS, **(more or {})},
        dependencies=_KEY,
        openapi_extra={"requestBody": {"description": body}},
    )


def _query(
    api: FastAPI,
    path: str,
    operation_id: str,
    answer: Any,
    more: dict[int | str, dict[str, Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A GET operation: an operationId, the key scheme and the 4xx answers."""
    return api.get(
        path,
        operation_id=operation_id,
        response_model=answer,
        responses={**_ERRORS, **(more or {})},
        dependencies=_KEY,
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


def create_app(
    access: Access, output_root: FilePath | None = None, actions: Actions | None = None
) -> FastAPI:
    """The app over `actions` (default: the environment's, with its knowledge base, local
    destinations written under `output_root`, default $FIREPIPE_HOME/generated)."""
    actions = actions or Actions.from_environment(output_root)
    api = FastAPI(
        title="firepipe actions",
        version=API_VERSION,
        description="Generates synthetic data: generic tables from a schema, and "
        "physics-informed fire-sensor readings landed in the lake by Dagster runs. Checks "
        "schemas (with GDPR, HIPAA and PCI-DSS notes), measures the quality of rows and of "
        "fire data against its reference batch, follows generations, and searches "
        "firepipe's knowledge base.",
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
        _GENERATING,
    )
    def generate_synthetic_data(request: GenerateRequest) -> GenerateResponse:
        """Generate synthetic data. data_type 'custom': a table of rows from a schema, inline
        in the answer (up to 1000 rows), a Parquet/CSV/JSON-lines file in the service's output
        folder or an S3 object, with quality metrics, schema warnings and compliance notes.
        data_type 'fire_scenarios': fire-sensor readings of the families and mix asked for,
        one Dagster run per family into bronze.synthetic_readings, tagged with the generation
        id; the answer comes at once with the runs (follow them with getGeneration)."""
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
        "The rows with their schema, or the fire generation or partitions to measure.",
        _BUSY,
    )
    def calculate_quality_metrics(request: QualityRequest) -> dict[str, Any]:
        """Completeness, validity, uniqueness and per-field distributions of rows against
        their schema; or, for fire data (a generation id or partitions), completeness,
        validity, uniqueness of (device_id, ts) and the SDMetrics-style comparison of each
        family with its reference batch 000 that the bronze checks make."""
        return actions.calculate_quality_metrics(request)

    @_query(api, "/generations/{generation_id}", "getGeneration", Generation, _NOT_FOUND)
    def get_generation(
        generation_id: str = Path(
            ..., max_length=64, description="The id generateSyntheticData answered."
        ),
    ) -> Generation:
        """One generation: its status (from its Dagster runs for fire scenarios), rows,
        location, duration, runs and partitions, and the bronze checks' outcomes per
        partition."""
        return actions.get_generation(generation_id)

    @_query(api, "/generations", "listGenerations", GenerationList)
    def list_generations(
        limit: int = Query(
            DEFAULT_LIST_LIMIT,
            ge=1,
            le=MAX_LIST_LIMIT,
            description="How many generations, newest first.",
        ),
    ) -> GenerationList:
        """The latest generations of both kinds, newest first."""
        return actions.list_generations(limit)

    @_action(
        api,
        "/search-knowledge-base",
        "searchKnowledgeBase",
        SearchAnswer,
        "The question and how many passages to answer.",
        _NO_INDEX,
    )
    def search_knowledge_base(request: SearchRequest) -> SearchAnswer:
        """Passages of firepipe's documents (scenario catalog, sensor and physics notes, the
        NIST study, the README, docs and runbooks) closest to a question, with their sources."""
        return actions.search_knowledge_base(request)

    document: dict[str, Any] | None = None

    def served() -> dict[str, Any]:
        nonlocal document
        document = document or openapi.document(api)
        return document

    api.openapi = served  # type: ignore[method-assign]
    return api
