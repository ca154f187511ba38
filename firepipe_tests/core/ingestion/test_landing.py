"""Parsing landed files into readings, and the landing cursor's order."""

import io
import pickle
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from firepipe.core.ingestion.landing import (
    LANDED_SCHEMA,
    LandedObject,
    LandingCursor,
    QuarantineError,
    parse_landed_file,
    pending,
)
from firepipe.core.readings import TIMESTAMP

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)

CSV = b"""device_id,ts,site_id,temperature_c,co_ppm
d1,2026-11-01T08:00:00Z,s1,21.5,
d1,2026-11-01T10:00:01+02:00,s1,22.25,3
"""


def test_csv_is_typed_and_carries_lineage() -> None:
    frame = parse_landed_file("incoming/a.csv", CSV, NOW)
    assert frame.columns == [
        "site_id",
        "device_id",
        "ts",
        "temperature_c",
        "co_ppm",
        "source_file",
        "ingested_at",
    ]
    assert frame.schema["ts"] == TIMESTAMP
    assert frame.schema["temperature_c"] == pl.Float32
    # The offset is honoured: 10:00:01+02:00 is 08:00:01 UTC.
    assert frame["ts"].to_list() == [T0, T0 + timedelta(seconds=1)]
    assert frame["temperature_c"].to_list() == [21.5, 22.25]
    assert frame["co_ppm"].to_list() == [None, 3.0]
    assert frame["source_file"].to_list() == ["incoming/a.csv"] * 2
    assert frame["ingested_at"].to_list() == [NOW, NOW]


def test_csv_booleans_and_mixed_iso_times_are_typed() -> None:
    # What polars' write_csv makes of a reading frame: true/false, and any ISO shape of time.
    data = b"device_id,ts,is_fire\nd1,2026-11-01T08:00:00Z,true\nd1,2026-11-01 08:00:01,False\n"
    frame = parse_landed_file("incoming/a.csv", data, NOW)
    assert frame["is_fire"].to_list() == [True, False]
    assert frame["ts"].to_list() == [T0, T0 + timedelta(seconds=1)]
    with pytest.raises(QuarantineError, match="bad_column_type: is_fire: 'maybe'"):
        parse_landed_file(
            "incoming/b.csv", b"device_id,ts,is_fire\nd1,2026-11-01 08:00:00,maybe\n", NOW
        )


def test_parquet_with_naive_timestamps_is_read_as_utc() -> None:
    source = pl.DataFrame(
        {
            "device_id": ["d2", "d3"],
            "ts": [datetime(2026, 11, 1, 8), datetime(2026, 11, 1, 8, 0, 5)],
            "smoke_obscuration_pct_per_m": [0.5, 4.25],
            "co2_ppm": [410, 900],  # integers are channels too
        }
    )
    buffer = io.BytesIO()
    source.write_parquet(buffer)
    frame = parse_landed_file("incoming/b.parquet", buffer.getvalue(), NOW)
    assert frame["ts"].to_list() == [T0, T0 + timedelta(seconds=5)]
    assert frame["co2_ppm"].dtype == pl.Float32
    assert frame["co2_ppm"].to_list() == [410.0, 900.0]
    assert frame["smoke_obscuration_pct_per_m"].to_list() == [0.5, 4.25]
    assert "site_id" not in frame.columns


def test_json_lines_with_numbers_and_nulls() -> None:
    data = (
        b'{"device_id": "d4", "ts": "2026-11-01T08:00:00Z", "h2_ppm": 1.5, "is_fire": false}\n'
        b'{"device_id": "d4", "ts": "2026-11-01T08:00:02Z", "h2_ppm": null, "is_fire": true}\n'
    )
    frame = parse_landed_file("incoming/c.JSONL", data, NOW)
    assert frame["ts"].to_list() == [T0, T0 + timedelta(seconds=2)]
    assert frame["h2_ppm"].to_list() == [1.5, None]
    assert frame["is_fire"].to_list() == [False, True]


def _rule(name: str, data: bytes) -> QuarantineError:
    with pytest.raises(QuarantineError) as caught:
        parse_landed_file(name, data, NOW)
    return caught.value


def test_unsupported_extension_is_refused() -> None:
    error = _rule("incoming/readings.xlsx", b"anything")
    assert error.rule == "unsupported_format"
    assert ".xlsx" in error.reason


def test_corrupt_parquet_is_unreadable() -> None:
    buffer = io.BytesIO()
    pl.DataFrame({"device_id": ["d"], "ts": [T0]}).write_parquet(buffer)
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    assert _rule("incoming/x.parquet", truncated).rule == "unreadable_file"
    assert _rule("incoming/x.parquet", b"PAR1 not really").rule == "unreadable_file"


