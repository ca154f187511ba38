"""The ingestion assets (dg.materialize with real local resources: a DuckDB field warehouse, a
SQLite watermark store, a landing folder or S3 on moto, an Iceberg lake) and their sensors
(dg.build_sensor_context against the same)."""

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from firepipe.core.ingestion.extraction import Watermark
from firepipe.core.ingestion.landing import LANDED_SCHEMA
from firepipe.defs.ingestion.assets import (
    EXTRACTION_NAME,
    FIELD_DEAD_LETTERS,
    FIELD_READINGS,
    LANDED_READINGS,
    LANDED_TABLE,
    field_readings,
    landed_readings,
)
from firepipe.defs.ingestion.schedules import field_extraction_daily
from firepipe.defs.ingestion.sensors import (
    EXTRACTION_AFTER_TAG,
    LANDING_AFTER_TAG,
    SENSOR_RUN_MAX_RUNTIME_S,
    field_warehouse_sensor,
    landing_sensor,
)
from firepipe.lib.extraction_sinks import DEAD_LETTERS_TABLE, FIELD_READINGS_TABLE
from firepipe.lib.field_seed import append_field_rows, landing_demo_files, seed_landing
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.landing import LandingZone, LocalLandingZone, S3LandingZone
from firepipe.resources.warehouse import DuckDBWarehouseSource
from firepipe.resources.watermarks import SqliteWatermarkStore
from firepipe_tests.core.ingestion.test_extraction import T0, raw_rows

BAD = {17: {"co_ppm": "ERR"}, 31: {"ts": "soon"}}
REGION = "eu-west-1"


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouseSource:
    path = str(tmp_path / "field.duckdb")
    append_field_rows(path, "field_readings", raw_rows(50, bad=BAD))
    return DuckDBWarehouseSource(path=path, table="field_readings")


@pytest.fixture
def watermarks(tmp_path: Path) -> SqliteWatermarkStore:
    return SqliteWatermarkStore(path=str(tmp_path / "watermarks.db"))


@pytest.fixture
def zone(tmp_path: Path) -> LocalLandingZone:
    # settle_s=0: the tests drop files and ingest them at once.
    return LocalLandingZone(root=str(tmp_path / "landing"), settle_s=0.0)


def metadata_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def extract_run(resources: dict[str, object], chunk_rows: int = 7, **kwargs):
    config = {"ops": {"field_readings": {"config": {"chunk_rows": chunk_rows}}}}
    return dg.materialize([field_readings], resources=resources, run_config=config, **kwargs)


