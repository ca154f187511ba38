"""The Bedrock action group's Lambda on recorded events of Bedrock's format (events/): string
values, JSON and Java-style nested values, a GET with parameters, a malformed body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from firepipe.services.actions import bedrock_lambda
from firepipe.services.actions.bedrock_lambda import ROUTES, Route, fit_answer, resolver
from firepipe.services.actions.bedrock_values import (
    UnreadableValueError,
    coerce_properties,
    parse_java_style,
)
from firepipe.services.actions.models import GenerateRequest, QualityRequest
from firepipe.services.actions.operations import ActionError, Actions

EVENTS = Path(__file__).parent / "events"


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def answer(app: Any, incoming: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The Lambda's answer, its status and its body (parsed from the JSON string)."""
    out: dict[str, Any] = app.resolve(incoming, None)
    response = out["response"]
    body = json.loads(response["responseBody"]["application/json"]["body"])
    return out, response["httpStatusCode"], body


class _NoRuns:
    """No fire generations: the Dagster instance stays out of these tests."""

    def occupied(self) -> dict[str, set[str]]:
        return {}

    def launch(self, generation_id: str, make_plan: Any) -> tuple[Any, list[Any]]:
        raise AssertionError("no fire runs here")

    def runs_of(self, generation_id: str) -> list[Any]:
        return []

    def generations(self, limit: int) -> list[Any]:
        return []


@pytest.fixture
def app(firepipe_home: Path, tmp_path: Path) -> Any:
    return resolver(Actions(tmp_path / "generated", runs=_NoRuns()))


@pytest.mark.parametrize("name", ["generate_json_strings.json", "generate_java_style.json"])
def test_generate_reads_both_value_forms(app: Any, name: str) -> None:
    out, status, body = answer(app, event(name))
    assert out["messageVersion"] == "1.0"
    assert out["response"]["actionGroup"] == "firepipe-actions"
    assert out["response"]["apiPath"] == "/generate-synthetic-data"
    assert out["response"]["httpMethod"] == "POST"
    assert isinstance(out["response"]["responseBody"]["application/json"]["body"], str)
    assert status == 200
    assert body["records_generated"] == 20
    assert body["seed"] == 42
    assert [set(row) for row in body["data"]] == [{"customer_id", "age", "email"}] * 20
    assert all(18 <= row["age"] <= 90 for row in body["data"])  # min/max read as integers
    assert len({row["customer_id"] for row in body["data"]}) == 20
    assert any("GDPR" in w for w in body["warnings"])  # the compliance list was read


def test_both_value_forms_give_the_same_rows(app: Any) -> None:
    rows = [
        answer(app, event(n))[2]["data"]
        for n in ("generate_json_strings.json", "generate_java_style.json")
    ]
    assert rows[0] == rows[1]


def test_validate_schema_answers_invalid_with_errors_per_field(app: Any) -> None:
    _, status, body = answer(app, event("validate_schema.json"))
    assert status == 200
    assert body["valid"] is False
    errors = {e["field"]: e["message"] for e in body["errors"]}
    assert "did you mean 'integer'" in errors["age"]
    # min=10, max=1 came as untyped Java-style text: compared as numbers, not as text
    assert "min 10 is greater than max 1" in errors["score"]
    assert {(i["field"], i["framework"]) for i in body["compliance_issues"]} >= {("email", "GDPR")}


def test_quality_metrics_of_java_style_rows(app: Any) -> None:
    _, status, body = answer(app, event("calculate_quality_metrics.json"))
    assert status == 200
    assert body["rows"] == 3
    assert body["completeness"]["fields"] == {"id": 1.0, "email": pytest.approx(2 / 3)}
    assert body["uniqueness"]["fields"]["id"] == pytest.approx(2 / 3)  # ids 1, 2, 2 as integers
    assert body["distributions"]["id"]["max"] == 2.0


