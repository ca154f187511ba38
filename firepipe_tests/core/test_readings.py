"""The reading schema and the channel catalog."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from firepipe.core.readings import (
    CHANNEL_NAMES,
    CHANNELS,
    KEY_COLUMNS,
    READING_SCHEMA,
    TIMESTAMP,
    parse_iso_times,
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


def test_iso_times_parse_row_by_row_whatever_their_neighbours_use():
    text = [
        "2026-05-01T08:00:00Z",
        "2026-05-01 08:00:01",
        "2026-05-01T10:00:02.5+02:00",
        "2026-05-01T08:00:03.25",
        "2026-05-01 08:00:04+0000",
        "yesterday",
        None,
    ]
    t0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    expected = [
        t0,
        t0 + timedelta(seconds=1),
        t0 + timedelta(seconds=2.5),
        t0 + timedelta(seconds=3.25),
        t0 + timedelta(seconds=4),
        None,
        None,
    ]
    for order in (slice(None), slice(None, None, -1)):  # the first row no longer decides
        parsed = pl.select(parse_iso_times(pl.lit(pl.Series(text[order])))).to_series()
        assert parsed.dtype == TIMESTAMP
        assert parsed.to_list() == expected[order]
