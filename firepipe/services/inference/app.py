"""The inference service's ASGI app: the SageMaker serving contract (/ping, /invocations,
/execution-parameters) and its OpenAPI document (/openapi.json, committed at
docs/openapi/inference.json).

FastAPI answers every route and writes the document; POST /invocations is taken before
FastAPI's routing, straight to its plain ASGI handler (`invocations.Invocations`), which
FastAPI's own /invocations route calls too: that route documents it (and answers 405 to
another method).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader

from firepipe.core.serving.payloads import CSV, EXECUTION_PARAMETERS, JSON, JSONLINES
from firepipe.services.inference import schemas
from firepipe.services.inference.invocations import Invocations, Receive, Scope, Send
from firepipe.services.inference.keys import Access
from firepipe.services.inference.source import ModelHolder, NoModelError

API_VERSION = "1"  # the contract's version, not the package's: the document changes with it
_REF = "#/components/schemas/{model}"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorBody, "description": "A malformed body or refused readings"},
    401: {"model": schemas.ErrorBody, "description": "No valid x-api-key (when keys are on)"},
    413: {"model": schemas.ErrorBody, "description": "A body over 6 MiB"},
    415: {"model": schemas.ErrorBody, "description": "A content type not read here"},
    429: {"model": schemas.ErrorBody, "description": "The key's rate limit; see Retry-After"},
    503: {"model": schemas.ErrorBody, "description": "No model loaded yet"},
}
_CSV_EXAMPLE = (
    "device_id,ts,temperature_c,smoke_obscuration_pct_per_m\nd-1,2026-12-06T00:00:01Z,21.5,0\n"
)
_INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"schema": {"$ref": _REF.format(model="InvocationRequest")}},
            JSONLINES: {"schema": {"$ref": _REF.format(model="ReadingIn")}},
            CSV: {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
        },
    }
}
_PREDICTION_FORMS = {
    JSONLINES: {"schema": {"$ref": _REF.format(model="PredictionOut")}},
    CSV: {"schema": {"type": "string"}},
}


class InferenceApp:
    """The FastAPI app, with POST /invocations taken before its routing."""

    def __init__(self, api: FastAPI, invocations: Invocations) -> None:
        self.api, self.invocations = api, invocations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/invocations"
            and scope["method"] == "POST"
        ):
            await self.invocations(scope, receive, send)
        else:
            await self.api(scope, receive, send)


class _Handled(Response):
    """A FastAPI answer that is the ASGI handler's own."""

    def __init__(self, handler: Invocations) -> None:
        super().__init__()
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def create_app(holder: ModelHolder, access: Access) -> InferenceApp:
    invocations = Invocations(holder, access)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        holder.start()
        try:
            yield
        finally:
            holder.stop()
            invocations.close()

    api = FastAPI(
        title="firepipe inference",
        version=API_VERSION,
        description="Scores fire-sensor readings with the champion fire detector, on the "
        "SageMaker serving contract. Send readings as they arrive: each device's recent "
        "readings are kept, and each reading is scored on the features gold computes for it.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    @api.get(
        "/ping",
        operation_id="ping",
        response_model=schemas.Health,
        responses={503: _ERRORS[503]},
    )
    async def ping() -> Response:
        """200 once a model is loaded (SageMaker's health check)."""
        engine = holder.engine
        if engine is None:
            return JSONResponse({"detail": "no model loaded yet"}, status_code=503)
        model = engine.model
        health = {"status": "ok", "model_version": model.version, "backend": model.scorer.backend}
        return Response(orjson.dumps(health), media_type=JSON)

    @api.get(
        "/execution-parameters",
        operation_id="execution_parameters",
        response_model=schemas.ExecutionParameters,
    )
    async def execution_parameters() -> dict[str, int | str]:
        """How SageMaker batch transform should split its input: many records a request, one
        request at a time (a device's readings must reach its online state in order)."""
        return EXECUTION_PARAMETERS

    @api.post(
        "/invocations",
        operation_id="invocations",
        response_model=schemas.Predictions,
        responses={200: {"content": _PREDICTION_FORMS}, **_ERRORS},
        openapi_extra=_INVOCATIONS_BODY,
        dependencies=[Security(APIKeyHeader(name="x-api-key", auto_error=False))],
    )
    async def invoke(request: Request) -> Response:
        """Score readings: one prediction per reading, in order. application/json answers
        {"predictions": [...]}, application/jsonlines one line per line sent, text/csv a
        header row and one row per reading; Accept may ask for another of the three."""
        return _Handled(invocations)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes
            )
            models = document.setdefault("components", {}).setdefault("schemas", {})
            for model in schemas.REQUEST_MODELS:
                schema = model.model_json_schema(ref_template=_REF)
                models.update(schema.pop("$defs", {}))
                models[model.__name__] = schema
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return InferenceApp(api, invocations)


class _Nothing:
    """A source with no model: the app the document is written from."""

    description, follows = "no model", False

    def current(self) -> str:
        raise NoModelError("no model")

    def load(self, version: str) -> Any:
        raise NoModelError("no model")


def openapi_document() -> dict[str, Any]:
    return create_app(ModelHolder(_Nothing()), Access(None, None)).api.openapi()


def openapi_text() -> str:
    """The document as committed: indented JSON ending in a newline."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
