"""Synthetic readings: the physics simulator's output, landed in bronze."""

from collections.abc import Iterator
from datetime import datetime

import dagster as dg
import polars as pl

from firepipe.core import quality
from firepipe.core.simulation.simulator import GenerationSpec, simulate

ASSET_KEY = dg.AssetKey(["bronze", "synthetic_readings"])


class SyntheticReadingsConfig(dg.Config):
    """How much synthetic data one run generates."""

    devices: int = 24
    duration_s: int = 600
    fire_share: float = 0.5
    sites: int = 4
    seed: int = 0
    start: str = "2026-01-01T00:00:00+00:00"


@dg.asset(
    key=ASSET_KEY,
    group_name="generation",
    kinds={"polars", "iceberg"},
    check_specs=[dg.AssetCheckSpec("label_consistency", asset=ASSET_KEY, blocking=True)],
)
def synthetic_readings(
    config: SyntheticReadingsConfig,
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
    """Physics-informed fire-sensor readings, one row per simulated device per second.

    Each device is a room with a ceiling-mounted multi-sensor: a clean baseline, or a t-squared
    flaming fire whose heat, smoke and gases reach it through Alpert's ceiling jet.
    """
    spec = GenerationSpec(
        devices=config.devices,
        duration_s=config.duration_s,
        fire_share=config.fire_share,
        sites=config.sites,
        seed=config.seed,
        start=datetime.fromisoformat(config.start),
    )
    readings = simulate(spec)
    fire_devices = readings.filter("is_fire").select("device_id").n_unique()
    yield dg.Output(
        readings,
        metadata={"devices": spec.devices, "seed": spec.seed, "fire_devices": fire_devices},
    )
    inconsistent = quality.label_inconsistencies(readings)
    yield dg.AssetCheckResult(
        check_name="label_consistency",
        passed=inconsistent == 0,
        metadata={"inconsistent_rows": inconsistent},
    )
