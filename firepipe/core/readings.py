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

# Synthetic readings also say which scenario family staged them and which sensor fault, if any,
# the device has (the simulator injects these; field data has neither).
FAULTS: tuple[str, ...] = ("drift", "stuck", "dropout", "spike")
SYNTHETIC_SCHEMA: dict[str, pl.DataType] = {
    **READING_SCHEMA,
    "scenario_family": pl.String(),
    "fault": pl.String(),
}

# The ISO 8601 shapes a device or a landed file may write a time in: 'T' or a space between
# date and time, an optional fraction, and an offset (Z, +hh:mm, +hhmm) or none (taken as UTC,
# the platform's one time zone).
_ISO_WITH_OFFSET: tuple[str, ...] = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_ISO_NAIVE: tuple[str, ...] = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f")


def parse_iso_times(text: pl.Expr) -> pl.Expr:
    """ISO 8601 text -> UTC microsecond timestamps, row by row: each row may use any of the
    accepted shapes, whatever its neighbours use; null where none fits."""
    zoned = [text.str.to_datetime(f, time_unit="us", strict=False) for f in _ISO_WITH_OFFSET]
    naive = [
        text.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone("UTC")
        for f in _ISO_NAIVE
    ]
    return pl.coalesce([t.dt.convert_time_zone("UTC").cast(TIMESTAMP) for t in (*zoned, *naive)])