def test_malformed_body_is_a_400_answer_with_the_reason(app: Any) -> None:
    out, status, body = answer(app, event("malformed_body.json"))
    assert status == 400
    assert out["response"]["apiPath"] == "/generate-synthetic-data"
    assert body["detail"] == "volume: expected integer, got 'twenty'"


def test_truncated_json_value_is_a_400(app: Any) -> None:
    incoming = event("malformed_body.json")
    incoming["requestBody"]["content"]["application/json"]["properties"][1]["value"] = "20"
    _, status, body = answer(app, incoming)
    assert status == 400
    assert body["detail"].startswith("schema: neither JSON (Expecting ',' delimiter")


def test_model_refusal_is_a_400_naming_the_field(app: Any) -> None:
    incoming = event("generate_json_strings.json")
    props = incoming["requestBody"]["content"]["application/json"]["properties"]
    props.append({"name": "colour", "type": "string", "value": "red"})
    props[1]["value"] = "0"
    _, status, body = answer(app, incoming)
    assert status == 400
    assert "volume: Input should be greater than or equal to 1" in body["detail"]
    assert "colour: Extra inputs are not permitted" in body["detail"]


def test_action_error_keeps_its_status_and_reason(app: Any) -> None:
    incoming = event("generate_json_strings.json")
    props = incoming["requestBody"]["content"]["application/json"]["properties"]
    props[0]["value"] = "weather"
    _, status, body = answer(app, incoming)
    assert status == 400
    assert "data_type 'weather'" in body["detail"]


def test_request_body_of_the_wrong_shape_is_a_400(app: Any) -> None:
    incoming = event("generate_json_strings.json")
    incoming["requestBody"] = {"content": "not a map"}
    _, status, body = answer(app, incoming)
    assert status == 400
    assert "requestBody is not" in body["detail"]


def test_unknown_api_path_is_a_404_listing_the_operations(app: Any) -> None:
    _, status, body = answer(app, event("unknown_path.json"))
    assert status == 404
    assert "POST /delete-everything" in body["detail"]
    assert "POST /validate-schema" in body["detail"]


class _Lookup(BaseModel):
    generation_id: str
    limit: int = 10


def _lookup(actions: Actions, request: _Lookup) -> dict[str, Any]:
    """Stands in for a history operation: answers what it was asked, typed."""
    if request.generation_id == "missing":
        raise ActionError("no generation 'missing'", status=404)
    return {"generation_id": request.generation_id, "limit": request.limit}


def test_generation_by_path_parameter_and_list_by_query_parameter(app: Any) -> None:
    made = answer(app, event("generate_json_strings.json"))[2]
    incoming = event("get_generation.json")
    incoming["parameters"][0]["value"] = made["generation_id"]
    out, status, body = answer(app, incoming)
    assert status == 200
    assert out["response"]["apiPath"] == "/generations/{generation_id}"
    assert body["generation_id"] == made["generation_id"]
    assert body["data_type"] == "custom"
    assert body["records_generated"] == 20
    assert answer(app, event("get_generation.json"))[1:] == (
        404,
        {"detail": "no generation 'gen-42'", "errors": []},
    )
    listing = {**incoming, "apiPath": "/generations", "parameters": []}
    listing["parameters"] = [{"name": "limit", "type": "integer", "value": "5"}]
    _, status, body = answer(app, listing)
    assert status == 200
    assert [g["generation_id"] for g in body["generations"]] == [made["generation_id"]]
    listing["parameters"][0]["value"] = "five"
    assert answer(app, listing)[1:] == (400, {"detail": "limit: expected integer, got 'five'"})


