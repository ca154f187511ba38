"""The shape of a fire-sensor reading: one row per device per second, all channels.

Channel names carry their units. The physical ranges are what a plausible indoor multi-sensor
device can report; values outside them are sensor faults or unit mistakes, never fires.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

TIMESTAMP = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Channel:
    name: str
    unit: str
    min_value: float
    max_value: float
    description: str


CHANNELS: tuple[Channel, ...] = (
    Channel("temperature_c", "degC", -40.0, 1200.0, "air temperature at the detector"),
    Channel("humidity_pct", "%RH", 0.0, 100.0, "relative humidity"),
    Channel("smoke_obscuration_pct_per_m", "%/m", 0.0, 100.0, "optical smoke obscuration"),
    Channel("pm25_ugm3", "ug/m3", 0.0, 50_000.0, "fine particulate mass concentration"),
    Channel("co_ppm", "ppm", 0.0, 10_000.0, "carbon monoxide"),
    Channel("co2_ppm", "ppm", 0.0, 100_000.0, "carbon dioxide"),
    Channel("voc_ppb", "ppb", 0.0, 100_000.0, "total volatile organic compounds"),
    Channel("h2_ppm", "ppm", 0.0, 10_000.0, "hydrogen"),
)
CHANNEL_NAMES: tuple[str, ...] = tuple(c.name for c in CHANNELS)

KEY_COLUMNS: tuple[str, ...] = ("device_id", "ts")

READING_SCHEMA: dict[str, pl.DataType] = {
    "site_id": pl.String(),
    "device_id": pl.String(),
    "ts": TIMESTAMP,
    "scenario": pl.String(),
    "is_fire": pl.Boolean(),
    "ignition_ts": TIMESTAMP,
    "seconds_since_ignition": pl.Float32(),
    **{name: pl.Float32() for name in CHANNEL_NAMES},
}
