"""silver/sensor_readings and silver/quarantine: the checks judge real failures, and a failed
blocking check stops what is built on silver."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from firepipe.core.ingestion.extraction import FIELD_READING_SCHEMA
from firepipe.core.ingestion.landing import LANDED_SCHEMA
from firepipe.core.lake.standardise import to_silver
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.defs.lake import checks
from firepipe.defs.lake.assets import BRONZE_KEYS, QUARANTINE_KEY, READINGS_KEY, silver
from firepipe.lib.lakehouse.io_manager import IcebergIOManager
from firepipe.resources.lakehouse import LocalLakehouse

NOW = datetime.now(UTC)
NO_FIELD = pl.DataFrame(schema=FIELD_READING_SCHEMA)
NO_LANDED = pl.DataFrame(schema=LANDED_SCHEMA)


def bronze_synthetic(devices: int = 4, duration_s: int = 250) -> pl.DataFrame:
    return simulate(GenerationSpec(devices=devices, duration_s=duration_s, seed=3))


def field_rows(devices: int, seconds: int, updated_at: datetime) -> pl.DataFrame:
    n = devices * seconds
    return pl.DataFrame(
        {
            "site_id": ["site-f"] * n,
            "device_id": [f"f{i // seconds}" for i in range(n)],
            "ts": [NOW - timedelta(hours=2, seconds=seconds - i % seconds) for i in range(n)],
            **{c: [1.0] * n for c in CHANNEL_NAMES},
            "updated_at": [updated_at] * n,
            "id": list(range(n)),
        },
        schema=FIELD_READING_SCHEMA,
    )


# --- the check functions -----------------------------------------------------------------------


def test_duplicate_rate_judges_what_arrived() -> None:
    bronze = bronze_synthetic()  # 1,000 rows
    few = pl.concat([bronze, bronze.head(int(bronze.height * checks.MAX_DUPLICATE_RATE))])
    replayed = pl.concat([bronze, bronze.head(300)])
    clean = checks.duplicate_rate(to_silver({"synthetic": bronze}, now=NOW))
    assert clean.passed
    assert clean.metadata["duplicate_rows"].value == 0
    assert checks.duplicate_rate(to_silver({"synthetic": few}, now=NOW)).passed
    failed = checks.duplicate_rate(to_silver({"synthetic": replayed}, now=NOW))
    assert not failed.passed
    assert failed.metadata["duplicate_rows"].value == 300
    assert failed.metadata["duplicate_rate"].value == 300 / 1_300


def test_null_rate_fails_on_a_channel_that_stopped_reporting() -> None:
    readings = to_silver({"field": field_rows(2, 50, NOW)}, now=NOW).readings
    assert checks.null_rate(readings).passed
    # f0 has no CO sensor at all: its nulls are not losses.
    no_sensor = readings.with_columns(
        pl.when(pl.col("device_id") == "f0").then(None).otherwise(pl.col("co_ppm")).alias("co_ppm")
    )
    assert checks.null_rate(no_sensor).passed
    # f1 loses 20 of its 50 CO readings: 20 of the 100 rows of devices with the sensor.
    lossy = readings.with_columns(
        pl.when(
            (pl.col("device_id") == "f1") & (pl.col("ts").rank("ordinal").over("device_id") <= 20)
        )
        .then(None)
        .otherwise(pl.col("co_ppm"))
        .alias("co_ppm")
    )
    failed = checks.null_rate(lossy)
    assert not failed.passed
    assert failed.metadata["channels_over_limit"].value == "co_ppm"
    assert "| co_ppm | 0.2 |" in failed.metadata["null_rates"].value


def test_ranges_fails_on_a_value_that_slipped_through() -> None:
    readings = to_silver({"synthetic": bronze_synthetic()}, now=NOW).readings
    assert checks.ranges(readings).passed
    broken = readings.with_columns(
        pl.when(pl.int_range(pl.len()) < 3)
        .then(150.0)
        .otherwise(pl.col("humidity_pct"))
        .cast(pl.Float32)
        .alias("humidity_pct")
    )
    failed = checks.ranges(broken)
    assert not failed.passed
    assert failed.metadata["humidity_pct"].value == 3


def test_freshness_judges_the_newest_field_arrival() -> None:
    assert checks.freshness(NO_FIELD, NOW, 24.0).passed  # synthetic only: nothing to be stale
    recent = field_rows(1, 5, NOW - timedelta(hours=3))
    assert checks.freshness(recent, NOW, 24.0).passed
    stale = checks.freshness(recent, NOW, 2.0)
    assert not stale.passed
    assert stale.metadata["age_h"].value == pytest.approx(3.0)


# --- the multi-asset in a run ------------------------------------------------------------------


def bronze_assets(synthetic: pl.DataFrame, field: pl.DataFrame, landed: pl.DataFrame) -> list:
    frames = {"synthetic": synthetic, "field": field, "landed": landed}

    def stub(source: str) -> dg.AssetsDefinition:
        @dg.asset(key=BRONZE_KEYS[source])
        def bronze() -> pl.DataFrame:
            return frames[source]

        return bronze

    return [stub(s) for s in frames]


@dg.asset(key=["gold", "downstream"], ins={"readings": dg.AssetIn(key=READINGS_KEY)})
def downstream(readings: pl.DataFrame) -> int:
    return readings.height


def run(
    lakehouse: LocalLakehouse,
    synthetic: pl.DataFrame,
    field: pl.DataFrame = NO_FIELD,
    landed: pl.DataFrame = NO_LANDED,
    max_age_h: float = 24.0,
    iceberg: bool = False,
) -> dg.ExecuteInProcessResult:
    """Bronze stubs, silver and (without `iceberg`, whose IO manager stores frames only) a
    downstream asset, the tables in `lakehouse` when `iceberg`."""
    resources: dict[str, object] = {"lakehouse": lakehouse}
    if iceberg:
        resources["io_manager"] = IcebergIOManager(lakehouse=lakehouse)
    return dg.materialize(
        [*bronze_assets(synthetic, field, landed), silver, *([] if iceberg else [downstream])],
        run_config={"ops": {"silver": {"config": {"field_max_age_h": max_age_h}}}},
        resources=resources,
        raise_on_error=False,
    )


def materialised(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_good_bronze_reaches_downstream_with_metadata(lakehouse: LocalLakehouse) -> None:
    landed = pl.DataFrame(
        {
            "device_id": ["l1", "l1", "l1"],
            "ts": [NOW - timedelta(hours=1, seconds=s) for s in (4, 3, 0)],
            "temperature_f": [68.0, 5000.0, 70.0],
            "source_file": ["in/a.csv"] * 3,
            "ingested_at": [NOW] * 3,
        }
    ).cast({"temperature_f": pl.Float32, "ts": LANDED_SCHEMA["ts"]})
    result = run(lakehouse, bronze_synthetic(), field_rows(2, 30, NOW), landed)
    assert result.success
    assert {"silver/sensor_readings", "silver/quarantine", "gold/downstream"} <= materialised(
        result
    )
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert {c.check_name for c in result.get_asset_check_evaluations()} == set(checks.CHECK_NAMES)
    meta = {
        e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    readings = meta[READINGS_KEY]
    assert readings["rows_from_synthetic"].value == 1_000
    assert readings["rows_from_field"].value == 60
    assert readings["rows_from_landed"].value == 3
    assert readings["quarantined_out_of_range"].value == 1
    assert readings["gap_rows"].value == 3  # l1: 2 seconds missing, 1 quarantined
    assert meta[QUARANTINE_KEY]["rows_out_of_range"].value == 1
    assert result.output_for_node("gold__downstream") == 1_000 + 60 + 2 + 3


@pytest.mark.parametrize(
    ("case", "failing"),
    [("replayed", "duplicate_rate"), ("stale", "freshness"), ("lossy", "null_rate")],
)
def test_a_failed_blocking_check_stops_downstream(
    lakehouse: LocalLakehouse, case: str, failing: str
) -> None:
    bronze = bronze_synthetic()
    field = field_rows(2, 30, NOW)
    max_age_h = 24.0
    if case == "replayed":
        bronze = pl.concat([bronze, bronze.head(300)])
    elif case == "stale":
        max_age_h = 1.0
        field = field_rows(2, 30, NOW - timedelta(hours=5))
    else:  # every device loses its first 100 of 250 CO readings
        bronze = bronze.with_columns(
            pl.when(pl.col("ts").rank("ordinal").over("device_id") <= 100)
            .then(None)
            .otherwise(pl.col("co_ppm"))
            .alias("co_ppm")
        )
    result = run(lakehouse, bronze, field, max_age_h=max_age_h)
    assert not result.success
    evaluations = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert evaluations[failing] is False
    # Audited before the write: neither silver table is materialised, nor anything below.
    assert materialised(result) & {"silver/sensor_readings", "silver/quarantine"} == set()
    assert "gold/downstream" not in materialised(result)


def test_silver_tables_in_the_lakehouse(lakehouse: LocalLakehouse) -> None:
    result = run(lakehouse, bronze_synthetic(), iceberg=True)
    assert result.success
    assert lakehouse.table_rows("silver.sensor_readings") == 1_000
    assert lakehouse.table_rows("silver.quarantine") == 0
    spec = lakehouse.catalog().load_table("silver.sensor_readings").spec()
    assert [f.name for f in spec.fields] == ["ts_day"]


def test_a_failed_check_leaves_the_silver_tables_as_they_were(lakehouse: LocalLakehouse) -> None:
    assert run(lakehouse, bronze_synthetic(), iceberg=True).success
    before = lakehouse.catalog().load_table("silver.sensor_readings").current_snapshot()
    replayed = pl.concat([bronze_synthetic(), bronze_synthetic().head(300)])
    assert not run(lakehouse, replayed, iceberg=True).success
    after = lakehouse.catalog().load_table("silver.sensor_readings").current_snapshot()
    assert after.snapshot_id == before.snapshot_id
    assert lakehouse.table_rows("silver.sensor_readings") == 1_000