def test_a_stand_in_route_is_one_row(firepipe_home: Path, tmp_path: Path) -> None:
    lookup = Route("lookUp", "GET", "/look-up/{generation_id}", _lookup, _Lookup)
    app = resolver(Actions(tmp_path), (*ROUTES, lookup))
    incoming = {**event("get_generation.json"), "apiPath": "/look-up/{generation_id}"}
    incoming["parameters"].append({"name": "limit", "type": "integer", "value": "5"})
    out, status, body = answer(app, incoming)
    assert status == 200
    assert body == {"generation_id": "gen-42", "limit": 5}
    assert out["response"]["apiPath"] == "/look-up/{generation_id}"
    incoming["parameters"][0]["value"] = "missing"
    assert answer(app, incoming)[1:] == (404, {"detail": "no generation 'missing'", "errors": []})


def test_large_inline_answer_drops_the_rows_and_says_how_to_get_them(app: Any) -> None:
    incoming = event("generate_json_strings.json")
    incoming["requestBody"]["content"]["application/json"]["properties"][1]["value"] = "400"
    _, status, body = answer(app, incoming)
    assert status == 200
    assert body["records_generated"] == 400
    assert body["data"] is None
    assert "400 rows are too large" in body["warnings"][-1]
    assert "destination 'local'" in body["warnings"][-1]


def test_fit_answer_drops_distributions_when_still_too_large() -> None:
    metrics = {
        "rows": 3,
        "completeness": {"overall": 0.5, "fields": {f"f{i}": 0.5 for i in range(2000)}},
        "distributions": {f"f{i}": {"min": 1} for i in range(2000)},
    }
    fitted = fit_answer({"data": [{"a": 1}], "warnings": [], "data_quality_metrics": metrics})
    assert fitted["data_quality_metrics"] == {"rows": 3, "completeness": 0.5}


def test_a_quality_answer_too_large_keeps_its_overall_figures() -> None:
    wide = {
        "rows": 3,
        "completeness": {"overall": 0.5, "fields": {f"f{i}": 0.5 for i in range(2000)}},
        "validity": {"overall": 1.0, "fields": {f"f{i}": 1.0 for i in range(2000)}},
        "distributions": {f"f{i}": {"min": 1} for i in range(2000)},
    }
    fitted = fit_answer(wide)
    assert {k: v for k, v in fitted.items() if k != "warnings"} == {
        "rows": 3,
        "completeness": 0.5,
        "validity": 1.0,
    }
    assert "distributions are left out" in fitted["warnings"][0]
    small = {"rows": 3, "completeness": {"overall": 1.0}, "distributions": {}}
    assert fit_answer(small) == small


def test_rows_too_large_without_local_files_are_pointed_to_s3() -> None:
    body = {"data": [{"a": "x" * 100}] * 400, "warnings": []}
    fitted = fit_answer(body, local_files=False)
    assert fitted["data"] is None
    assert "destination 's3'" in fitted["warnings"][-1]
    assert "'local'" not in fitted["warnings"][-1]


def _generation(i: int) -> dict[str, Any]:
    """A fire generation as listGenerations answers it: four runs with their checks."""
    families = ("baseline", "flaming", "smouldering", "nuisance")
    runs = [
        {
            "run_id": f"{i:08x}-1d2e-4f5a-9b8c-{j:012x}",
            "partition": f"{1 + i % 15:03d}|{family}",
            "status": "SUCCESS",
            "checks": {"row_count": True, "schema": True, "distribution": i % 3 != 0},
        }
        for j, family in enumerate(families)
    ]
    return {
        "generation_id": f"{i:032x}",
        "data_type": "fire_scenarios",
        "status": "succeeded",
        "records_generated": 60_000,
        "output_location": "bronze.synthetic_readings",
        "started_at": "2026-01-01T00:00:00+00:00",
        "duration_s": 41.5,
        "seed": i,
        "runs": runs,
        "partitions": [r["partition"] for r in runs],
    }


def _passage(i: int) -> dict[str, Any]:
    """A knowledge-base chunk of about 256 wordpieces (~200 words) with quotes to escape."""
    words = " ".join(
        f'"CO{i}" rises before smoke obscuration in smouldering {j}' for j in range(25)
    )
    return {"source": "docs/physics.md", "heading": f"Section {i}", "text": words, "score": 0.5}