def test_extraction_asset_lands_new_rows_once_and_reports_chunks_and_watermark(
    warehouse: DuckDBWarehouseSource,
    watermarks: SqliteWatermarkStore,
    lakehouse: LocalLakehouse,
) -> None:
    resources = {
        "warehouse_source": warehouse,
        "extraction_watermarks": watermarks,
        "lakehouse": lakehouse,
    }
    first = metadata_of(extract_run(resources), FIELD_READINGS)
    last = Watermark(T0 + timedelta(seconds=50 // 3), 50)
    assert (first["chunks"], first["rows"], first["dead_letters"]) == (8, 48, 2)
    assert (first["watermark_before"], first["watermark"]) == ("None", str(last))
    assert lakehouse.table_rows(FIELD_READINGS_TABLE) == 48
    assert lakehouse.read(DEAD_LETTERS_TABLE)["id"].sort().to_list() == [17, 31]

    again = extract_run(resources)
    assert metadata_of(again, FIELD_READINGS)["chunks"] == 0
    assert metadata_of(again, FIELD_DEAD_LETTERS)["rows"] == 0
    append_field_rows(warehouse.path, warehouse.table, raw_rows(5, first_id=51))
    third = metadata_of(extract_run(resources), FIELD_READINGS)
    assert (third["chunks"], third["rows"], third["watermark_before"]) == (1, 5, str(last))
    ids = lakehouse.read(FIELD_READINGS_TABLE)["id"].sort().to_list()
    assert ids == [i for i in range(1, 56) if i not in BAD]


def test_extraction_asset_creates_both_tables_when_the_source_is_empty(
    tmp_path: Path, watermarks: SqliteWatermarkStore, lakehouse: LocalLakehouse
) -> None:
    path = str(tmp_path / "empty.duckdb")
    append_field_rows(path, "field_readings", raw_rows(0))
    resources = {
        "warehouse_source": DuckDBWarehouseSource(path=path, table="field_readings"),
        "extraction_watermarks": watermarks,
        "lakehouse": lakehouse,
    }
    assert metadata_of(extract_run(resources), FIELD_READINGS)["chunks"] == 0
    assert lakehouse.list_tables() == [DEAD_LETTERS_TABLE, FIELD_READINGS_TABLE]
    assert lakehouse.table_rows(FIELD_READINGS_TABLE) == 0


def landing_run(zone: LandingZone, lakehouse: LocalLakehouse) -> dict[str, object]:
    result = dg.materialize(
        [landed_readings], resources={"landing_zone": zone, "lakehouse": lakehouse}
    )
    return metadata_of(result, LANDED_READINGS)


def test_landed_files_are_ingested_once_and_the_corrupt_one_quarantined_with_its_reason(
    zone: LocalLandingZone, lakehouse: LocalLakehouse
) -> None:
    assert len(seed_landing(zone)) == 3
    first = landing_run(zone, lakehouse)
    assert first["files_ingested"] == 2
    assert first["files_quarantined"] == 1
    assert first["rows"] == 240  # 2 devices x 120 s
    quarantined = str(first["quarantined"])
    assert "incoming/demo/truncated_upload.parquet" in quarantined
    assert "unreadable_file" in quarantined
    assert "not valid parquet" in quarantined
    reason = zone.quarantine_reason("quarantine/demo/truncated_upload.parquet")
    assert reason["rule"] == "unreadable_file"

    bronze = lakehouse.read(LANDED_TABLE)
    by_file = dict(bronze.group_by("source_file").len().iter_rows())
    assert by_file == {
        "incoming/demo/gateway_us_units.csv": 120,
        "incoming/demo/gateway.jsonl": 120,
    }
    csv_rows = bronze.filter(pl.col("source_file").str.ends_with(".csv"))
    assert csv_rows["temperature_c"].is_null().all()
    assert csv_rows["temperature_f"].is_between(32.0, 2200.0).all()

    # A restart (a new resource over the same folder) and the same files dropped again.
    restarted = LocalLandingZone(root=zone.root, settle_s=0.0)
    assert seed_landing(restarted) == []
    for name, data in landing_demo_files().items():
        restarted.drop(f"again/{name}", data)
    second = landing_run(restarted, lakehouse)
    assert (second["files_ingested"], second["duplicates"]) == (0, 2)
    assert second["files_quarantined"] == 1  # corrupt bytes are refused wherever they land
    assert lakehouse.table_rows(LANDED_TABLE) == 240


def test_an_empty_landing_zone_still_creates_the_table(
    zone: LocalLandingZone, lakehouse: LocalLakehouse
) -> None:
    metadata = landing_run(zone, lakehouse)
    assert (metadata["files_ingested"], metadata["ledger"]) == (0, "start")
    assert lakehouse.read(LANDED_TABLE).schema == pl.Schema(LANDED_SCHEMA)


def sensor_context(instance: dg.DagsterInstance, cursor: str | None = None, **resources):
    return dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A persistent instance in a temporary folder: what a schedule's context needs."""
    with dg.instance_for_test() as instance:
        yield instance


def test_warehouse_sensor_asks_once_per_watermark_and_again_after_a_failed_run(
    warehouse: DuckDBWarehouseSource,
    watermarks: SqliteWatermarkStore,
    lakehouse: LocalLakehouse,
    tmp_path: Path,
    instance: dg.DagsterInstance,
) -> None:

    def tick() -> dg.RunRequest | dg.SkipReason:
        context = sensor_context(
            instance, warehouse_source=warehouse, extraction_watermarks=watermarks
        )
        return field_warehouse_sensor(context)

    request = tick()
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "field_readings after start attempt 1"
    assert request.tags[EXTRACTION_AFTER_TAG] == "start"
    assert request.tags["dagster/max_runtime"] == str(SENSOR_RUN_MAX_RUNTIME_S)
    assert tick().run_key == request.run_key  # a restarted daemon asks for the same run

    # That run fails (the warehouse file is gone meanwhile): the watermark stays, ask again.
    gone = DuckDBWarehouseSource(path=str(tmp_path / "missing.duckdb"), table="field_readings")
    failed = extract_run(
        {"warehouse_source": gone, "extraction_watermarks": watermarks, "lakehouse": lakehouse},
        instance=instance,
        tags=request.tags,
        raise_on_error=False,
    )
    assert not failed.success
    assert tick().run_key == "field_readings after start attempt 2"

    # A run in flight for the same watermark: wait for it.
    in_flight = instance.add_run(
        DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, tags=request.tags)
    )
    assert "already running" in tick().skip_message
    resources = {"warehouse_source": warehouse, "extraction_watermarks": watermarks}
    extract_run({**resources, "lakehouse": lakehouse}, chunk_rows=100)
    watermark = watermarks.get(EXTRACTION_NAME)
    assert f"nothing after {watermark}" in tick().skip_message
    # The watermark moved on while that run still runs: still one extraction at a time, from
    # the sensor and from the daily schedule alike (they share the extraction lock).
    append_field_rows(warehouse.path, warehouse.table, raw_rows(1, first_id=51))
    assert f"already running: {in_flight.run_id}" in tick().skip_message
    assert f"already running: {in_flight.run_id}" in str(daily_tick(instance, watermarks))
    instance.report_run_failed(in_flight, "its worker was killed")

    assert tick().run_key == f"field_readings after {watermark} attempt 1"
    daily = daily_tick(instance, watermarks)
    assert isinstance(daily, dg.RunRequest)
    assert daily.tags[EXTRACTION_AFTER_TAG] == str(watermark)


def daily_tick(
    instance: dg.DagsterInstance, watermarks: SqliteWatermarkStore
) -> dg.RunRequest | str:
    """The daily extraction schedule's request, or its skip message."""
    with dg.build_schedule_context(
        instance=instance, resources={"extraction_watermarks": watermarks}
    ) as context:
        result = field_extraction_daily(context)
    return result if isinstance(result, dg.RunRequest) else str(result.skip_message)


def test_landing_sensor_asks_once_per_cursor_and_again_after_a_failed_run(
    zone: LocalLandingZone, lakehouse: LocalLakehouse
) -> None:
    instance = dg.DagsterInstance.ephemeral()

    def tick() -> dg.RunRequest | dg.SkipReason:
        return landing_sensor(sensor_context(instance, landing_zone=zone))

    assert isinstance(tick(), dg.SkipReason)
    zone.drop("a.csv", b"device_id,ts\nd1,2026-11-01T08:00:00Z\n")
    zone.drop("b.jsonl", b'{"device_id": "d2", "ts": "2026-11-01T08:00:00Z"}\n')
    request = tick()
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "landing after start attempt 1"
    assert request.tags[LANDING_AFTER_TAG] == "start"
    assert tick().run_key == request.run_key  # a restarted daemon asks for the same run

    # That run fails before ingesting anything: the zone's cursor stays, so ask again.
    instance.add_run(
        DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.FAILURE, tags=request.tags)
    )
    assert tick().run_key == "landing after start attempt 2"
    # One in flight: wait for it.
    in_flight = instance.add_run(
        DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, tags=request.tags)
    )
    assert "already running" in tick().skip_message

    # Ingested: nothing is asked for until another file lands, then after the new ledger, once
    # no ingestion run is in flight.
    landing_run(zone, lakehouse)
    assert isinstance(tick(), dg.SkipReason)
    after = zone.load_ledger().fingerprint()
    zone.drop("c.csv", b"device_id,ts\nd3,2026-11-01T08:00:00Z\n")
    assert f"already running: {in_flight.run_id}" in tick().skip_message
    instance.report_run_failed(in_flight, "its worker was killed")
    assert tick().run_key == f"landing after {after} attempt 1"


