"""The Bedrock agent's action group as a Lambda function: the action API's operations
(`operations.Actions`) behind Bedrock's event and response format.

Powertools' `BedrockAgentResolver` routes the event and builds the answer (messageVersion 1.0,
`response.responseBody["application/json"].body` a JSON string). Its validation stays off:
Bedrock sends every body property's value as a string (`"volume": "100"`), nested arrays and
objects as JSON text or, often, Java-style text (`[{name=a, type=string}]`), so Powertools would
refuse sensible requests with a 422. Instead each value is coerced by the request model's JSON
schema (the same pydantic models the HTTP service validates with), then validated and handed to
the same `Actions` method. A value that cannot be read, a request the model refuses or an
unknown apiPath is an answer (400, 400, 404) with the reason, never a Lambda error, so the
agent can tell the user or try again.

A new operation is one row of `ROUTES`. Handler: `firepipe.services.actions.bedrock_lambda.handler`.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, get_type_hints

from aws_lambda_powertools.event_handler import BedrockAgentResolver
from aws_lambda_powertools.event_handler.api_gateway import BedrockResponse
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from firepipe import settings
from firepipe.lib.secret_refs import fill_from_reference
from firepipe.services.actions.bedrock_values import UnreadableValueError, coerce_properties
from firepipe.services.actions.models import (
    GenerateRequest,
    QualityRequest,
    SearchRequest,
    ValidateRequest,
)
from firepipe.services.actions.operations import ActionError, Actions

# What docker/dagster.yaml reads the instance's password from, and the reference to its secret.
DAGSTER_PG_PASSWORD_VAR = "DAGSTER_PG_PASSWORD"
DAGSTER_PG_PASSWORD_SECRET_VAR = "DAGSTER_PG_PASSWORD_SECRET_ARN"

# Bedrock caps what an action's Lambda may answer (documented as 25 KB for agents; not measured
# here): an answer past this budget (its body as it travels, see _size; the rest of the response
# is small) loses its inline rows, then its per-field detail, then list items.
MAX_ANSWER_BYTES = 20_000


@dataclass(frozen=True)
class Route:
    """One operation: its operationId, Bedrock's (httpMethod, apiPath), the model that validates
    its body and parameters together, and the `Actions` method that serves it. With no model,
    the method's own parameters (`get_generation(generation_id: str)`) make one."""

    operation_id: str
    method: str
    path: str  # as in the OpenAPI document and Bedrock's apiPath: /generations/{generation_id}
    call: Callable[..., Any]
    request: type[BaseModel] | None = None

    def model(self) -> type[BaseModel]:
        """The model that reads the operation's values."""
        return self.request or _signature_model(self)

    def serve(self, actions: Actions, values: BaseModel) -> Any:
        """The method's answer to `values` (validated by `model()`)."""
        if self.request is not None:
            return self.call(actions, values)
        return self.call(actions, **dict(values))


