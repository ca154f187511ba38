"""Parsing landed files into readings, the ledger of what was handled, and the loop."""

import io
import pickle
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from firepipe.core.ingestion.landing import (
    LANDED_SCHEMA,
    Handled,
    LandedObject,
    LandingLedger,
    Look,
    QuarantineError,
    incomplete_reason,
    ingest_new,
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


def test_ledger_round_trips_and_rejects_garbage() -> None:
    ledger = LandingLedger(
        {"incoming/a.csv": Handled("v1", "d1", "ingested", T0.isoformat())},
        {"incoming/b.parquet": Look("v2", 10, T0.isoformat(), "no footer")},
    )
    assert LandingLedger.from_json(ledger.to_json()) == ledger
    assert LandingLedger.from_json(None) == LandingLedger() == LandingLedger.from_json("")
    assert LandingLedger().fingerprint() == "start"
    assert ledger.fingerprint().startswith("1 handled ")
    with pytest.raises(ValueError, match="not a landing ledger"):
        LandingLedger.from_json('{"handled": {}}')


def test_pending_is_every_unhandled_version_whatever_its_time() -> None:
    objects = [
        LandedObject("incoming/c", T0, 1, "c1"),
        LandedObject("incoming/a", T0, 1, "a2"),
        LandedObject("incoming/old", T0 - timedelta(days=400), 1, "o1"),
        LandedObject("incoming/future", NOW + timedelta(days=30), 1, "f1"),
        LandedObject("incoming/done", T0, 1, "d1"),
    ]
    ledger = LandingLedger(
        {
            "incoming/a": Handled("a1", "x", "ingested", T0.isoformat()),
            "incoming/done": Handled("d1", "y", "ingested", T0.isoformat()),
        }
    )
    keys = [o.key for o in pending(objects, ledger)]
    assert keys == ["incoming/old", "incoming/a", "incoming/c", "incoming/future"]


def test_a_file_shows_it_is_complete_by_its_own_end() -> None:
    frame = pl.DataFrame({"device_id": ["d"], "ts": [T0]})
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    parquet = buffer.getvalue()
    assert incomplete_reason("incoming/x.parquet", parquet) is None
    for cut in (4, 64, len(parquet) - 1):
        assert "Parquet footer" in str(incomplete_reason("incoming/x.parquet", parquet[:cut]))
    assert incomplete_reason("incoming/x.csv", CSV) is None
    assert "newline" in str(incomplete_reason("incoming/x.csv", CSV[:-3]))
    assert "newline" in str(incomplete_reason("incoming/x.jsonl", b'{"device_id": "d"'))
    assert incomplete_reason("incoming/x.csv", b"") == "no bytes yet"
    assert incomplete_reason("incoming/x.txt", b"no end mark") is None  # refused by name


class MemoryZone:
    """A landing zone in a dict, with versions that change on every upload."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.marks: dict[str, str] = {}
        self.quarantined: dict[str, str] = {}
        self.uploads = 0

    def upload(self, key: str, data: bytes) -> None:
        self.uploads += 1
        self.files[key] = (data, f"u{self.uploads}")

    def list_objects(self) -> list[LandedObject]:
        return [LandedObject(k, T0, len(d), v) for k, (d, v) in self.files.items()]

    def read(self, key: str) -> bytes:
        return self.files[key][0]

    def quarantine(self, key: str, rule: str, reason: str, at: datetime) -> str:
        del self.files[key]
        self.quarantined[key] = rule
        return "quarantine/" + key

    def ingested_key(self, digest: str) -> str | None:
        return self.marks.get(digest)

    def mark_ingested(self, digest: str, key: str, at: datetime) -> None:
        self.marks[digest] = key


def _rows(temperature: float) -> bytes:
    return f"device_id,ts,temperature_c\nd1,2026-11-01T08:00:00Z,{temperature}\n".encode()


def test_a_revert_is_ingested_and_the_same_bytes_under_another_key_are_not() -> None:
    zone, ledger, written = MemoryZone(), LandingLedger(), []
    v1, v2 = _rows(20.0), _rows(30.0)
    for data in (v1, v2, v1):
        zone.upload("incoming/x.csv", data)
        summary = ingest_new(zone, ledger, written.append, now=NOW, settle_s=0)
        assert summary.ingested == ["incoming/x.csv"]
    assert [f["temperature_c"][0] for f in written] == [20.0, 30.0, 20.0]
    zone.upload("incoming/copy.csv", v1)
    summary = ingest_new(zone, ledger, written.append, now=NOW, settle_s=0)
    assert (summary.ingested, summary.duplicates) == ([], ["incoming/copy.csv"])
    # Once x.csv holds other bytes, a copy of its old content is the only one left: taken.
    zone.upload("incoming/x.csv", v2)
    assert ingest_new(zone, ledger, written.append, now=NOW, settle_s=0).ingested == [
        "incoming/x.csv"
    ]
    zone.upload("incoming/copy2.csv", v1)
    summary = ingest_new(zone, ledger, written.append, now=NOW, settle_s=0)
    assert summary.ingested == ["incoming/copy2.csv"]


def test_a_file_without_its_end_waits_for_a_second_look_and_says_why() -> None:
    zone, ledger, written = MemoryZone(), LandingLedger(), []
    zone.upload("incoming/half.csv", _rows(20.0)[:-5])
    first = ingest_new(zone, ledger, written.append, now=NOW, settle_s=60)
    assert list(first.waiting) == ["incoming/half.csv"]
    assert "newline" in first.waiting["incoming/half.csv"]
    assert "incoming/half.csv" in ledger.looks
    assert not ledger.handled
    # A later look inside the settle time: still waiting; after it, judged as it is.
    soon = ingest_new(zone, ledger, written.append, now=NOW + timedelta(seconds=30), settle_s=60)
    assert list(soon.waiting) == ["incoming/half.csv"]
    later = ingest_new(zone, ledger, written.append, now=NOW + timedelta(seconds=61), settle_s=60)
    assert (later.waiting, later.ingested) == ({}, ["incoming/half.csv"])
    assert not ledger.looks
    # A file that changed between the looks starts its wait again.
    zone.upload("incoming/grow.csv", b"device_id,ts")
    ingest_new(zone, ledger, written.append, now=NOW, settle_s=60)
    zone.upload("incoming/grow.csv", b"device_id,ts,co")
    grown = ingest_new(zone, ledger, written.append, now=NOW + timedelta(seconds=61), settle_s=60)
    assert list(grown.waiting) == ["incoming/grow.csv"]


def test_a_quarantined_key_uploaded_again_is_taken() -> None:
    zone, ledger, written = MemoryZone(), LandingLedger(), []
    zone.upload("incoming/x.csv", b"device_id\nd1\n")
    assert ingest_new(zone, ledger, written.append, now=NOW, settle_s=0).quarantined == {
        "incoming/x.csv": "missing_column"
    }
    assert "incoming/x.csv" in ledger.handled
    ingest_new(zone, ledger, written.append, now=NOW, settle_s=0)
    assert "incoming/x.csv" not in ledger.handled  # the key is gone: its quarantine forgotten
    zone.upload("incoming/x.csv", _rows(20.0))
    assert ingest_new(zone, ledger, written.append, now=NOW, settle_s=0).ingested == [
        "incoming/x.csv"
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
