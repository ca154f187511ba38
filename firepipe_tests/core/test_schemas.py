"""The pandera contract of bronze synthetic readings."""

from datetime import UTC, datetime, timedelta

import pandera.polars as pa
import polars as pl
import pytest
from pandera.config import config_context

from firepipe.core.readings import CHANNELS, READING_SCHEMA
from firepipe.core.schemas import SYNTHETIC_READINGS, non_nullable_columns, validate_readings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BRONZE_SCHEMA = {
    **READING_SCHEMA,
    "scenario_family": pl.String,
    "fault": pl.String,
    "batch": pl.String,
}


def readings(rows: int = 20) -> pl.DataFrame:
    """Two devices of a flaming partition: one ignites at T0, one has a dropout fault."""
    half = rows // 2
    return pl.DataFrame(
        {
            "site_id": ["site-0"] * rows,
            "device_id": ["d0"] * half + ["d1"] * (rows - half),
            "ts": [T0 + timedelta(seconds=i % half) for i in range(rows)],
            "scenario": ["flaming_fast"] * rows,
            "is_fire": [True] * rows,
            "ignition_ts": [T0] * rows,
            "seconds_since_ignition": [float(i % half) for i in range(rows)],
            **{c.name: [c.min_value + 1.0] * half + [None] * (rows - half) for c in CHANNELS},
            "scenario_family": ["flaming"] * rows,
            "fault": [None] * half + ["dropout"] * (rows - half),
            "batch": ["000"] * rows,
        },
        schema=BRONZE_SCHEMA,
    )


def test_the_contract_covers_the_reading_schema_and_the_partition_columns():
    columns = SYNTHETIC_READINGS.columns
    assert list(columns) == list(BRONZE_SCHEMA)
    for name, dtype in BRONZE_SCHEMA.items():
        assert columns[name].dtype.type == dtype, name  # the contract is the simulator's schema
    assert set(non_nullable_columns()) == {
        "site_id", "device_id", "ts", "scenario", "is_fire", "scenario_family", "batch",
    }  # fmt: skip
    for c in CHANNELS:
        (check,) = columns[c.name].checks
        assert check.statistics["min_value"] == c.min_value
        assert check.statistics["max_value"] == c.max_value


def test_valid_readings_pass_lazily_and_eagerly():
    assert validate_readings(readings().lazy()) == []
    SYNTHETIC_READINGS.validate(readings())  # pandera's own eager validation agrees


def test_schema_level_problems_are_described_without_reading_data():
    frame = (
        readings()
        .with_columns(pl.col("co_ppm").cast(pl.Float64), pl.col("ts").dt.replace_time_zone(None))
        .with_columns(pl.lit(1).alias("extra"))
        .drop("batch")
    )
    assert sorted(validate_readings(frame.lazy())) == sorted(
        [
            "unexpected column 'extra'",
            "missing column 'batch'",
            "co_ppm: expected dtype('Float32'), got Float64",
            "ts: expected dtype('Datetime(time_unit='us', time_zone='UTC')'), got "
            "Datetime(time_unit='us', time_zone=None)",
        ]
    )


def test_out_of_range_and_unknown_categories_are_found_in_the_sample():
    frame = readings().with_columns(
        pl.when(pl.col("device_id") == "d0")
        .then(pl.lit(20_000.0))
        .otherwise(pl.col("co_ppm"))
        .cast(pl.Float32)
        .alias("co_ppm"),
        pl.lit(float("nan"), pl.Float32).alias("humidity_pct"),
        pl.lit("cooking").alias("scenario_family"),
    )
    failures = validate_readings(frame.lazy())
    assert failures == [
        "humidity_pct: in_range(0.0, 100.0) failed on 20 of 20 sampled row(s), e.g. NaN",
        "co_ppm: in_range(0.0, 10000.0) failed on 10 of 20 sampled row(s), e.g. 20000.0",
        "scenario_family: isin(['baseline', 'flaming', 'smouldering', 'nuisance']) failed on "
        "20 of 20 sampled row(s), e.g. cooking",
    ]


def test_value_checks_see_a_bounded_sample_but_nulls_are_counted_exactly():
    frame = readings(2000).with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(None).otherwise("device_id").alias("device_id"),
        pl.when(pl.int_range(pl.len()) == 1999)
        .then(pl.lit("boom"))
        .otherwise("fault")
        .alias("fault"),
    )
    failures = validate_readings(frame.lazy(), sample_rows=100, seed=0)
    assert failures[0] == "device_id: 3 null value(s) in a non-nullable column"
    # One bad fault among 2000 rows is seen only when the sample happens to hold it.
    whole = validate_readings(frame.lazy(), sample_rows=2000)
    assert whole[1].startswith("fault: isin(['drift', 'stuck', 'dropout', 'spike']) failed on 1 of")


def test_the_validation_depth_variable_cannot_switch_the_value_checks_off():
    bad = readings().with_columns(pl.lit(-5.0, pl.Float32).alias("h2_ppm"))
    with pytest.raises(pa.errors.SchemaError, match="h2_ppm"):
        SYNTHETIC_READINGS.validate(bad)
    with config_context(validation_depth="SCHEMA_ONLY"):
        SYNTHETIC_READINGS.validate(bad)  # pandera alone now lets the bad value through
        assert validate_readings(bad.lazy()) == [
            "h2_ppm: in_range(0.0, 10000.0) failed on 20 of 20 sampled row(s), e.g. -5.0"
        ]
