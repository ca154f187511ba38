"""The dbt project through Dagster: lineage from silver, models built from the local Iceberg
lake by `dbt build`, and dbt tests as asset checks."""

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from firepipe.defs.dbt.assets import SILVER_ASSET_KEY, analytics_models
from firepipe.lib.lakehouse import tables
from firepipe.resources.dbt import (
    DBT_MANIFEST_PATH,
    DbtManifestMissingError,
    dbt_resource_for,
    require_manifest,
)
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.settings import Environment
from firepipe_tests.defs.dbt.silver_sample import sample_silver

STAGING = dg.AssetKey(["analytics", "stg_sensor_readings"])
MODELS = {
    STAGING,
    dg.AssetKey(["analytics", "site_daily_summary"]),
    dg.AssetKey(["analytics", "device_alarm_events"]),
    dg.AssetKey(["analytics", "site_daily_alarm_rates"]),
}


def test_models_hang_off_the_silver_asset() -> None:
    assert set(analytics_models.keys) == MODELS
    deps = analytics_models.asset_deps
    assert deps[STAGING] == {SILVER_ASSET_KEY}
    assert deps[dg.AssetKey(["analytics", "site_daily_alarm_rates"])] == {
        STAGING,
        dg.AssetKey(["analytics", "device_alarm_events"]),
    }
    assert {analytics_models.group_names_by_key[k] for k in MODELS} == {"analytics"}
    checks = {c.name for c in analytics_models.check_keys}
    # Generic tests written in dbt/tests/generic, and a singular test pinned to its model.
    assert "unique_combination_site_daily_alarm_rates_site_id__reading_date__label" in checks
    assert "alarm_events_match_rates" in checks


def test_a_missing_manifest_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(DbtManifestMissingError, match="make dbt-manifest"):
        require_manifest(tmp_path / "manifest.json")
    assert require_manifest() == DBT_MANIFEST_PATH


def _write_silver(home: Path, frame: pl.DataFrame) -> None:
    lake = LocalLakehouse(root=str(home / "lake"))
    tables.write_table(lake.catalog(), "silver.sensor_readings", frame)


def _build(selection: dg.AssetSelection | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [analytics_models],
        selection=selection,
        resources={"dbt": dbt_resource_for(Environment.LOCAL)},
        raise_on_error=False,
    )


@pytest.mark.slow
def test_dbt_build_summarises_sites_and_rates_alarms(firepipe_home: Path) -> None:
    _write_silver(firepipe_home, sample_silver())
    result = _build()
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == MODELS
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(analytics_models.check_keys)
    assert [e.check_name for e in evaluations if not e.passed] == []

    with duckdb.connect(str(firepipe_home / "dbt" / "firepipe.duckdb"), read_only=True) as con:
        rates = con.sql(
            "select site_id, cast(reading_date as varchar) as day, label, alarm_events, "
            "device_hours * 3600 as device_seconds, alarms_per_1000_device_hours "
            "from analytics.site_daily_alarm_rates order by all"
        ).pl()
        summary = con.sql(
            "select site_id, cast(reading_date as varchar) as day, devices, fire_devices, "
            "readings, gap_share, max_smoke_obscuration_pct_per_m, max_temperature_c "
            "from analytics.site_daily_summary order by all"
        ).pl()
    # a1 (fire): 30 s with 2 gap seconds, alarms at 10 s and at 20 s (the second alarm goes on
    # across its gap); a2 (no fire): 20 s with 3 gap seconds, never alarms; b1 (unlabelled):
    # heat alarm at 23:59:55, then the next UTC day without one.
    assert rates.rows() == [
        ("a", "2026-03-01", "fire", 2, pytest.approx(28.0), pytest.approx(2 * 1000 * 3600 / 28)),
        ("a", "2026-03-01", "no_fire", 0, pytest.approx(17.0), 0.0),
        ("b", "2026-03-01", "unlabelled", 1, pytest.approx(10.0), pytest.approx(360_000.0)),
        ("b", "2026-03-02", "unlabelled", 0, pytest.approx(10.0), 0.0),
    ]
    assert summary.rows() == [
        ("a", "2026-03-01", 2, 1, 45, pytest.approx(5 / 50), pytest.approx(7.0), 22.0),
        ("b", "2026-03-01", 1, 0, 10, 0.0, 0.0, 90.0),
        ("b", "2026-03-02", 1, 0, 10, 0.0, 0.0, 40.0),
    ]


@pytest.mark.slow
def test_a_reading_out_of_range_fails_its_dbt_test(firepipe_home: Path) -> None:
    silver = sample_silver()
    hot = silver.with_columns(
        pl.when(pl.col("device_id") == "a2", ~pl.col("is_gap"))
        .then(pl.lit(1500.0, dtype=pl.Float32))
        .otherwise(pl.col("temperature_c"))
        .alias("temperature_c")
    )
    _write_silver(firepipe_home, hot)
    result = _build(dg.AssetSelection.assets(STAGING))
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"accepted_range_stg_sensor_readings_temperature_c__1200___40"}