@pytest.mark.parametrize(
    ("key", "items", "hint"),
    [
        ("generations", [_generation(i) for i in range(200)], "ask with a limit of {kept} or less"),
        ("passages", [_passage(i) for i in range(20)], "ask with k of {kept} or less"),
    ],
)
def test_fit_answer_trims_a_long_list_from_the_end(
    key: str, items: list[dict[str, Any]], hint: str
) -> None:
    body = {key: items}
    assert bedrock_lambda._size(body) > bedrock_lambda.MAX_ANSWER_BYTES  # it needs trimming
    fitted = fit_answer(body)
    kept = len(fitted[key])
    assert 0 < kept < len(items)
    assert fitted[key] == items[:kept]  # the head, in order: newest / most similar first
    assert bedrock_lambda._size(fitted) <= bedrock_lambda.MAX_ANSWER_BYTES
    (warning,) = fitted["warnings"]
    assert warning.startswith(f"{len(items) - kept} of the {len(items)} {key} are left out")
    assert hint.format(kept=kept) in warning
    # As many as fit: one more item would not.
    assert bedrock_lambda._size({**fitted, key: items[: kept + 1]}) > (
        bedrock_lambda.MAX_ANSWER_BYTES
    )
    assert body == {key: items}  # the caller's answer is left as it was


def test_search_with_k_20_long_passages_fits_bedrock_s_cap(
    firepipe_home: Path, tmp_path: Path
) -> None:
    class _Long:
        source, heading, score = "docs/physics.md", "Smouldering", 0.5
        text = _passage(0)["text"]

    class _Many:
        def search(self, question: str, k: int) -> list[_Long]:
            return [_Long() for _ in range(k)]

    app = resolver(Actions(tmp_path, runs=_NoRuns(), knowledge_base=_Many()))
    incoming = event("unknown_path.json")
    incoming["apiPath"] = "/search-knowledge-base"
    query = {"name": "query", "type": "string", "value": "which gas comes first?"}
    k = {"name": "k", "type": "integer", "value": "20"}
    incoming["requestBody"] = {"content": {"application/json": {"properties": [query, k]}}}
    out, status, body = answer(app, incoming)
    assert status == 200
    assert len(json.dumps(out).encode()) < 25_000  # Bedrock's documented cap on the response
    assert 0 < len(body["passages"]) < 20
    assert body["warnings"][0].startswith(f"{20 - len(body['passages'])} of the 20 passages")


def test_handler_builds_actions_once_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path))
    monkeypatch.setenv("FIREPIPE_ENV", "local")
    bedrock_lambda._app.cache_clear()
    try:
        first = bedrock_lambda.handler(event("generate_json_strings.json"), None)
        assert first["response"]["httpStatusCode"] == 200
        assert bedrock_lambda._app() is bedrock_lambda._app()
    finally:
        bedrock_lambda._app.cache_clear()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("[GDPR, HIPAA]", ["GDPR", "HIPAA"]),
        ("[]", []),
        ("{type=local, location=runs/a}", {"type": "local", "location": "runs/a"}),
        (
            "[{name=a, type=string, constraints={format=ID-##, nullable=true}}]",
            [
                {
                    "name": "a",
                    "type": "string",
                    "constraints": {"format": "ID-##", "nullable": "true"},
                }
            ],
        ),
        ("{note=a=b}", {"note": "a=b"}),
        ("['x', \"y\"]", ["x", "y"]),
    ],
)
def test_parse_java_style(text: str, parsed: Any) -> None:
    assert parse_java_style(text) == parsed


@pytest.mark.parametrize("text", ["[a, b", "{a}", "{=1}", "[a] tail", "plain", "{a=1 b=2"])
def test_parse_java_style_refuses(text: str) -> None:
    with pytest.raises(UnreadableValueError):
        parse_java_style(text)


