"""silver/sensor_readings: its duplicate-rate check judges what arrived, not what silver kept."""

import dagster as dg
import polars as pl

from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.defs.lake.assets import MAX_DUPLICATE_RATE, sensor_readings


def check_of(bronze: pl.DataFrame) -> dg.AssetCheckResult:
    events = list(sensor_readings(bronze))
    silver = next(e for e in events if isinstance(e, dg.Output)).value
    assert silver.height == silver.select("device_id", "ts").n_unique()  # deduplicated anyway
    return next(e for e in events if isinstance(e, dg.AssetCheckResult))


def test_a_few_repeated_readings_pass_and_a_replayed_batch_fails() -> None:
    bronze = simulate(GenerationSpec(devices=4, duration_s=250, seed=3))  # 1,000 rows
    few = pl.concat([bronze, bronze.head(int(bronze.height * MAX_DUPLICATE_RATE))])
    replayed = pl.concat([bronze, bronze.head(300)])
    assert check_of(bronze).passed
    assert check_of(bronze).metadata["duplicate_rows"].value == 0
    assert check_of(few).passed
    failed = check_of(replayed)
    assert not failed.passed
    assert failed.metadata["duplicate_rows"].value == 300
    assert failed.metadata["duplicate_rate"].value == 300 / 1_300