def test_landing_sensor_waits_for_the_second_look_at_an_incomplete_file(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"), settle_s=3600.0)
    zone.drop("a.csv", b"device_id,ts\nd1,2026-11-01T08:0")  # no final newline: may be partial

    def tick() -> dg.RunRequest | dg.SkipReason:
        return landing_sensor(sensor_context(dg.DagsterInstance.ephemeral(), landing_zone=zone))

    assert isinstance(tick(), dg.RunRequest)  # a first look is due
    metadata = landing_run(zone, lakehouse)
    assert (metadata["files_ingested"], metadata["files_waiting"]) == (0, 1)
    assert "does not end with a newline" in str(metadata["waiting"])
    assert isinstance(tick(), dg.SkipReason)  # the second look is an hour away


@pytest.mark.aws
def test_s3_landing_through_the_sensor_and_the_asset(
    moto_endpoint: str, aws_credentials: None, lakehouse: LocalLakehouse
) -> None:
    boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION).create_bucket(
        Bucket="landing-sensor", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    zone = S3LandingZone(
        bucket="landing-sensor",
        prefix="landing",
        region=REGION,
        endpoint_url=moto_endpoint,
        settle_s=0.0,
    )
    assert len(seed_landing(zone)) == 3
    request = landing_sensor(sensor_context(dg.DagsterInstance.ephemeral(), landing_zone=zone))
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "landing after start attempt 1"
    metadata = landing_run(zone, lakehouse)
    assert (metadata["files_ingested"], metadata["files_quarantined"]) == (2, 1)
    assert len(zone.load_ledger().handled) == 3
    assert seed_landing(zone) == []
    skipped = landing_sensor(sensor_context(dg.DagsterInstance.ephemeral(), landing_zone=zone))
    assert isinstance(skipped, dg.SkipReason)
