"""Athena ad hoc SQL: against moto's Athena (execution, polling, results it is told to return)
and botocore's Stubber where moto has nothing to say (pages, failures, a query that hangs)."""

from collections.abc import Iterator
from datetime import UTC, date, datetime

import boto3
import polars as pl
import pytest
import requests
from botocore.stub import Stubber

from firepipe.resources import query
from firepipe.resources.query import AthenaQueryEngine, QueryError

pytestmark = pytest.mark.aws
REGION = "eu-west-1"
OUTPUT = "s3://athena-results/firepipe/"
COLUMNS = [
    {"Name": "site_id", "Type": "varchar"},
    {"Name": "reading_date", "Type": "date"},
    {"Name": "readings", "Type": "bigint"},
    {"Name": "max_temperature_c", "Type": "double"},
    {"Name": "any_fire", "Type": "boolean"},
    {"Name": "first_at", "Type": "timestamp(3) with time zone"},
]


def _row(*values: str | None) -> dict[str, object]:
    return {"Data": [{} if v is None else {"VarCharValue": v} for v in values]}


HEADER = _row(*(c["Name"] for c in COLUMNS))
ROW_A = _row("a", "2026-03-01", "45", "22.5", "true", "2026-03-01 00:00:00.000 UTC")
ROW_B = _row("b", "2026-03-02", "10", None, "false", None)
EXPECTED = pl.DataFrame(
    {
        "site_id": ["a", "b"],
        "reading_date": [date(2026, 3, 1), date(2026, 3, 2)],
        "readings": [45, 10],
        "max_temperature_c": [22.5, None],
        "any_fire": [True, False],
        "first_at": pl.Series([datetime(2026, 3, 1, tzinfo=UTC), None]).cast(
            pl.Datetime("us", "UTC")
        ),
    }
)


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    query._athena_client.cache_clear()
    yield
    query._athena_client.cache_clear()


def test_a_query_on_moto_runs_in_the_workgroup_and_is_typed(
    moto_endpoint: str, aws_credentials: None
) -> None:
    athena = boto3.client("athena", endpoint_url=moto_endpoint, region_name=REGION)
    athena.create_work_group(
        Name="firepipe", Configuration={"ResultConfiguration": {"OutputLocation": OUTPUT}}
    )
    # moto runs no SQL: it returns the rows queued through its API, header row first as Athena.
    queued = {
        "region": REGION,
        "results": [{"rows": [HEADER, ROW_A, ROW_B], "column_info": COLUMNS}],
    }
    requests.post(f"{moto_endpoint}/moto-api/static/athena/query-results", json=queued, timeout=10)
    engine = AthenaQueryEngine(
        region=REGION,
        workgroup="firepipe",
        output_location=OUTPUT,
        database="analytics",
        endpoint_url=moto_endpoint,
        poll_interval_s=0.01,
    )
    sql = "select * from analytics.site_daily_summary"
    out = engine.query(sql)
    assert out.to_dicts() == EXPECTED.to_dicts()
    assert out.schema == EXPECTED.schema

    [query_id] = athena.list_query_executions(WorkGroup="firepipe")["QueryExecutionIds"]
    execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
    assert execution["Query"] == sql
    assert execution["QueryExecutionContext"]["Database"] == "analytics"
    assert execution["ResultConfiguration"]["OutputLocation"].startswith(OUTPUT)


def _stubbed(monkeypatch: pytest.MonkeyPatch) -> Stubber:
    client = boto3.client(
        "athena", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    monkeypatch.setattr(query, "_athena_client", lambda region, endpoint_url: client)
    return Stubber(client)


def _engine(**kwargs: object) -> AthenaQueryEngine:
    return AthenaQueryEngine(
        region=REGION, workgroup="firepipe", output_location=OUTPUT, poll_interval_s=0.0, **kwargs
    )


def _execution(state: str, reason: str | None = None) -> dict[str, object]:
    status: dict[str, object] = {"State": state}
    if reason:
        status["StateChangeReason"] = reason
    return {"QueryExecution": {"QueryExecutionId": "q1", "StatementType": "DML", "Status": status}}


def test_results_are_read_across_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = _stubbed(monkeypatch)
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"})
    stub.add_response("get_query_execution", _execution("QUEUED"), {"QueryExecutionId": "q1"})
    stub.add_response("get_query_execution", _execution("SUCCEEDED"), {"QueryExecutionId": "q1"})
    page = {"ResultSetMetadata": {"ColumnInfo": COLUMNS}}
    stub.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [HEADER, ROW_A], **page}, "NextToken": "t2"},
        {"QueryExecutionId": "q1"},
    )
    stub.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [ROW_B], **page}},
        {"QueryExecutionId": "q1", "NextToken": "t2"},
    )
    with stub:
        out = _engine().query("select * from analytics.site_daily_summary")
    stub.assert_no_pending_responses()
    assert out.to_dicts() == EXPECTED.to_dicts()


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_a_failed_query_says_why(monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    stub = _stubbed(monkeypatch)
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"})
    reason = "TABLE_NOT_FOUND: line 1:15: Table 'awsdatacatalog.silver.nope' does not exist"
    stub.add_response("get_query_execution", _execution(state, reason))
    with stub, pytest.raises(QueryError, match=f"q1 {state}: TABLE_NOT_FOUND"):
        _engine().query("select * from silver.nope")


def test_a_query_past_its_timeout_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = _stubbed(monkeypatch)
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"})
    stub.add_response("get_query_execution", _execution("RUNNING"))
    stub.add_response("stop_query_execution", {}, {"QueryExecutionId": "q1"})
    with stub, pytest.raises(QueryError, match="still RUNNING after 0 s: stopped"):
        _engine(timeout_s=0.0).query("select 1")
    stub.assert_no_pending_responses()


def test_results_must_go_to_s3() -> None:
    engine = AthenaQueryEngine(region=REGION, workgroup="w", output_location="/tmp/results")
    with pytest.raises(QueryError, match="s3://"):
        engine.query("select 1")
