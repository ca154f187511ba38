"""The reading schema and the channel catalog."""

import polars as pl
import pytest

from firepipe.core.readings import (
    CHANNEL_NAMES,
    CHANNELS,
    KEY_COLUMNS,
    READING_SCHEMA,
)

ID_COLUMNS = [
    "site_id",
    "device_id",
    "ts",
    "scenario",
    "is_fire",
    "ignition_ts",
    "seconds_since_ignition",
]
# Channel names carry their units as a suffix.
UNIT_SUFFIX = {
    "degC": "_c",
    "%RH": "_pct",
    "%/m": "_pct_per_m",
    "ug/m3": "_ugm3",
    "ppm": "_ppm",
    "ppb": "_ppb",
}


def test_schema_is_ids_then_channels_in_catalog_order():
    assert list(READING_SCHEMA) == [*ID_COLUMNS, *CHANNEL_NAMES]
    assert len(set(CHANNEL_NAMES)) == len(CHANNELS) == 8


def test_schema_types():
    utc_us = pl.Datetime("us", "UTC")
    assert READING_SCHEMA["ts"] == utc_us
    assert READING_SCHEMA["ignition_ts"] == utc_us
    assert READING_SCHEMA["is_fire"] == pl.Boolean
    assert READING_SCHEMA["seconds_since_ignition"] == pl.Float32
    assert all(READING_SCHEMA[name] == pl.Float32 for name in CHANNEL_NAMES)
    assert all(READING_SCHEMA[key] != pl.Float32 for key in KEY_COLUMNS)
    assert set(KEY_COLUMNS) == {"device_id", "ts"}


@pytest.mark.parametrize("ch", CHANNELS, ids=lambda c: c.name)
def test_channel_catalog_is_plausible(ch):
    assert ch.name.endswith(UNIT_SUFFIX[ch.unit])
    assert ch.min_value < ch.max_value
    if ch.unit.startswith("%"):
        assert (ch.min_value, ch.max_value) == (0.0, 100.0)
    if ch.name != "temperature_c":  # concentrations and fractions cannot go negative
        assert ch.min_value == 0.0
    assert ch.description
