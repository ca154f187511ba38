"""Bronze -> silver: typing, de-duplication (last copy wins), null keys, ordering."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from firepipe.core.readings import CHANNEL_NAMES, KEY_COLUMNS, READING_SCHEMA
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.core.standardise import standardise_readings

START = datetime(2026, 1, 1, tzinfo=UTC)


def bronze(rows: list[tuple[str | None, int | None, float]]) -> pl.DataFrame:
    """Loosely typed bronze rows (device, second, temperature), other channels constant."""
    n = len(rows)
    return pl.DataFrame(
        {
            "site_id": ["site-0"] * n,
            "device_id": [d for d, _, _ in rows],
            "ts": [None if s is None else START + timedelta(seconds=s) for _, s, _ in rows],
            "scenario": ["clean_baseline"] * n,
            "is_fire": [False] * n,
            "ignition_ts": pl.Series([None] * n, dtype=pl.Datetime("us", "UTC")),
            "seconds_since_ignition": pl.Series([None] * n, dtype=pl.Int64),
            **{name: [1.5] * n for name in CHANNEL_NAMES},  # Float64 in bronze
            "temperature_c": [t for _, _, t in rows],
        }
    )


def test_duplicates_keep_the_last_copy_in_input_order():
    frame = bronze([("b", 0, 20.0), ("a", 1, 21.0), ("b", 0, 30.0), ("a", 0, 22.0), ("b", 0, 25.0)])
    out = standardise_readings(frame)
    assert out.height == 3
    survivor = out.filter((pl.col("device_id") == "b") & (pl.col("ts") == START))
    assert survivor["temperature_c"].to_list() == [25.0]  # last copy, neither max nor sorted


def test_rows_with_null_keys_are_dropped():
    frame = bronze([("a", 0, 20.0), (None, 1, 21.0), ("a", None, 22.0), ("a", 2, 23.0)])
    out = standardise_readings(frame)
    assert out["temperature_c"].to_list() == [20.0, 23.0]


def test_output_sorted_by_device_then_time():
    rows = [("b", 2, 1.0), ("a", 5, 2.0), ("b", 0, 3.0), ("a", 1, 4.0), ("c", 0, 5.0)]
    out = standardise_readings(bronze(rows))
    assert out["device_id"].to_list() == ["a", "a", "b", "b", "c"]
    assert [t.second for t in out["ts"]] == [1, 5, 0, 2, 0]
    assert out["temperature_c"].to_list() == [4.0, 2.0, 3.0, 1.0, 5.0]  # rows move whole


def test_cast_to_the_reading_schema_keeping_values():
    frame = bronze([("a", 0, 20.25)]).with_columns(
        pl.lit("ignored").alias("extra"),
        pl.col("ts").cast(pl.Datetime("ns", "UTC")),
        pl.lit(3).alias("seconds_since_ignition"),
    )
    out = standardise_readings(frame)
    assert dict(out.schema) == READING_SCHEMA
    assert out.columns == list(READING_SCHEMA)
    assert out["temperature_c"][0] == 20.25
    assert out["seconds_since_ignition"][0] == 3.0
    assert out["ts"][0] == START


@pytest.mark.parametrize("column", ["ts", "co_ppm", "is_fire"])
def test_missing_column_is_named(column):
    with pytest.raises(ValueError, match=column):
        standardise_readings(bronze([("a", 0, 20.0)]).drop(column))


def test_shuffled_duplicated_simulation_round_trips():
    silver = simulate(GenerationSpec(devices=5, duration_s=30, seed=2)).select(list(READING_SCHEMA))
    # A retried upload: a shuffled copy of some rows arrives after the originals.
    noisy = pl.concat([silver, silver.sample(fraction=0.5, seed=1)]).sample(
        fraction=1.0, shuffle=True, seed=2
    )
    out = standardise_readings(noisy)
    assert out.equals(silver.sort(KEY_COLUMNS))


def test_readings_within_one_second_collapse_to_the_last():
    frame = bronze([("a", 0, 20.0), ("a", 0, 21.0)]).with_columns(
        pl.Series(
            "ts", [START + timedelta(milliseconds=200), START + timedelta(milliseconds=700)]
        ).cast(pl.Datetime("us", "UTC"))
    )
    out = standardise_readings(frame)
    assert out["ts"].to_list() == [START]
    assert out["temperature_c"].to_list() == [21.0]