@cache
def _signature_model(route: Route) -> type[BaseModel]:
    """A model of the method's parameters after `self`, with their types and defaults."""
    hints = get_type_hints(route.call)
    fields: dict[str, Any] = {
        name: (hints[name], ... if p.default is p.empty else p.default)
        for name, p in list(inspect.signature(route.call).parameters.items())[1:]
    }
    model: type[BaseModel] = create_model(
        f"{route.operation_id}Values", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


ROUTES: tuple[Route, ...] = (
    Route(
        "generateSyntheticData",
        "POST",
        "/generate-synthetic-data",
        Actions.generate_synthetic_data,
        GenerateRequest,
    ),
    Route("validateSchema", "POST", "/validate-schema", Actions.validate_schema, ValidateRequest),
    Route(
        "calculateQualityMetrics",
        "POST",
        "/calculate-quality-metrics",
        Actions.calculate_quality_metrics,
        QualityRequest,
    ),
    Route("getGeneration", "GET", "/generations/{generation_id}", Actions.get_generation),
    Route("listGenerations", "GET", "/generations", Actions.list_generations),
    Route(
        "searchKnowledgeBase",
        "POST",
        "/search-knowledge-base",
        Actions.search_knowledge_base,
        SearchRequest,
    ),
)


def resolver(actions: Actions, routes: tuple[Route, ...] = ROUTES) -> BedrockAgentResolver:
    """The router over `actions`: one Powertools route per row of `routes`."""
    app = BedrockAgentResolver(enable_validation=False)
    for route in routes:
        _register(app, actions, route)

    @app.exception_handler(ActionError)  # type: ignore[untyped-decorator]
    def refused(exc: ActionError) -> BedrockResponse[Any]:
        errors = [e.model_dump(mode="json") for e in exc.errors]
        return BedrockResponse(
            body={"detail": exc.detail, "errors": errors}, status_code=exc.status
        )

    @app.exception_handler([UnreadableValueError, ValidationError])  # type: ignore[untyped-decorator]
    def bad_request(exc: Exception) -> BedrockResponse[Any]:
        return BedrockResponse(body={"detail": _reason(exc)}, status_code=400)

    @app.not_found
    def unknown(_: NotFoundError) -> BedrockResponse[Any]:
        event = app.current_event
        known = ", ".join(f"{r.method} {r.path}" for r in routes)
        detail = f"no operation {event.http_method} {event.api_path}; this action group has {known}"
        return BedrockResponse(body={"detail": detail}, status_code=404)

    return app


def call_operation(
    actions: Actions, operation_id: str, body: dict[str, Any], routes: tuple[Route, ...] = ROUTES
) -> tuple[int, dict[str, Any]]:
    """`operation_id` called in process with `body` (typed JSON, as a tool call carries it):
    the status and the answer the action group would give."""
    route = next((r for r in routes if r.operation_id == operation_id), None)
    if route is None:
        known = ", ".join(r.operation_id for r in routes)
        return 404, {"detail": f"no operation {operation_id!r}; the operations are {known}"}
    try:
        values = route.model().model_validate(body)
        return 200, _jsonable(route.serve(actions, values))
    except ActionError as exc:
        return exc.status, {"detail": exc.detail, "errors": [e.model_dump() for e in exc.errors]}
    except ValidationError as exc:
        return 400, {"detail": _reason(exc)}


def _register(app: BedrockAgentResolver, actions: Actions, route: Route) -> None:
    # Powertools writes path parameters <name>; Bedrock sends the templated path {name} as is.
    rule = re.sub(r"\{(\w+)\}", r"<\1>", route.path)
    model = route.model()
    schema = model.model_json_schema(by_alias=True)

    def serve(**_: str) -> BedrockResponse[Any]:
        raw = _values(app.current_event.raw_event)
        values = model.model_validate(coerce_properties(raw, schema))
        answer = _jsonable(route.serve(actions, values))
        return BedrockResponse(body=fit_answer(answer, local_files=actions.local_files))

    method = getattr(app, route.method.lower())
    method(rule, description=route.operation_id, operation_id=route.operation_id)(serve)


def _values(event: dict[str, Any]) -> dict[str, Any]:
    """The path/query parameters and the JSON body's properties, by name."""
    properties: Any = []
    if body := event.get("requestBody"):
        try:
            properties = body["content"]["application/json"].get("properties") or []
        except (KeyError, TypeError, AttributeError):
            raise UnreadableValueError(
                "requestBody is not {content: {application/json: {properties: [...]}}}"
            ) from None
    parameters = event.get("parameters") or []
    if not isinstance(parameters, list) or not isinstance(properties, list):
        raise UnreadableValueError("parameters and properties are lists of {name, type, value}")
    values: dict[str, Any] = {}
    for item in [*parameters, *properties]:
        if not isinstance(item, dict) or "name" not in item:
            raise UnreadableValueError(f"a parameter or property without a name: {item!r}")
        values[str(item["name"])] = item.get("value")
    return values


def _jsonable(answer: Any) -> dict[str, Any]:
    if isinstance(answer, BaseModel):
        dumped: dict[str, Any] = answer.model_dump(mode="json", by_alias=True)
        return dumped
    return dict(answer)


def _size(body: dict[str, Any]) -> int:
    """Bytes of `body` as it travels: compact JSON text, itself a JSON string (its quotes
    escaped) inside the Lambda's response."""
    return len(json.dumps(json.dumps(body, separators=(",", ":"))).encode())


# The lists an answer may carry, trimmed from the end (the oldest generations, the least
# similar passages), and how to ask for an answer that holds them all.
_LISTS = {
    "generations": "ask with a limit of {kept} or less for a list that fits whole, or for one "
    "generation by its id (getGeneration)",
    "passages": "ask with k of {kept} or less for passages that fit whole",
}


def fit_answer(body: dict[str, Any], *, local_files: bool = True) -> dict[str, Any]:
    """`body` within MAX_ANSWER_BYTES: first without inline rows (say so, and how to get them:
    a file where the service keeps files, else S3), then without per-field detail of quality
    metrics (in a generation's answer, or a quality answer itself), then with fewer
    generations or passages (saying how many were left out and how to ask for the rest)."""
    if _size(body) <= MAX_ANSWER_BYTES:
        return body
    body = dict(body)
    if body.get("data") is not None:
        rows = len(body["data"])
        body["data"] = None
        where = "'local' (a file)" if local_files else "'s3' with an s3://bucket/prefix location"
        body["warnings"] = [
            *body.get("warnings", []),
            f"the {rows} rows are too large for the agent's answer: ask again with destination "
            f"{where} and the same seed for the same rows",
        ]
    metrics = body.get("data_quality_metrics")
    if _size(body) > MAX_ANSWER_BYTES and isinstance(metrics, dict):
        body["data_quality_metrics"] = _overall(metrics)
    if _size(body) > MAX_ANSWER_BYTES and "distributions" in body:
        body = {
            **_overall(body),
            "warnings": [
                *body.get("warnings", []),
                "per-field detail and distributions are left out to fit the agent's answer: "
                "ask the action API itself for them",
            ],
        }
    for key, how in _LISTS.items():
        if _size(body) > MAX_ANSWER_BYTES and isinstance(body.get(key), list):
            body = _trimmed(body, key, how)
    return body


def _overall(metrics: dict[str, Any]) -> dict[str, Any]:
    """Quality metrics without distributions, each measure by its overall figure."""
    return {
        k: v["overall"] if isinstance(v, dict) and "overall" in v else v
        for k, v in metrics.items()
        if k != "distributions"
    }


def _trimmed(body: dict[str, Any], key: str, how: str) -> dict[str, Any]:
    """`body` with the longest head of its list `key` that fits, and a warning that says how
    many items were left out (the warning counted in the size)."""
    items: list[Any] = body[key]
    warnings = list(body.get("warnings", []))

    def kept(n: int) -> dict[str, Any]:
        left = len(items) - n
        note = (
            f"{left} of the {len(items)} {key} are left out, the last ones, to fit the agent's "
            f"answer: {how.format(kept=n)}"
        )
        return {**body, key: items[:n], "warnings": [*warnings, note]}

    low, high = 0, len(items)  # the answer with `low` items fits (or nothing would)
    while low < high:
        middle = (low + high + 1) // 2
        if _size(kept(middle)) <= MAX_ANSWER_BYTES:
            low = middle
        else:
            high = middle - 1
    return kept(low)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def _actions_from_environment() -> Actions:
    """Locally the action API's own output folder; in AWS no local files and no runs in the
    function's process."""
    serverless = settings.environment() is settings.Environment.AWS
    if serverless:
        # The Dagster instance's password: ECS injects it into tasks; a function reads the
        # reference the instance names (firepipe.lib.secret_refs).
        fill_from_reference(DAGSTER_PG_PASSWORD_VAR, DAGSTER_PG_PASSWORD_SECRET_VAR)
    return Actions.from_environment(serverless=serverless)


@cache
def _app() -> BedrockAgentResolver:
    """Built once per execution environment (cold start), reused by its invocations."""
    return resolver(_actions_from_environment())


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The action group's Lambda handler."""
    return _app().resolve(event, context)
