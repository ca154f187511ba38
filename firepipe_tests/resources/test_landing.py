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

from firepipe.core.ingestion.landing import LandingLedger, ingest_new
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.landing import (
    LEDGER_KEY,
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
    """Wait into the next wall-clock second. An S3 object's version is its ETag and its
    LastModified, stamped to the second: the same bytes put again within the second the last
    one was handled in look unchanged (and bronze holds them already)."""
    time.sleep(1.05 - time.time() % 1.0)


def _ingest(zone: LandingZone, lakehouse: LocalLakehouse, ledger: LandingLedger | None):
    # settle_s=0: a file without its format's end mark is judged at the first look.
    ledger = ledger if ledger is not None else LandingLedger()
    return ingest_new(zone, ledger, lakehouse_writer(lakehouse, BRONZE), settle_s=0)


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
    assert sorted(summary.ledger.handled) == sorted(summary.ingested)

    bronze = lakehouse.read(BRONZE).sort("device_id", "ts")
    assert bronze["device_id"].to_list() == ["d1", "d1", "d2", "d2", "d2", "d3"]
    assert bronze.filter(pl.col("device_id") == "d1")["temperature_c"].to_list() == [20.5, 21.0]
    assert bronze.filter(pl.col("device_id") == "d2")["co_ppm"].to_list() == [1.0, 2.5, 4.0]
    assert bronze.filter(pl.col("device_id") == "d3")["h2_ppm"].to_list() == [0.25]
    assert bronze.filter(pl.col("device_id") == "d2")["source_file"].unique().to_list() == [
        "incoming/2026/11/b.parquet"
    ]

    again = _ingest(zone, lakehouse, summary.ledger)
    assert (again.ingested, again.duplicates) == ([], [])
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
    zone.drop("b.parquet", b"PAR1 still broken")
    second = _ingest(zone, lakehouse, summary.ledger)
    assert second.quarantined == {"incoming/b.parquet": "unreadable_file"}
    assert zone.read("quarantine/b.parquet") == corrupt


def test_the_same_bytes_under_another_key_are_ingested_once(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone = zone.model_copy(update={"settle_s": 0.0})
    content = _csv("d1", [20.0, 21.0, 22.0])
    zone.drop("a.csv", content)
    first = ingest_landing(zone, lakehouse, BRONZE)
    assert first.summary.ingested == ["incoming/a.csv"]
    zone.drop("copy-of-a.csv", content)
    zone.drop("2026/again/a.csv", content)
    second = ingest_landing(zone, lakehouse, BRONZE)
    assert second.summary.ingested == []
    assert sorted(second.summary.duplicates) == [
        "incoming/2026/again/a.csv",
        "incoming/copy-of-a.csv",
    ]
    assert lakehouse.table_rows(BRONZE) == 3


def test_a_revert_to_earlier_bytes_is_a_new_version(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone = zone.model_copy(update={"settle_s": 0.0})
    v1, v2 = _csv("d1", [20.0, 21.0]), _csv("d1", [30.0, 31.0, 32.0])
    for data in (v1, v2, v1):
        zone.drop("x.csv", data)
        assert ingest_landing(zone, lakehouse, BRONZE).summary.ingested == ["incoming/x.csv"]
    bronze = lakehouse.read(BRONZE).sort("ts")
    assert bronze["temperature_c"].to_list() == [20.0, 21.0]
    # The same bytes uploaded again under the key are a new upload too.
    _next_second()
    zone.drop("x.csv", v1)
    assert ingest_landing(zone, lakehouse, BRONZE).summary.ingested == ["incoming/x.csv"]
    assert lakehouse.table_rows(BRONZE) == 2


def test_the_ledger_survives_a_restart(
    zone: LandingZone, lakehouse: LocalLakehouse, tmp_path: Path
) -> None:
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("b.csv", _csv("d2", [21.0]))
    first = _ingest(zone, lakehouse, None)
    stored = tmp_path / "ledger.json"
    stored.write_text(first.ledger.to_json())

    # A new process: a fresh zone object from the same configuration, the ledger from storage.
    restarted = type(zone)(**zone.model_dump())
    restarted.drop("c.csv", _csv("d3", [22.0]))
    second = _ingest(restarted, lakehouse, LandingLedger.from_json(stored.read_text()))
    assert second.ingested == ["incoming/c.csv"]
    assert sorted(lakehouse.read(BRONZE)["device_id"].to_list()) == ["d1", "d2", "d3"]


def test_a_failed_write_leaves_that_file_unhandled(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("b.csv", _csv("d2", [21.0]))
    zone.drop("c.csv", _csv("d3", [22.0]))
    objects = sorted(zone.list_objects(), key=lambda o: (o.last_modified, o.key))
    write = lakehouse_writer(lakehouse, BRONZE)

    def flaky(frame: pl.DataFrame) -> None:
        if frame["source_file"][0] == objects[1].key:
            raise OSError("warehouse unavailable")
        write(frame)

    broken = ingest_new(zone, LandingLedger(), flaky, settle_s=0)
    assert broken.failed is not None
    assert broken.failed[0] == objects[1].key
    assert "warehouse unavailable" in broken.failed[1]
    assert list(broken.ledger.handled) == [objects[0].key]
    assert broken.ingested == [objects[0].key]

    retried = ingest_new(zone, broken.ledger, write, settle_s=0)
    assert retried.ingested == [objects[1].key, objects[2].key]
    assert sorted(lakehouse.read(BRONZE)["device_id"].to_list()) == ["d1", "d2", "d3"]


def test_a_file_is_taken_when_its_end_shows_and_waits_otherwise(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("half.parquet", _parquet("d2", [1.0, 2.0])[:-30])
    write = lakehouse_writer(lakehouse, BRONZE)
    ledger = LandingLedger()
    early = ingest_new(zone, ledger, write, settle_s=600)
    assert early.ingested == ["incoming/a.csv"]  # complete: no wait, whatever its age
    assert list(early.waiting) == ["incoming/half.parquet"]
    assert "no Parquet footer" in early.waiting["incoming/half.parquet"]
    assert _incoming(zone) == ["incoming/a.csv", "incoming/half.parquet"]
    # Unchanged at a look past the settle time: judged as it is.
    later = datetime.now(UTC) + timedelta(minutes=11)
    judged = ingest_new(zone, ledger, write, now=later, settle_s=600)
    assert (judged.waiting, judged.quarantined) == (
        {},
        {"incoming/half.parquet": "unreadable_file"},
    )


def test_a_complete_upload_after_a_quarantined_one_is_taken(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone = zone.model_copy(update={"settle_s": 0.0})
    whole = _parquet("d2", [1.0, 2.0])
    zone.drop("x.parquet", whole[:50])
    first = ingest_landing(zone, lakehouse, BRONZE)
    assert first.summary.quarantined == {"incoming/x.parquet": "unreadable_file"}
    zone.drop("x.parquet", whole)
    second = ingest_landing(zone, lakehouse, BRONZE)
    assert second.summary.ingested == ["incoming/x.parquet"]
    assert lakehouse.read(BRONZE)["co_ppm"].to_list() == [1.0, 2.0]


def test_drop_refuses_names_outside_the_zone(tmp_path: Path) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"))
    with pytest.raises(ValueError, match="not a landing file name"):
        zone.drop("../escape.csv", b"x")
    with pytest.raises(ValueError, match="only incoming/"):
        zone.quarantine("quarantine/x.csv", "r", "why", datetime.now(UTC))


def test_a_local_folder_moved_in_with_old_times_is_not_missed(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    # A folder written before the last ingestion, then `mv`ed in: its files keep their mtime
    # and ctime, both older than anything ingestion handled.
    folder = tmp_path / "gateway"
    folder.mkdir()
    old_s = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    for name, device in (("b.csv", "d2"), ("c.csv", "d3")):
        (folder / name).write_bytes(_csv(device, [21.0]))
        os.utime(folder / name, (old_s, old_s))
    time.sleep(0.01)
    zone = LocalLandingZone(root=str(tmp_path / "landing"), settle_s=0.0)
    zone.drop("a.csv", _csv("d1", [20.0]))
    assert ingest_landing(zone, lakehouse, BRONZE).summary.ingested == ["incoming/a.csv"]
    folder.rename(tmp_path / "landing" / "incoming" / "gateway")
    second = ingest_landing(zone, lakehouse, BRONZE)
    assert sorted(second.summary.ingested) == ["incoming/gateway/b.csv", "incoming/gateway/c.csv"]
    assert sorted(lakehouse.read(BRONZE)["device_id"].to_list()) == ["d1", "d2", "d3"]


def test_a_local_file_with_a_future_mtime_is_taken_now(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"))
    key = zone.drop("a.csv", _csv("d1", [20.0]))
    future_s = (datetime.now(UTC) + timedelta(days=30)).timestamp()
    os.utime(tmp_path / "landing" / key, (future_s, future_s))  # as `cp -p` of such a file
    assert ingest_landing(zone, lakehouse, BRONZE).summary.ingested == [key]


def test_a_local_upload_that_pauses_past_the_settle_time_is_ingested_when_it_ends(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"), settle_s=0.2)
    whole = _parquet("d2", [1.0, 2.0, 3.0])
    path = tmp_path / "landing" / "incoming" / "slow.parquet"
    path.parent.mkdir(parents=True)
    with path.open("wb") as upload:
        upload.write(whole[:100])
        upload.flush()
        waiting = ingest_landing(zone, lakehouse, BRONZE)
        assert "no Parquet footer" in waiting.summary.waiting["incoming/slow.parquet"]
        # Paused past the settle time: judged as it is, and quarantined half-written.
        time.sleep(0.3)
        judged = ingest_landing(zone, lakehouse, BRONZE)
        assert judged.summary.quarantined == {"incoming/slow.parquet": "unreadable_file"}
        upload.write(whole[100:])  # the writer still holds the file, now in quarantine/
    done = ingest_landing(zone, lakehouse, BRONZE)
    assert done.reclaimed == ["incoming/slow.parquet"]
    assert done.summary.ingested == ["incoming/slow.parquet"]
    assert lakehouse.read(BRONZE)["co_ppm"].to_list() == [1.0, 2.0, 3.0]
    assert not (tmp_path / "landing" / "quarantine" / "slow.parquet").exists()
    assert ingest_landing(zone, lakehouse, BRONZE).reclaimed == []


def test_ingest_landing_keeps_its_ledger_in_the_zone_and_reports_quarantine_reasons(
    zone: LandingZone, lakehouse: LocalLakehouse
) -> None:
    zone = zone.model_copy(update={"settle_s": 0.0})
    zone.drop("a.csv", _csv("d1", [20.0]))
    zone.drop("b.parquet", b"PAR1 not really")
    assert zone.load_ledger() == LandingLedger()
    run = ingest_landing(zone, lakehouse, BRONZE)
    assert run.summary.ingested == ["incoming/a.csv"]
    [quarantined] = run.quarantined
    assert (quarantined.key, quarantined.rule) == ("incoming/b.parquet", "unreadable_file")
    assert quarantined.reason.startswith("not valid parquet")
    assert quarantined.quarantined_key == "quarantine/b.parquet"
    assert zone.load_ledger() == run.summary.ledger
    assert sorted(run.summary.ledger.handled) == ["incoming/a.csv", "incoming/b.parquet"]

    # A new process over the same zone: the ledger is read back from the zone itself.
    restarted = type(zone)(**zone.model_dump())
    restarted.drop("c.csv", _csv("d3", [22.0]))
    again = ingest_landing(restarted, lakehouse, BRONZE)
    assert again.summary.ingested == ["incoming/c.csv"]
    assert again.quarantined == []
    assert sorted(lakehouse.read(BRONZE)["device_id"].to_list()) == ["d1", "d3"]


def test_ingest_landing_stores_the_ledger_of_the_files_handled_before_a_failure(
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
    handled = LandingLedger.from_json(zone.read(LEDGER_KEY).decode()).handled
    assert list(handled) == ["incoming/a.parquet"]


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
    landed = sorted(o.key for o in zone.list_objects())

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
    # Every file is handled, so nothing blocks the next run.
    assert sorted(zone.load_ledger().handled) == landed
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
