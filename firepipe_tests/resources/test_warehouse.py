"""The warehouse source contract, run against DuckDB and against Snowflake (fakesnow), the
Snowflake outage fault, and the local seeding of field readings."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import fakesnow
import polars as pl
import pytest
import snowflake.connector
from dagster_snowflake import SnowflakeResource
from snowflake.connector.errors import OperationalError

from firepipe.core.ingestion.extraction import (
    RAW_FIELD_SCHEMA,
    ExtractionError,
    RetryPolicy,
    TransientError,
    Watermark,
    extract,
    parse_field_rows,
)
from firepipe.core.ingestion.reconciliation import DAILY_COUNT_SCHEMA
from firepipe.core.realdata import nist
from firepipe.core.simulation.simulator import GenerationSpec
from firepipe.lib.extraction_sinks import (
    DEAD_LETTERS_TABLE,
    FIELD_READINGS_TABLE,
    IcebergChunkSink,
    IcebergDeadLetterSink,
)
from firepipe.lib.field_seed import append_field_rows, seed_local_warehouse
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.warehouse import (
    COLUMNS,
    FIELD_TABLE_COLUMNS,
    DuckDBWarehouseSource,
    SnowflakeWarehouseSource,
    WarehouseSource,
    rows_after_by_maxima,
)
from firepipe.resources.watermarks import SqliteWatermarkStore
from firepipe_tests.conftest import nist_data_dir
from firepipe_tests.core.ingestion.test_extraction import SqliteSink

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def table_rows() -> pl.DataFrame:
    """12 rows inserted out of key order; ids 4..6 share one updated_at, 10 has a bad value."""
    times = [T0 + timedelta(seconds=s) for s in (5, 0, 0, 1, 1, 1, 2, 9, 3, 3, 4, 8)]
    return pl.DataFrame(
        {
            "id": [12, 1, 2, 4, 6, 5, 7, 11, 8, 9, 10, 3],
            "updated_at": times,
            "site_id": ["s"] * 12,
            "device_id": [f"d{i % 3}" for i in range(12)],
            "ts": [f"2026-05-01T07:00:{i:02d}Z" for i in range(12)],
            **{c: [str(i) if i != 10 else "ERR" for i in range(12)] for c in COLUMNS[5:]},
        },
        schema=RAW_FIELD_SCHEMA,
    )


ORDER = [1, 2, 4, 5, 6, 7, 8, 9, 10, 12, 3, 11]  # by (updated_at, id)


def fake_snowflake(rows: pl.DataFrame) -> SnowflakeResource:
    """A Snowflake resource whose field table holds `rows`; call inside `fakesnow.patch()`."""
    snowflake = SnowflakeResource(
        account="acc", user="u", password="p", database="FIELD", schema="RAW"
    )
    with snowflake.get_connection() as connection:
        cursor = connection.cursor()
        cursor.execute(f"CREATE TABLE field_readings ({FIELD_TABLE_COLUMNS})")
        staged = rows.with_columns(pl.col("updated_at").dt.replace_time_zone(None))
        marks = ", ".join(["%s"] * len(COLUMNS))
        cursor.executemany(f"INSERT INTO field_readings VALUES ({marks})", staged.rows())
    return snowflake


@pytest.fixture(params=["duckdb", "snowflake"])
def source(request, tmp_path: Path) -> Iterator[WarehouseSource]:
    rows = table_rows()
    if request.param == "duckdb":
        path = str(tmp_path / "warehouse.duckdb")
        append_field_rows(path, "field_readings", rows)
        yield DuckDBWarehouseSource(path=path, table="field_readings")
        return
    with fakesnow.patch():
        yield SnowflakeWarehouseSource(snowflake=fake_snowflake(rows), table="field_readings")


def test_the_first_chunk_is_the_oldest_keys_in_order(source: WarehouseSource) -> None:
    chunk = source.next_chunk(None, 4)
    assert chunk.schema == pl.Schema(RAW_FIELD_SCHEMA)
    assert chunk["id"].to_list() == ORDER[:4]
    second = T0 + timedelta(seconds=1)
    assert chunk["updated_at"].to_list() == [T0, T0, second, second]
    assert chunk.filter(pl.col("id") == 4)["co_ppm"].to_list() == ["3"]


def test_chunks_resume_strictly_after_the_watermark_within_one_updated_at(
    source: WarehouseSource,
) -> None:
    after = Watermark(T0 + timedelta(seconds=1), 4)  # 5 and 6 share this time
    assert source.next_chunk(after, 3)["id"].to_list() == [5, 6, 7]
    assert source.next_chunk(Watermark(T0 + timedelta(seconds=9), 11), 5).is_empty()
    # a zoned watermark means the same instant
    zoned = Watermark((T0 + timedelta(seconds=4)).astimezone(timezone(timedelta(hours=2))), 10)
    assert source.next_chunk(zoned, 100)["id"].to_list() == [12, 3, 11]


def test_paging_through_the_source_yields_every_row_once(source: WarehouseSource) -> None:
    seen: list[int] = []
    after = None
    while not (chunk := source.next_chunk(after, 5)).is_empty():
        seen += chunk["id"].to_list()
        after = Watermark(chunk["updated_at"][-1], chunk["id"][-1])
    assert seen == ORDER


def test_the_probe_finds_rows_past_the_watermark_and_none_at_the_end(
    source: WarehouseSource,
) -> None:
    newest = T0 + timedelta(seconds=9)
    assert source.maxima() == (newest.replace(tzinfo=None), 12)
    assert source.has_rows_after(None)
    assert source.has_rows_after(Watermark(T0 + timedelta(seconds=8), 3))  # by the maxima
    assert not source.has_rows_after(Watermark(newest, 12))  # settled by MAX(id)
    # The newest time is the watermark's and a larger id exists: only the keyset query can
    # tell whether it sits at that time (11 does) or an older one (12, at the end).
    assert source.has_rows_after(Watermark(newest, 5))
    assert not source.has_rows_after(Watermark(newest, 11))


def test_the_table_maxima_settle_the_probe_except_at_a_shared_newest_time() -> None:
    at = Watermark(T0, 7)
    naive = T0.replace(tzinfo=None)
    assert rows_after_by_maxima(None, None, None) is False  # an empty table
    assert rows_after_by_maxima(None, naive, 1) is True
    assert rows_after_by_maxima(at, naive + timedelta(microseconds=1), 1) is True
    assert rows_after_by_maxima(at, naive - timedelta(seconds=1), 99) is False
    assert rows_after_by_maxima(at, naive, 7) is False
    assert rows_after_by_maxima(at, T0, 8) is None  # zoned maxima mean the same instant


def test_bad_tables_and_limits_are_refused(source: WarehouseSource) -> None:
    with pytest.raises(ValueError, match="limit must be >= 1"):
        source.next_chunk(None, 0)
    bad = source.model_copy(update={"table": "readings; DROP TABLE x"})
    with pytest.raises(ValueError, match="not a plain"):
        bad.next_chunk(None, 1)


@pytest.mark.parametrize("sinks", ["sqlite", "iceberg"])
def test_a_snowflake_outage_retries_then_fails_leaving_the_watermark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sinks: str
) -> None:
    store = SqliteWatermarkStore(path=str(tmp_path / "watermarks.db"))
    if sinks == "sqlite":
        sqlite = SqliteSink(tmp_path / "bronze.db")
        sink, dead = sqlite, sqlite

        def landed() -> list[int]:
            return sorted(sqlite.ids() + sqlite.ids("dead"))

    else:
        lake = LocalLakehouse(root=str(tmp_path / "lake"))
        sink, dead = IcebergChunkSink(lake), IcebergDeadLetterSink(lake)

        def landed() -> list[int]:
            tables = (FIELD_READINGS_TABLE, DEAD_LETTERS_TABLE)
            return sorted(i for t in tables for i in lake.read(t)["id"].to_list())

    with fakesnow.patch():
        resource = fake_snowflake(table_rows())
        source = SnowflakeWarehouseSource(snowflake=resource, table="field_readings")
        summary = extract("sf", source, sink, dead, store, chunk_rows=5, max_chunks=1)
        assert store.get("sf") == Watermark(T0 + timedelta(seconds=1), 6)

        real_connect, attempts = snowflake.connector.connect, []

        def flaky(*args, failures: int, **kwargs):
            attempts.append(1)
            if len(attempts) <= failures:
                raise OperationalError(msg="250003: Failed to get the response. Hanging?")
            return real_connect(*args, **kwargs)

        # An outage of 2 failures is ridden out by 3 attempts, with full-jitter sleeps.
        monkeypatch.setattr(
            snowflake.connector, "connect", lambda *a, **k: flaky(*a, failures=2, **k)
        )
        sleeps: list[float] = []
        resumed = extract(
            "sf",
            source,
            sink,
            dead,
            store,
            chunk_rows=5,
            max_chunks=1,
            retry=RetryPolicy(max_attempts=3, base_delay_s=1.0),
            sleep=sleeps.append,
            draw=lambda: 0.5,
        )
        assert sleeps == [0.5, 1.0]
        assert resumed.watermark == store.get("sf") == Watermark(T0 + timedelta(seconds=5), 12)

        # A longer outage: every attempt fails, the watermark stays, the error says so.
        attempts.clear()
        monkeypatch.setattr(
            snowflake.connector, "connect", lambda *a, **k: flaky(*a, failures=99, **k)
        )
        with pytest.raises(ExtractionError) as failure:
            extract(
                "sf",
                source,
                sink,
                dead,
                store,
                chunk_rows=5,
                retry=RetryPolicy(max_attempts=4, base_delay_s=0.0),
                sleep=lambda s: None,
            )
        # Put fakesnow's connect back before fakesnow unpatches, or the next test finds it
        # patched still.
        monkeypatch.undo()
    assert len(attempts) == 4
    assert isinstance(failure.value.__cause__.__cause__, TransientError)
    message = str(failure.value)
    assert "failed 4 times" in message
    assert "250003" in message
    assert f"watermark stays at {resumed.watermark}" in message
    assert store.get("sf") == resumed.watermark
    assert summary.rows + resumed.rows == 10
    assert landed() == sorted(ORDER[:10])  # each key of the two chunks once, none after


def test_seeding_replays_nist_once_and_appends_a_stream_batch_each_time(tmp_path: Path) -> None:
    path = str(tmp_path / "warehouse.duckdb")
    tiny = GenerationSpec(devices=2, duration_s=30, sites=1, seed=1)
    loaded = datetime(2026, 6, 1, tzinfo=UTC)
    added = seed_local_warehouse(
        path, "field_readings", Path(nist_data_dir()), stream=tiny, loaded_at=loaded
    )
    nist_rows = nist.readings(nist.read_tests(Path(nist_data_dir()))).height
    assert added == nist_rows + 2 * 30
    later = loaded + timedelta(hours=1)
    again = seed_local_warehouse(
        path, "field_readings", Path(nist_data_dir()), stream=tiny, loaded_at=later
    )
    assert again == 2 * 30  # the replay once; the stream's last 30 s up to the new load
    # Seconds later: only the seconds since, none delivered twice.
    soon = seed_local_warehouse(
        path,
        "field_readings",
        Path(nist_data_dir()),
        stream=tiny,
        loaded_at=later + timedelta(seconds=5),
    )
    assert soon == 2 * 5
    everything = DuckDBWarehouseSource(path=path, table="field_readings").next_chunk(None, 100_000)
    assert everything["id"].to_list() == list(range(1, added + again + soon + 1))
    assert everything.select("device_id", "ts").n_unique() == everything.height
    replay, stream = everything.head(nist_rows), everything.slice(nist_rows, 120)
    assert replay["device_id"].str.starts_with("nist-").all()
    assert set(replay["updated_at"]) == {loaded}
    first, second = stream.head(60), stream.tail(60)
    assert set(first["updated_at"]) == {loaded + timedelta(seconds=1)}
    assert set(second["updated_at"]) == {later + timedelta(seconds=1)}
    # The same two devices, each batch the 30 s up to its load, with new readings.
    assert set(first["device_id"]) == set(second["device_id"])
    assert first["device_id"].n_unique() == 2
    assert first["device_id"].str.starts_with("field-").all()
    assert first["ts"].max() < loaded.isoformat().replace("+00:00", "") <= second["ts"].min()
    assert first["temperature_c"].to_list() != second["temperature_c"].to_list()
    # Each batch's first row carries a firmware fault; the replayed NIST rows parse cleanly.
    _, dead = parse_field_rows(everything)
    assert dead.select("id", "reason").rows() == [
        (nist_rows + 1, "co_ppm is not a number: 'ERR'"),
        (nist_rows + 61, "co_ppm is not a number: 'ERR'"),
        (nist_rows + 121, "co_ppm is not a number: 'ERR'"),
    ]


def test_a_snowflake_session_logs_in_once_per_extraction_and_again_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteWatermarkStore(path=str(tmp_path / "watermarks.db"))
    sqlite = SqliteSink(tmp_path / "bronze.db")
    with fakesnow.patch():
        source = SnowflakeWarehouseSource(
            snowflake=fake_snowflake(table_rows()), table="field_readings"
        )
        real_connect, logins = snowflake.connector.connect, []

        def connect(*args, **kwargs):
            logins.append(1)
            if len(logins) == 1:  # the first login fails: the retry must log in again
                raise OperationalError(msg="250001: Could not connect to Snowflake backend")
            return real_connect(*args, **kwargs)

        monkeypatch.setattr(snowflake.connector, "connect", connect)
        with source.session() as session:
            summary = extract(
                "sf", session, sqlite, sqlite, store, chunk_rows=4, sleep=lambda s: None
            )
        monkeypatch.undo()  # fakesnow's connect back before fakesnow unpatches
    assert summary.chunks == 3
    assert len(logins) == 2  # 4 reads (3 chunks and the empty one after): one failed login, one
    assert sorted(sqlite.ids() + sqlite.ids("dead")) == sorted(ORDER)


def days_rows() -> pl.DataFrame:
    """Rows over three UTC days: 2 on 30 April, 3 on 1 May (two at 23:59:59), 2 on 2 May."""
    rows = table_rows().head(7)
    times = [
        datetime(2026, 4, 30, 12, tzinfo=UTC),
        datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 5, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 5, 2, 0, 0, tzinfo=UTC),
        datetime(2026, 5, 2, 6, 0, tzinfo=UTC),
    ]
    return rows.with_columns(
        pl.Series("id", range(1, 8), dtype=pl.Int64),
        pl.Series("updated_at", times, dtype=RAW_FIELD_SCHEMA["updated_at"]),
    )


@pytest.fixture(params=["duckdb", "snowflake"])
def days_source(request, tmp_path: Path) -> Iterator[WarehouseSource]:
    if request.param == "duckdb":
        path = str(tmp_path / "warehouse.duckdb")
        append_field_rows(path, "field_readings", days_rows())
        yield DuckDBWarehouseSource(path=path, table="field_readings")
        return
    with fakesnow.patch():
        yield SnowflakeWarehouseSource(
            snowflake=fake_snowflake(days_rows()), table="field_readings"
        )


def test_daily_counts_count_utc_days_up_to_the_watermark_and_from_since(
    days_source: WarehouseSource,
) -> None:
    def counts(through: Watermark, since: date | None = None) -> list[tuple[date, int]]:
        frame = days_source.daily_counts(through, since)
        assert frame.schema == pl.Schema(DAILY_COUNT_SCHEMA)
        return frame.rows()

    end = Watermark(datetime(2026, 5, 2, 6, tzinfo=UTC), 7)
    april, may, may2 = date(2026, 4, 30), date(2026, 5, 1), date(2026, 5, 2)
    assert counts(end) == [(april, 2), (may, 3), (may2, 2)]
    # Within one updated_at the id decides: id 5 at 23:59:59 is past (23:59:59, 4).
    assert counts(Watermark(datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC), 4)) == [
        (april, 2),
        (may, 2),
    ]
    assert counts(end, since=may) == [(may, 3), (may2, 2)]
    # A zoned watermark means the same instant: 02:00 in UTC+2 is midnight UTC, id 3 included.
    zoned = datetime(2026, 5, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert counts(Watermark(zoned, 3)) == [(april, 2), (may, 1)]
    assert counts(Watermark(datetime(2026, 4, 1, tzinfo=UTC), 0)) == []
