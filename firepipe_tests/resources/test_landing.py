"""The landing zone contract, run against a local folder and against S3 on moto, with a real
local Iceberg table as the bronze writer."""

import io
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import polars as pl
import pytest

from firepipe.core.ingestion.landing import LandingCursor, ingest_new
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.landing import (
    CURSOR_KEY,
    LandingZone,
    LocalLandingZone,
    S3LandingZone,
    ingest_landing,
    lakehouse_writer,
)
from firepipe_tests.resources.hostile_parsers import HOSTILE_PARSER

REGION = "eu-west-1"
BRONZE = "bronze.field_readings"


def _csv(device: str, temperatures: list[float]) -> bytes:
    rows = [f"{device},2026-11-01T08:00:{i:02d}Z,{t}" for i, t in enumerate(temperatures)]
    return ("device_id,ts,temperature_c\n" + "\n".join(rows) + "\n").encode()


def _parquet(device: str, co_ppm: list[float]) -> bytes:
    start = datetime(2026, 11, 1, 9, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "device_id": [device] * len(co_ppm),
            "ts": [start + timedelta(seconds=i) for i in range(len(co_ppm))],
            "co_ppm": co_ppm,
        }
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _jsonl(device: str, h2_ppm: list[float]) -> bytes:
    return "".join(
        json.dumps({"device_id": device, "ts": f"2026-11-01T10:00:{i:02d}Z", "h2_ppm": v}) + "\n"
        for i, v in enumerate(h2_ppm)
    ).encode()


def _make_zone(kind: str, request: pytest.FixtureRequest) -> LandingZone:
    if kind == "local":
        return LocalLandingZone(root=str(request.getfixturevalue("tmp_path") / "landing"))
    endpoint = request.getfixturevalue("moto_endpoint")
    request.getfixturevalue("aws_credentials")
    bucket = f"landing-{request.node.name.replace('_', '-').replace('[', '-')[:40].strip('-]')}"
    bucket = bucket.lower().rstrip("-")
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return S3LandingZone(bucket=bucket, prefix="landing", region=REGION, endpoint_url=endpoint)


KINDS = ["local", pytest.param("s3", marks=pytest.mark.aws)]


@pytest.fixture(params=KINDS)
def zone(request: pytest.FixtureRequest) -> LandingZone:
    return _make_zone(request.param, request)


def _next_second() -> None:
    """Wait into the next wall-clock second. S3 stamps LastModified to the second, so a file
    landed in the second the cursor stopped at can sort behind it; production waits
    LANDING_SETTLE_S for that, these tests (settle_s=0) wait for the clock instead."""
    time.sleep(1.05 - time.time() % 1.0)


def _ingest(zone: LandingZone, lakehouse: LocalLakehouse, cursor: LandingCursor | None):
    # settle_s=0: the tests land files and ingest them at once.
    return ingest_new(zone, cursor, lakehouse_writer(lakehouse, BRONZE), settle_s=0)


def _incoming(zone: LandingZone) -> list[str]:
    return sorted(o.key for o in zone.list_objects())