def test_ragged_csv_is_unreadable() -> None:
    data = b'device_id,ts\nd1,"2026-11-01T08:00:00Z\n'  # unterminated quote
    assert _rule("incoming/x.csv", data).rule == "unreadable_file"


def test_schema_violations_name_their_rule() -> None:
    assert _rule("incoming/x.csv", b"ts,temperature_c\n2026-11-01T08:00:00Z,1\n").rule == (
        "missing_column"
    )
    bad_channel = b"device_id,ts,co_ppm\nd1,2026-11-01T08:00:00Z,high\n"
    error = _rule("incoming/x.csv", bad_channel)
    assert error.rule == "non_numeric_channel"
    assert "co_ppm" in error.reason
    bad_ts = b"device_id,ts\nd1,yesterday\n"
    assert _rule("incoming/x.csv", bad_ts).rule == "unparseable_ts"
    assert _rule("incoming/x.csv", b"device_id,ts,colour\nd1,2026-11-01T08:00:00Z,red\n").rule == (
        "unknown_column"
    )
    boolean_channel = b'{"device_id": "d", "ts": "2026-11-01T08:00:00Z", "co_ppm": true}\n'
    assert _rule("incoming/x.jsonl", boolean_channel).rule == "non_numeric_channel"
    assert _rule("incoming/x.csv", b"").rule == "empty_file"


def test_cursor_round_trips_and_rejects_garbage() -> None:
    cursor = LandingCursor(T0.astimezone(timezone(timedelta(hours=2))), "incoming/a.csv")
    restored = LandingCursor.from_json(cursor.to_json())
    assert restored == LandingCursor(T0, "incoming/a.csv")
    assert LandingCursor.from_json(None) is None
    assert LandingCursor.from_json("") is None
    with pytest.raises(ValueError, match="not a landing cursor"):
        LandingCursor.from_json('{"key": "a"}')
    with pytest.raises(ValueError, match="time zone"):
        LandingCursor.from_json('{"last_modified": "2026-11-01T08:00:00", "key": "a"}')


def test_pending_orders_by_time_then_key_and_keeps_ties_after_the_cursor() -> None:
    same = T0 + timedelta(seconds=10)
    objects = [
        LandedObject("incoming/c", same, 1),
        LandedObject("incoming/a", same, 1),
        LandedObject("incoming/b", same, 1),
        LandedObject("incoming/z", T0, 1),
        LandedObject("incoming/late", NOW - timedelta(seconds=5), 1),
    ]
    before = NOW - timedelta(seconds=60)
    keys = [o.key for o in pending(objects, None, before)]
    assert keys == ["incoming/z", "incoming/a", "incoming/b", "incoming/c"]
    # Two objects share a timestamp: the cursor at the first still yields the second.
    after_a = LandingCursor(same, "incoming/a")
    assert [o.key for o in pending(objects, after_a, before)] == ["incoming/b", "incoming/c"]
    # The object inside the settle window appears once it is old enough.
    assert [o.key for o in pending(objects, LandingCursor(same, "incoming/c"), NOW)] == [
        "incoming/late"
    ]


def test_alternate_unit_columns_are_kept_as_they_arrived() -> None:
    data = (
        b"device_id,ts,temperature_f,smoke_obscuration_pct_per_ft\nd1,2026-11-01T08:00:00Z,70.5,2\n"
    )
    frame = parse_landed_file("incoming/us.csv", data, NOW)
    assert frame.columns == [
        "device_id",
        "ts",
        "temperature_f",
        "smoke_obscuration_pct_per_ft",
        "source_file",
        "ingested_at",
    ]
    assert frame["temperature_f"].to_list() == [70.5]  # bronze keeps degF; silver converts
    assert frame.schema["smoke_obscuration_pct_per_ft"] == pl.Float32
    assert {c: LANDED_SCHEMA[c] for c in frame.columns} == dict(frame.schema)


def test_a_channel_in_two_units_is_ambiguous() -> None:
    both = b"device_id,ts,temperature_c,temperature_f\nd1,2026-11-01T08:00:00Z,21,70\n"
    error = _rule("incoming/both.csv", both)
    assert error.rule == "ambiguous_units"
    assert "temperature_c as temperature_c, temperature_f" in error.reason
    two_aliases = b'{"device_id": "d", "ts": "2026-11-01T08:00:00Z", "co_ppb": 1, "co_ppm": 2}\n'
    assert _rule("incoming/co.jsonl", two_aliases).rule == "ambiguous_units"


def test_a_quarantine_error_survives_pickling_with_its_rule() -> None:
    # It comes back from the parsing child process by pickle (firepipe.lib.isolated).
    error = _rule("incoming/x.csv", b"device_id,ts\nd1,yesterday\n")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.rule, copy.reason, str(copy)) == (
        QuarantineError,
        "unparseable_ts",
        error.reason,
        str(error),
    )
