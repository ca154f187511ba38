"""The three operations against the running service: values, files, refusals, keys."""

from __future__ import annotations

import os
import re
import uuid
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import requests

from firepipe.services.actions.app import create_app
from firepipe.services.inference.keys import Access, ApiKeys, RateLimiter, load_access
from firepipe_tests.services.actions.conftest import KEY, SCHEMA, running


def generate(http: requests.Session, url: str, **body: object) -> requests.Response:
    return http.post(
        f"{url}/generate-synthetic-data", json={"data_type": "custom", "schema": SCHEMA, **body}
    )


def test_inline_rows_honour_the_schema_and_the_seed(open_url, http):  # type: ignore[no-untyped-def]
    answer = generate(http, open_url, volume=40, seed=7, compliance_requirements=["GDPR"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["generation_id"])
    assert (body["status"], body["records_generated"], body["seed"]) == ("completed", 40, 7)
    assert body["output_location"] is None
    assert body["errors"] == []
    rows = body["data"]
    assert len(rows) == 40
    assert all(list(r) == [f["name"] for f in SCHEMA["fields"]] for r in rows)
    assert len({r["customer_id"] for r in rows}) == 40
    assert all(uuid.UUID(r["customer_id"]).version == 4 for r in rows)
    assert all(18 <= r["age"] <= 90 for r in rows)
    assert all(r["email"].endswith(("@example.com", "@example.org", "@example.net")) for r in rows)
    assert all(re.fullmatch(r"AB-\d{3}", r["code"]) for r in rows)
    joined = [r["joined"] for r in rows]
    assert joined.count(None) == 2  # 5% of 40
    assert all(date.fromisoformat(d) >= date(2024, 1, 1) for d in joined if d is not None)
    metrics = body["data_quality_metrics"]
    assert metrics["rows"] == 40
    assert metrics["validity"]["overall"] == 1.0
    assert metrics["completeness"]["fields"]["joined"] == pytest.approx(38 / 40)
    # GDPR notes for the email field, as warnings of the answer
    assert any(w.startswith("email: GDPR") for w in body["warnings"])
    again = generate(http, open_url, volume=40, seed=7, compliance_requirements=["GDPR"])
    assert again.json()["data"] == rows  # the same seed, the same rows


def test_local_file_is_written_under_the_root_and_reads_back(open_url, http, output_root: Path):  # type: ignore[no-untyped-def]
    answer = generate(
        http,
        open_url,
        volume=1500,
        seed=3,
        output_format="parquet",
        destination={"type": "local", "location": "team/a"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    path = Path(body["output_location"])
    assert path == output_root / "team" / "a" / f"{body['generation_id']}.parquet"
    frame = pl.read_parquet(path)
    assert frame.height == body["records_generated"] == 1500
    assert body["data"] is None
    assert frame.columns == [f["name"] for f in SCHEMA["fields"]]
    assert frame["customer_id"].n_unique() == 1500
    assert frame["age"].min() >= 18
    assert frame["age"].max() <= 90

    default = generate(http, open_url, volume=5, output_format="csv", destination={"type": "local"})
    location = Path(default.json()["output_location"])
    assert location.parent == output_root
    assert location.suffix == ".csv"
    assert pl.read_csv(location).height == 5


@pytest.mark.parametrize("location", ["../out", "/tmp/elsewhere", "a/../../b", "a\x00b"])
def test_a_location_outside_the_root_is_refused(open_url, http, output_root, location):  # type: ignore[no-untyped-def]
    answer = generate(http, open_url, volume=5, destination={"type": "local", "location": location})
    assert answer.status_code == 400
    assert "inside the output folder" in answer.json()["detail"]
    assert not (output_root.parent / "out").exists()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"volume": 1001}, "at most 1000 rows"),
        ({"volume": 5, "data_type": "kitchen_fire"}, "use one of ('custom', 'fire_scenarios')"),
        ({"volume": 5, "destination": {"type": "s3"}}, "needs a location s3://bucket/prefix"),
        ({"volume": 5, "destination": {"type": "ftp"}}, "destination type 'ftp'"),
        ({"volume": None}, "data_type 'custom' needs a schema and a volume"),
        ({"volume": 5, "output_format": "xlsx"}, "output_format 'xlsx'"),
    ],
)
def test_requests_that_cannot_be_served_say_why(open_url, http, body, words):  # type: ignore[no-untyped-def]
    answer = generate(http, open_url, **body)
    assert answer.status_code == 400
    assert words in answer.json()["detail"]