def test_coerce_by_schema_types() -> None:
    schema = GenerateRequest.model_json_schema(by_alias=True)
    values = {
        "volume": "1e3",
        "seed": "null",
        "schema": "{fields=[{name=x, type=float, constraints={min=-1.5, max=2, unique=false}}]}",
    }
    coerced = coerce_properties(values, schema)
    assert coerced["volume"] == 1000
    assert coerced["seed"] is None
    constraints = coerced["schema"]["fields"][0]["constraints"]
    assert constraints == {"min": -1.5, "max": 2, "unique": False}
    with pytest.raises(UnreadableValueError, match=r"volume: expected integer, got '2\.5'"):
        coerce_properties({"volume": "2.5"}, schema)


def test_json_text_keeps_its_own_types() -> None:
    """A JSON string "7" in a row stays text; only untyped (Java-style) leaves are read."""
    schema = QualityRequest.model_json_schema(by_alias=True)
    coerced = coerce_properties({"data": '[{"code": "7"}]'}, schema)
    assert coerced["data"] == [{"code": "7"}]
    assert coerce_properties({"data": "[{code=7}]"}, schema)["data"] == [{"code": 7}]


class _Passage:
    source, heading, text, score = "docs/physics.md", "Smouldering", "CO rises first.", 0.8


class _KnowledgeBase:
    def search(self, question: str, k: int) -> list[_Passage]:
        self.asked = (question, k)
        return [_Passage()]


def test_search_knowledge_base(firepipe_home: Path, tmp_path: Path) -> None:
    knowledge_base = _KnowledgeBase()
    app = resolver(Actions(tmp_path, runs=_NoRuns(), knowledge_base=knowledge_base))
    incoming = event("unknown_path.json")
    incoming["apiPath"] = "/search-knowledge-base"
    incoming["requestBody"] = {
        "content": {
            "application/json": {
                "properties": [
                    {"name": "query", "type": "string", "value": "which gas comes first?"},
                    {"name": "k", "type": "integer", "value": "3"},
                ]
            }
        }
    }
    _, status, body = answer(app, incoming)
    assert status == 200
    assert knowledge_base.asked == ("which gas comes first?", 3)
    assert body["passages"][0]["source"] == "docs/physics.md"
    assert body["passages"][0]["text"] == "CO rises first."


class _Launched(_NoRuns):
    """Records the plan of a fire generation and answers its runs as queued."""

    def launch(self, generation_id: str, make_plan: Any) -> tuple[Any, list[Any]]:
        from datetime import UTC, datetime

        from firepipe.services.actions.runs import RunState

        plan = self.plan = make_plan(self.occupied())
        created = datetime(2026, 1, 1, tzinfo=UTC)
        return plan, [
            RunState(f"r{i}", r.partition_key, "QUEUED", created) for i, r in enumerate(plan.runs)
        ]


def test_fire_generation_with_a_java_style_mix(firepipe_home: Path, tmp_path: Path) -> None:
    runs = _Launched()
    app = resolver(Actions(tmp_path, runs=runs))
    _, status, body = answer(app, event("generate_fire_java_style.json"))
    assert status == 200
    assert body["status"] == "queued"
    assert body["seed"] == 9
    assert body["records_generated"] == 40 * 30
    devices = {run.family: run.settings.devices for run in runs.plan.runs}
    assert devices == {"flaming": 30, "smouldering": 10}
    assert {run.settings.fault_share for run in runs.plan.runs} == {0.0}
    assert {run.use_gpu for run in runs.plan.runs} == {False}


def test_routes_match_the_committed_document() -> None:
    """Every operation of docs/openapi/actions.json has its row, with its method and path."""
    document = json.loads((Path(__file__).parents[3] / "docs/openapi/actions.json").read_text())
    documented = {
        (op["operationId"], method.upper(), path)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if path != "/openapi.json"
    }
    assert documented == {(r.operation_id, r.method, r.path) for r in ROUTES}
