"""Late warehouse rows (issue 16, item 6): rows committed behind the watermark are re-read by the
extraction's lookback, and the reconciliation check warns, naming the day, when bronze lacks
rows the source holds."""

from pathlib import Path

import dagster as dg
import pytest

from firepipe.defs.ingestion.assets import (
    EXTRACTION_NAME,
    FIELD_READINGS,
    daily_counts_match_source,
    field_readings,
)
from firepipe.lib.extraction_sinks import DEAD_LETTERS_TABLE, FIELD_READINGS_TABLE
from firepipe.lib.field_seed import append_field_rows
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.warehouse import DuckDBWarehouseSource
from firepipe.resources.watermarks import SqliteWatermarkStore
from firepipe_tests.core.ingestion.test_extraction import late_rows, raw_rows
from firepipe_tests.defs.test_ingestion import BAD, metadata_of

TABLE = "field_readings"


@pytest.fixture
def resources(tmp_path: Path, lakehouse: LocalLakehouse) -> dict[str, object]:
    path = str(tmp_path / "field.duckdb")
    append_field_rows(path, TABLE, raw_rows(50, bad=BAD))
    return {
        "warehouse_source": DuckDBWarehouseSource(path=path, table=TABLE),
        "extraction_watermarks": SqliteWatermarkStore(path=str(tmp_path / "watermarks.db")),
        "lakehouse": lakehouse,
    }


def run(resources: dict[str, object], **extraction: object) -> dg.ExecuteInProcessResult:
    config = {"ops": {"field_readings": {"config": {"chunk_rows": 7, **extraction}}}}
    return dg.materialize(
        [field_readings, daily_counts_match_source], resources=resources, run_config=config
    )


def check_of(result: dg.ExecuteInProcessResult) -> tuple[bool, dg.AssetCheckSeverity, dict]:
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.asset_key == FIELD_READINGS
    assert evaluation.check_name == "daily_counts_match_source"
    metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    return evaluation.passed, evaluation.severity, metadata


def landed(lakehouse: LocalLakehouse) -> list[int]:
    tables = (FIELD_READINGS_TABLE, DEAD_LETTERS_TABLE)
    return sorted(i for t in tables for i in lakehouse.read(t)["id"].to_list())


def test_late_rows_are_extracted_by_the_next_run_exactly_once(
    resources: dict[str, object], lakehouse: LocalLakehouse
) -> None:
    first = run(resources)
    watermarks: SqliteWatermarkStore = resources["extraction_watermarks"]  # type: ignore[assignment]
    watermark = watermarks.get(EXTRACTION_NAME)
    assert watermark is not None
    assert watermark.id == 50
    assert check_of(first)[0]

    source: DuckDBWarehouseSource = resources["warehouse_source"]  # type: ignore[assignment]
    append_field_rows(source.path, TABLE, late_rows(watermark))
    second = run(resources)  # the asset's default lookback
    meta = metadata_of(second, FIELD_READINGS)
    assert (meta["chunks"], meta["reread_rows"], meta["lookback_s"]) == (0, 60, 300.0)
    assert landed(lakehouse) == [*range(1, 51), *range(101, 111)]
    assert watermarks.get(EXTRACTION_NAME) == watermark  # never moved back to the late rows
    passed, _, check = check_of(second)
    assert passed
    assert (check["source_rows"], check["bronze_rows"], check["days_differing"]) == (60, 60, 0)


def test_the_check_warns_naming_the_day_when_bronze_lacks_late_rows(
    resources: dict[str, object], lakehouse: LocalLakehouse
) -> None:
    run(resources, lookback_s=0)
    watermarks: SqliteWatermarkStore = resources["extraction_watermarks"]  # type: ignore[assignment]
    source: DuckDBWarehouseSource = resources["warehouse_source"]  # type: ignore[assignment]
    append_field_rows(source.path, TABLE, late_rows(watermarks.get(EXTRACTION_NAME)))

    missed = run(resources, lookback_s=0)
    assert missed.success  # a warning: the extraction itself succeeded
    assert landed(lakehouse) == list(range(1, 51))
    passed, severity, check = check_of(missed)
    assert (passed, severity) == (False, dg.AssetCheckSeverity.WARN)
    assert (check["source_rows"], check["bronze_rows"], check["days_differing"]) == (60, 50, 1)
    assert check["differences"].splitlines()[2] == "| 2026-05-01 | 60 | 50 | 10 |"

    healed = run(resources)  # the lookback reaches them now: counts match again
    assert landed(lakehouse) == [*range(1, 51), *range(101, 111)]
    assert check_of(healed)[0]