def test_an_invalid_schema_is_refused_with_its_errors(open_url, http):  # type: ignore[no-untyped-def]
    schema = {"fields": [{"name": "n", "type": "integer", "constraints": {"min": 5, "max": 1}}]}
    answer = http.post(
        f"{open_url}/generate-synthetic-data",
        json={"data_type": "custom", "volume": 5, "schema": schema},
    )
    assert answer.status_code == 400
    assert answer.json()["errors"] == [
        {"field": "n", "message": "field 'n': min 5 is greater than max 1", "severity": "error"}
    ]
    unique = {"fields": [{"name": "b", "type": "boolean", "constraints": {"unique": True}}]}
    answer = http.post(
        f"{open_url}/generate-synthetic-data",
        json={"data_type": "custom", "volume": 3, "schema": unique},
    )
    assert answer.status_code == 400
    assert "only 2 distinct values fit for 3 rows" in answer.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{not json", "json_invalid"),
        (
            b'{"data_type": "custom", "volume": 0, "schema": {"fields": [{"name": "a", '
            b'"type": "integer"}]}}',
            "volume",
        ),
        (b'{"data_type": "custom", "volume": "many", "schema": {"fields": []}}', "volume"),
        (b'{"data_type": "custom", "volume": 5, "schema": {"fields": "a"}}', "fields"),
        (b'{"data_type": "custom", "volume": 5, "schema": {"fields": [{"name": "a"}]}}', "type"),
    ],
)
def test_malformed_requests_get_a_4xx_with_the_reason(open_url, http, body, where):  # type: ignore[no-untyped-def]
    answer = http.post(
        f"{open_url}/generate-synthetic-data",
        data=body,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert where in answer.text


def test_validate_schema_answers_errors_suggestions_and_compliance(open_url, http):  # type: ignore[no-untyped-def]
    schema = {
        "fields": [
            {"name": "patient_name", "type": "string"},
            {"name": "amount", "type": "flaot"},
        ]
    }
    answer = http.post(
        f"{open_url}/validate-schema",
        json={"schema": schema, "compliance_requirements": ["HIPAA"]},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["valid"] is False
    assert [(e["field"], e["severity"]) for e in body["errors"]] == [("amount", "error")]
    assert "change the type of 'amount' to 'float'" in body["suggestions"]
    assert {(i["field"], i["category"]) for i in body["compliance_issues"]} == {
        ("patient_name", "patient identifier"),
        ("patient_name", "personal name"),
    }
    good = http.post(f"{open_url}/validate-schema", json={"schema": SCHEMA})
    assert good.status_code == 200
    assert good.json()["valid"] is True
    assert http.post(f"{open_url}/validate-schema", json={"schema": "x"}).status_code == 422


def test_quality_metrics_of_posted_rows(open_url, http):  # type: ignore[no-untyped-def]
    schema = {
        "fields": [
            {"name": "age", "type": "integer", "constraints": {"min": 0, "max": 120}},
            {"name": "score", "type": "float"},
        ]
    }
    data = [{"age": 30, "score": 0.5}, {"age": 200, "score": 1}, {"age": 30}]
    answer = http.post(
        f"{open_url}/calculate-quality-metrics", json={"schema": schema, "data": data}
    )
    assert answer.status_code == 200, answer.text
    metrics = answer.json()
    assert metrics["rows"] == 3
    assert metrics["completeness"]["fields"] == {"age": 1.0, "score": pytest.approx(2 / 3)}
    assert metrics["validity"]["fields"]["age"] == pytest.approx(2 / 3)  # 200 is out of range
    assert metrics["uniqueness"]["fields"]["age"] == pytest.approx(2 / 3)
    assert metrics["distributions"]["age"]["max"] == 200.0
    for bad, words in (
        ([{"age": 1, "height": 2}], "not fields of the schema: ['height']"),
        ([{"age": 1}, {"age": "old"}], "field 'age' mixes value types"),
    ):
        refused = http.post(
            f"{open_url}/calculate-quality-metrics", json={"schema": schema, "data": bad}
        )
        assert refused.status_code == 400
        assert words in refused.json()["detail"]


def test_keys_are_required_except_for_the_document(output_root, http, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FIREPIPE_API_KEYS", f"other,{KEY}")
    access = load_access(os.environ, sagemaker=False)
    with running(create_app(access, output_root)) as url:
        body = {"schema": SCHEMA}
        for headers in ({}, {"x-api-key": "wrong"}):
            answer = http.post(f"{url}/validate-schema", json=body, headers=headers)
            assert answer.status_code == 401
            assert answer.json() == {"detail": "a valid x-api-key header is required"}
        # a bad body without a key learns nothing about the format
        assert http.post(f"{url}/validate-schema", data=b"{").status_code == 401
        ok = http.post(f"{url}/validate-schema", json=body, headers={"x-api-key": KEY})
        assert ok.status_code == 200
        assert ok.json()["valid"] is True
        document = http.get(f"{url}/openapi.json")
        assert document.status_code == 200
        assert document.json()["openapi"] == "3.0.0"


def test_a_key_over_its_rate_waits(output_root, http):  # type: ignore[no-untyped-def]
    """The inference service's limiter, per key: a burst of 2 at 0.1/s, the third request 429
    with the seconds to wait; the document is not counted."""
    access = Access(ApiKeys([KEY]), RateLimiter(0.1, 2))
    with running(create_app(access, output_root)) as url:
        body, headers = {"schema": SCHEMA}, {"x-api-key": KEY}
        for _ in range(3):
            assert http.get(f"{url}/openapi.json").status_code == 200
        codes = [http.post(f"{url}/validate-schema", json=body, headers=headers) for _ in range(3)]
        assert [c.status_code for c in codes] == [200, 200, 429]
        assert codes[2].json() == {"detail": "rate limit of this key exceeded"}
        assert 9 <= int(codes[2].headers["retry-after"]) <= 10