def test_good_files_are_ingested_with_their_values(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone.drop("a.csv", _csv("d1", [20.5, 21.0]))
    zone.drop("2026/11/b.parquet", _parquet("d2", [1.0, 2.5, 4.0]))
    zone.drop("c.jsonl", _jsonl("d3", [0.25]))

    summary = _ingest(zone, lakehouse, None)
    assert sorted(summary.ingested) == [
        "incoming/2026/11/b.parquet",
        "incoming/a.csv",
        "incoming/c.jsonl",
    ]
    assert summary.rows == 6
    assert summary.quarantined == {}
    assert summary.failed is None
    last = max(zone.list_objects(), key=lambda o: o.position)
    assert summary.cursor == last.position

    bronze = lakehouse.read(BRONZE).sort("device_id", "ts")
    assert bronze["device_id"].to_list() == ["d1", "d1", "d2", "d2", "d2", "d3"]
    assert bronze.filter(pl.col("device_id") == "d1")["temperature_c"].to_list() == [20.5, 21.0]
    assert bronze.filter(pl.col("device_id") == "d2")["co_ppm"].to_list() == [1.0, 2.5, 4.0]
    assert bronze.filter(pl.col("device_id") == "d3")["h2_ppm"].to_list() == [0.25]
    assert bronze.filter(pl.col("device_id") == "d2")["source_file"].unique().to_list() == [
        "incoming/2026/11/b.parquet"
    ]

    again = _ingest(zone, lakehouse, summary.cursor)
    assert again.ingested == []
    assert again.cursor == summary.cursor
    assert lakehouse.table_rows(BRONZE) == 6


def test_bad_files_are_quarantined_with_reasons_and_the_run_continues(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    corrupt = _parquet("d9", [1.0, 2.0])[:40]
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("b.parquet", corrupt)
    zone.drop("c.jsonl", _jsonl("d3", [0.5, 0.75]))
    zone.drop("d.xlsx", b"not a spreadsheet")

    summary = _ingest(zone, lakehouse, None)
    assert summary.quarantined == {
        "incoming/b.parquet": "unreadable_file",
        "incoming/d.xlsx": "unsupported_format",
    }
    assert sorted(summary.ingested) == ["incoming/a.csv", "incoming/c.jsonl"]
    assert sorted(lakehouse.read(BRONZE)["device_id"].to_list()) == ["d1", "d3", "d3"]

    # Moved, not lost: the same bytes under quarantine/, the reason beside them.
    assert _incoming(zone) == ["incoming/a.csv", "incoming/c.jsonl"]
    assert zone.read("quarantine/b.parquet") == corrupt
    reason = zone.quarantine_reason("quarantine/b.parquet")
    assert reason["rule"] == "unreadable_file"
    assert "parquet" in reason["reason"]
    assert reason["source_key"] == "incoming/b.parquet"
    assert datetime.fromisoformat(reason["quarantined_at"]).tzinfo is not None
    assert zone.quarantine_reason("quarantine/d.xlsx")["rule"] == "unsupported_format"

    # The same name quarantined again keeps the first copy.
    _next_second()
    zone.drop("b.parquet", b"PAR1 still broken")
    second = _ingest(zone, lakehouse, summary.cursor)
    assert second.quarantined == {"incoming/b.parquet": "unreadable_file"}
    assert zone.read("quarantine/b.parquet") == corrupt


def test_the_same_file_dropped_twice_is_ingested_once(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    content = _csv("d1", [20.0, 21.0, 22.0])
    zone.drop("a.csv", content)
    first = _ingest(zone, lakehouse, None)
    assert first.ingested == ["incoming/a.csv"]

    # Re-uploaded under the same key (S3 stamps LastModified to the second: wait one out, so
    # the object really is newer than the cursor) and under a second name.
    _next_second()
    zone.drop("a.csv", content)
    zone.drop("copy-of-a.csv", content)
    second = _ingest(zone, lakehouse, first.cursor)
    assert sorted(second.duplicates) == ["incoming/a.csv", "incoming/copy-of-a.csv"]
    assert second.ingested == []
    assert second.cursor is not None
    assert second.cursor > first.cursor
    assert lakehouse.table_rows(BRONZE) == 3

    # Different bytes under the same key are a correction: ingested, replacing that file's rows.
    _next_second()
    zone.drop("a.csv", _csv("d1", [30.0, 31.0]))
    third = _ingest(zone, lakehouse, second.cursor)
    assert third.ingested == ["incoming/a.csv"]
    bronze = lakehouse.read(BRONZE).sort("ts")
    assert bronze["temperature_c"].to_list() == [30.0, 31.0]


def test_the_cursor_survives_a_restart(
    request: pytest.FixtureRequest, zone: LandingZone, lakehouse: LocalLakehouse, tmp_path: Path
) -> None:
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("b.csv", _csv("d2", [21.0]))
    first = _ingest(zone, lakehouse, None)
    assert first.cursor is not None
    stored = tmp_path / "sensor_cursor.json"
    stored.write_text(first.cursor.to_json())

    # A new process: a fresh zone object from the same configuration, the cursor from storage.
    restarted = type(zone)(**zone.model_dump())
    zone_cursor = LandingCursor.from_json(stored.read_text())
    restarted.drop("c.csv", _csv("d3", [22.0]))
    second = _ingest(restarted, lakehouse, zone_cursor)
    assert second.ingested == ["incoming/c.csv"]
    assert sorted(lakehouse.read(BRONZE)["device_id"].to_list()) == ["d1", "d2", "d3"]


def test_a_failed_write_keeps_the_cursor_before_that_file(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("b.csv", _csv("d2", [21.0]))
    zone.drop("c.csv", _csv("d3", [22.0]))
    objects = sorted(zone.list_objects(), key=lambda o: o.position)
    write = lakehouse_writer(lakehouse, BRONZE)

    def flaky(frame: pl.DataFrame) -> None:
        if frame["source_file"][0] == objects[1].key:
            raise OSError("warehouse unavailable")
        write(frame)

    broken = ingest_new(zone, None, flaky, settle_s=0)
    assert broken.failed is not None
    assert broken.failed[0] == objects[1].key
    assert "warehouse unavailable" in broken.failed[1]
    assert broken.cursor == objects[0].position
    assert broken.ingested == [objects[0].key]

    retried = ingest_new(zone, broken.cursor, write, settle_s=0)
    assert retried.ingested == [objects[1].key, objects[2].key]
    assert sorted(lakehouse.read(BRONZE)["device_id"].to_list()) == ["d1", "d2", "d3"]


def test_files_inside_the_settle_window_wait(zone: LandingZone, lakehouse: LocalLakehouse) -> None:
    zone.drop("a.csv", _csv("d1", [20.0]))
    write = lakehouse_writer(lakehouse, BRONZE)
    early = ingest_new(zone, None, write, settle_s=600)
    assert early.ingested == []
    assert early.cursor is None
    later = datetime.now(UTC) + timedelta(minutes=11)
    assert ingest_new(zone, None, write, now=later, settle_s=600).ingested == ["incoming/a.csv"]


def test_drop_refuses_names_outside_the_zone(tmp_path: Path) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"))
    with pytest.raises(ValueError, match="not a landing file name"):
        zone.drop("../escape.csv", b"x")
    with pytest.raises(ValueError, match="only incoming/"):
        zone.quarantine("quarantine/x.csv", "r", "why", datetime.now(UTC))


def test_a_local_file_moved_in_with_an_old_mtime_is_not_missed(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"))
    zone.drop("a.csv", _csv("d1", [20.0]))
    first = _ingest(zone, lakehouse, None)
    assert first.ingested == ["incoming/a.csv"]

    # `mv` keeps the mtime of a file written long ago.
    outside = tmp_path / "b.csv"
    outside.write_bytes(_csv("d2", [21.0]))
    old_s = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    os.utime(outside, (old_s, old_s))
    outside.rename(tmp_path / "landing" / "incoming" / "b.csv")
    second = _ingest(zone, lakehouse, first.cursor)
    assert second.ingested == ["incoming/b.csv"]


def test_ingest_landing_keeps_its_cursor_in_the_zone_and_reports_quarantine_reasons(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone = zone.model_copy(update={"settle_s": 0.0})
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("b.parquet", b"PAR1 not really")
    assert zone.load_cursor() is None
    run = ingest_landing(zone, lakehouse, BRONZE)
    assert run.summary.ingested == ["incoming/a.csv"]
    [quarantined] = run.quarantined
    assert (quarantined.key, quarantined.rule) == ("incoming/b.parquet", "unreadable_file")
    assert quarantined.reason.startswith("not valid parquet")
    assert quarantined.quarantined_key == "quarantine/b.parquet"
    assert zone.load_cursor() == run.summary.cursor is not None

    # A new process over the same zone: the cursor is read back from the zone itself.
    restarted = type(zone)(**zone.model_dump())
    _next_second()
    restarted.drop("c.csv", _csv("d3", [22.0]))
    again = ingest_landing(restarted, lakehouse, BRONZE)
    assert again.summary.ingested == ["incoming/c.csv"]
    assert again.quarantined == []
    assert sorted(lakehouse.read(BRONZE)["device_id"].to_list()) == ["d1", "d3"]


def test_ingest_landing_stores_the_cursor_of_the_files_handled_before_a_failure(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"), settle_s=0.0)
    # The table holds temperature_c as text: a file carrying it cannot be written.
    tables.write_table(
        lakehouse.catalog(), BRONZE, pl.DataFrame({"device_id": ["x"], "temperature_c": ["hot"]})
    )
    zone.drop("a.parquet", _parquet("d2", [1.0]))
    zone.drop("b.csv", _csv("d1", [20.0]))
    run = ingest_landing(zone, lakehouse, BRONZE)
    assert run.summary.ingested == ["incoming/a.parquet"]
    assert run.summary.failed is not None
    assert run.summary.failed[0] == "incoming/b.csv"
    handled = LandingCursor.from_json(zone.read(CURSOR_KEY).decode())
    assert handled is not None
    assert handled.key == "incoming/a.parquet"


def test_a_file_that_panics_aborts_or_exhausts_the_parser_is_quarantined_and_the_run_goes_on(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"), settle_s=0.0, parse_memory_limit_mb=512)
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("panics.parquet", _parquet("d8", [1.0]))
    zone.drop("b.jsonl", _jsonl("d2", [0.5]))
    zone.drop("aborts.csv", _csv("d9", [1.0]))
    zone.drop("hogs.jsonl", _jsonl("d9", [1.0]))
    zone.drop("hogs_in_rust.parquet", _parquet("d9", [2.0]))
    zone.drop("c.parquet", _parquet("d3", [4.0, 5.0]))
    last = max(o.position for o in zone.list_objects())

    run = ingest_landing(zone, lakehouse, BRONZE, parser=HOSTILE_PARSER)
    summary = run.summary
    assert summary.failed is None
    assert sorted(summary.ingested) == ["incoming/a.csv", "incoming/b.jsonl", "incoming/c.parquet"]
    assert summary.quarantined == {
        "incoming/panics.parquet": "parser_error",
        "incoming/aborts.csv": "parser_crashed",
        "incoming/hogs.jsonl": "memory_limit",
        "incoming/hogs_in_rust.parquet": "memory_limit",
    }
    reasons = {q.key: q.reason for q in run.quarantined}
    assert reasons["incoming/panics.parquet"] == (
        "the parser raised PanicException: "
        "range end index 18446744073709551534 out of range for slice"
    )
    assert reasons["incoming/aborts.csv"] == "the parser crashed: signal 6 (SIGABRT)"
    assert reasons["incoming/hogs.jsonl"] == (
        "the parser exceeded the memory limit of 512 MiB: MemoryError"
    )
    # Rust aborts on a failed allocation; what it said on stderr tells it from a crash.
    in_rust = reasons["incoming/hogs_in_rust.parquet"]
    assert in_rust.startswith("the parser exceeded the memory limit of 512 MiB: memory allocation")
    assert in_rust.endswith("failed (signal 6 (SIGABRT))")
    sidecar = zone.quarantine_reason("quarantine/aborts.csv")
    assert sidecar["reason"] == reasons["incoming/aborts.csv"]

    bronze = lakehouse.read(BRONZE).sort("device_id", "ts")
    assert bronze["device_id"].to_list() == ["d1", "d2", "d3", "d3"]
    assert bronze.filter(pl.col("device_id") == "d3")["co_ppm"].to_list() == [4.0, 5.0]
    # The cursor went past every file, so nothing blocks the next run.
    assert summary.cursor == last
    assert zone.load_cursor() == last
    again = ingest_landing(zone, lakehouse, BRONZE, parser=HOSTILE_PARSER)
    assert (again.summary.ingested, again.summary.quarantined) == ([], {})


def test_a_file_whose_parse_hangs_is_quarantined_at_the_time_limit(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"), settle_s=0.0, parse_timeout_s=2.0)
    zone.drop("hangs.csv", _csv("d9", [1.0]))
    zone.drop("a.csv", _csv("d1", [20.0]))
    run = ingest_landing(zone, lakehouse, BRONZE, parser=HOSTILE_PARSER)
    assert run.summary.quarantined == {"incoming/hangs.csv": "parser_timeout"}
    assert run.quarantined[0].reason == "the parser gave no answer within 2 s"
    assert run.summary.ingested == ["incoming/a.csv"]
    assert lakehouse.read(BRONZE)["device_id"].to_list() == ["d1"]
