"""Incremental extraction: parsing and dead letters, backoff, and the crash faults of issue 4
(a real DuckDB source, a real SQLite sink and watermark store; every key compared with the source).
"""

import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from firepipe.core.history import timestamp_text
from firepipe.core.ingestion.extraction import (
    RAW_FIELD_SCHEMA,
    Chunk,
    ExtractionError,
    RetryPolicy,
    StaleWatermarkError,
    TransientError,
    Watermark,
    extract,
    parse_field_rows,
    with_retries,
)
from firepipe.core.ingestion.reconciliation import (
    DAILY_COUNT_SCHEMA,
    count_differences,
    daily_counts,
)
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.lib.field_seed import append_field_rows
from firepipe.resources.warehouse import DuckDBWarehouseSource
from firepipe.resources.watermarks import SqliteWatermarkStore

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
NAME = "field_readings"


def raw_rows(n: int, *, first_id: int = 1, bad: dict[int, dict[str, str | None]] | None = None):
    """n field rows, three per updated_at (so chunk edges fall inside a time), some made bad."""
    rows = []
    for i in range(n):
        row: dict[str, object] = {
            "id": first_id + i,
            "updated_at": T0 + timedelta(seconds=(first_id + i) // 3),
            "site_id": "site-1",
            "device_id": f"dev-{i % 4}",
            "ts": (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{c: f"{i}.5" for c in CHANNEL_NAMES},
        }
        row.update((bad or {}).get(first_id + i, {}))
        rows.append(row)
    return pl.DataFrame(rows, schema=RAW_FIELD_SCHEMA)


class SqliteSink:
    """A bronze table and a dead-letter table in SQLite; a chunk replaces its key range."""

    def __init__(self, path: Path, crash: str | None = None) -> None:
        self.path, self.crash = path, crash
        with closing(sqlite3.connect(path)) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS bronze (updated_at TEXT, id INTEGER, co_ppm REAL)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS dead (updated_at TEXT, id INTEGER, reason TEXT)")

    def _replace(self, table: str, chunk: Chunk, rows: list[tuple], crash: bool) -> None:
        with closing(sqlite3.connect(self.path)) as db, db:
            db.execute(
                f"DELETE FROM {table} WHERE (updated_at, id) BETWEEN (?, ?) AND (?, ?)",
                [
                    timestamp_text(chunk.first.updated_at),
                    chunk.first.id,
                    timestamp_text(chunk.last.updated_at),
                    chunk.last.id,
                ],
            )
            db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows[: len(rows) // 2])
            if crash:  # killed half-way: the transaction never commits
                raise KeyboardInterrupt("killed during the write")
            db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows[len(rows) // 2 :])

    def write_chunk(self, chunk: Chunk) -> None:
        rows = [
            (timestamp_text(u), i, c)
            for u, i, c in chunk.readings.select("updated_at", "id", "co_ppm").iter_rows()
        ]
        self._replace("bronze", chunk, rows, self.crash == "during")
        if self.crash == "after":
            raise KeyboardInterrupt("killed after the write, before the watermark commit")

    def write_dead_letters(self, chunk: Chunk) -> None:
        rows = [
            (timestamp_text(u), i, r)
            for u, i, r in chunk.dead_letters.select("updated_at", "id", "reason").iter_rows()
        ]
        self._replace("dead", chunk, rows, False)

    def ids(self, table: str = "bronze") -> list[int]:
        with closing(sqlite3.connect(self.path)) as db:
            return [r[0] for r in db.execute(f"SELECT id FROM {table} ORDER BY id")]


class OnceCrashing(SqliteSink):
    """Crashes on the n-th chunk only (0-based), like a worker killed once."""

    def __init__(self, path: Path, crash: str, at_chunk: int) -> None:
        super().__init__(path, None)
        self.mode, self.at_chunk, self.seen = crash, at_chunk, 0

    def write_chunk(self, chunk: Chunk) -> None:
        self.crash = self.mode if self.seen == self.at_chunk else None
        self.seen += 1
        super().write_chunk(chunk)


@pytest.fixture
def source(tmp_path: Path) -> DuckDBWarehouseSource:
    path = str(tmp_path / "warehouse.duckdb")
    append_field_rows(path, "field", raw_rows(50, bad={17: {"co_ppm": "ERR"}, 31: {"ts": "soon"}}))
    return DuckDBWarehouseSource(path=path, table="field")


@pytest.fixture
def store(tmp_path: Path) -> SqliteWatermarkStore:
    return SqliteWatermarkStore(path=str(tmp_path / "watermarks.db"))


def test_parsing_dead_letters_each_bad_row_with_its_reasons() -> None:
    raw = raw_rows(
        5,
        bad={
            2: {"co_ppm": "ERR", "h2_ppm": " "},  # blank is a missing value, not an error
            3: {"device_id": None, "ts": "2026-13-45"},
            4: {"site_id": ""},
        },
    )
    readings, dead = parse_field_rows(raw)
    assert readings["id"].to_list() == [1, 5]
    assert readings["ts"].to_list() == [T0, T0 + timedelta(seconds=4)]
    assert readings["co_ppm"].to_list() == [0.5, 4.5]
    assert dead["id"].to_list() == [2, 3, 4]
    assert dead["reason"].to_list() == [
        "co_ppm is not a number: 'ERR'",
        "device_id missing; ts is not an ISO 8601 time: '2026-13-45'",
        "site_id missing",
    ]
    assert dead["co_ppm"][0] == "ERR"  # the raw payload travels with its reason


def test_parsing_refuses_frames_without_the_field_columns() -> None:
    with pytest.raises(ValueError, match=r"lack columns.*device_id"):
        parse_field_rows(raw_rows(2).drop("device_id"))


def test_full_jitter_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=5.0)
    sleeps: list[float] = []
    calls = []

    def outage() -> None:
        calls.append(1)
        raise TransientError("connection reset")

    with pytest.raises(ExtractionError, match="reading failed 5 times, last: connection reset"):
        with_retries("reading", outage, policy, sleeps.append, lambda: 0.5)
    assert len(calls) == 5
    assert sleeps == [0.5, 1.0, 2.0, 2.5]  # half of 1, 2, 4, then the 5 s cap


def test_retries_stop_at_the_first_success_and_pass_other_errors_through() -> None:
    outcomes = iter([TransientError("x"), TransientError("y"), 42])

    def flaky() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    sleeps: list[float] = []
    assert with_retries("reading", flaky, RetryPolicy(), sleeps.append, lambda: 1.0) == 42
    assert sleeps == [0.5, 1.0]
    with pytest.raises(ZeroDivisionError):
        with_retries("reading", lambda: 1 / 0, RetryPolicy(), sleeps.append, lambda: 1.0)
    assert len(sleeps) == 2


def test_extraction_lands_every_source_key_once_and_dead_letters_the_bad(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink = SqliteSink(tmp_path / "bronze.db")
    summary = extract(NAME, source, sink, sink, store, chunk_rows=7, sleep=lambda s: None)
    assert (summary.chunks, summary.rows, summary.readings, summary.dead_letters) == (8, 50, 48, 2)
    assert sink.ids() == [i for i in range(1, 51) if i not in (17, 31)]
    assert sink.ids("dead") == [17, 31]
    assert summary.watermark == store.get(NAME) == Watermark(T0 + timedelta(seconds=50 // 3), 50)
    again = extract(NAME, source, sink, sink, store, chunk_rows=7)
    assert (again.chunks, again.rows, again.watermark) == (0, 0, summary.watermark)


def test_new_rows_after_the_watermark_are_picked_up_by_the_next_run(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink = SqliteSink(tmp_path / "bronze.db")
    extract(NAME, source, sink, sink, store, chunk_rows=20)
    append_field_rows(source.path, "field", raw_rows(5, first_id=51))
    summary = extract(NAME, source, sink, sink, store, chunk_rows=20)
    assert (summary.chunks, summary.rows) == (1, 5)
    assert sink.ids() + sink.ids("dead") == sorted(range(1, 56), key=lambda i: i in (17, 31))


@pytest.mark.parametrize("crash", ["during", "after"])
def test_a_run_killed_mid_chunk_and_run_again_lands_each_key_exactly_once(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore, crash: str
) -> None:
    sink = OnceCrashing(tmp_path / "bronze.db", crash, at_chunk=2)
    with pytest.raises(KeyboardInterrupt, match=f"killed {crash}"):
        extract(NAME, source, sink, sink, store, chunk_rows=7)
    # Two chunks committed; the third either half-written and rolled back, or fully written.
    assert store.get(NAME) == Watermark(T0 + timedelta(seconds=14 // 3), 14)
    assert sink.ids() == [i for i in range(1, 15 if crash == "during" else 22) if i != 17]
    extract(NAME, source, sink, sink, store, chunk_rows=7)
    with closing(sqlite3.connect(str(tmp_path / "bronze.db"))) as db:
        landed = [r[0] for r in db.execute("SELECT id FROM bronze UNION ALL SELECT id FROM dead")]
    source_ids = source.next_chunk(None, 1000)["id"].to_list()
    assert sorted(landed) == source_ids == list(range(1, 51))  # none lost, none twice


def test_an_outage_longer_than_the_retries_leaves_the_watermark_where_it_was(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink = SqliteSink(tmp_path / "bronze.db")
    extract(NAME, source, sink, sink, store, chunk_rows=10, max_chunks=2)
    before = store.get(NAME)

    class Down:
        calls = 0

        def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
            Down.calls += 1
            raise TransientError("warehouse unreachable")

    sleeps: list[float] = []
    with pytest.raises(ExtractionError) as failure:
        extract(
            NAME, Down(), sink, sink, store, retry=RetryPolicy(max_attempts=3), sleep=sleeps.append
        )
    assert f"watermark stays at {before}" in str(failure.value)
    assert "failed 3 times" in str(failure.value)
    assert Down.calls == 3
    assert len(sleeps) == 2
    assert store.get(NAME) == before == Watermark(T0 + timedelta(seconds=20 // 3), 20)
    assert sink.ids() == [i for i in range(1, 21) if i != 17]


def test_a_stale_run_cannot_move_the_watermark(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    ahead = Watermark(T0 + timedelta(hours=1), 999)

    class Overtaken(SqliteSink):
        def write_chunk(self, chunk: Chunk) -> None:
            super().write_chunk(chunk)
            store.commit(NAME, None, ahead)  # another run committed while this one wrote

    sink = Overtaken(tmp_path / "bronze.db")
    with pytest.raises(StaleWatermarkError, match="another run moved it"):
        extract(NAME, source, sink, sink, store, chunk_rows=10)
    assert store.get(NAME) == ahead


def test_bad_arguments_are_refused(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink = SqliteSink(tmp_path / "bronze.db")
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        extract(NAME, source, sink, sink, store, chunk_rows=0)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        Watermark(datetime(2026, 1, 1), 1)
    with pytest.raises(StaleWatermarkError, match="forward"):
        store.commit(NAME, Watermark(T0, 5), Watermark(T0, 5))


class RepeatingSource:
    """A source whose clock is finer than the watermark's: it hands back the watermark's row."""

    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        return raw_rows(1).head(limit)


def test_a_source_that_returns_the_watermarks_row_again_is_refused_with_the_likely_cause(
    tmp_path: Path, store: SqliteWatermarkStore
) -> None:
    sink = SqliteSink(tmp_path / "bronze.db")
    first = extract(NAME, RepeatingSource(), sink, sink, store, chunk_rows=1, max_chunks=1)
    assert first.watermark == Watermark(T0, 1)
    with pytest.raises(ExtractionError, match=r"not after .*TIMESTAMP_NTZ\(6\)"):
        extract(NAME, RepeatingSource(), sink, sink, store, chunk_rows=1)
    assert store.get(NAME) == first.watermark
    assert sink.ids() == [1]


def late_rows(
    watermark: Watermark, n: int = 10, first_id: int = 101, bad: dict | None = None
) -> pl.DataFrame:
    """n rows committed after `watermark`, stamped 60 s before it (a loader that commits late)."""
    return raw_rows(n, first_id=first_id, bad=bad).with_columns(
        pl.lit(watermark.updated_at - timedelta(seconds=60)).alias("updated_at")
    )


def test_rows_committed_behind_the_watermark_are_extracted_once_by_the_lookback(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink = SqliteSink(tmp_path / "bronze.db")
    first = extract(NAME, source, sink, sink, store, chunk_rows=7, lookback_s=300)
    assert first.watermark is not None
    append_field_rows(source.path, "field", late_rows(first.watermark))
    again = extract(NAME, source, sink, sink, store, chunk_rows=7, lookback_s=300)
    # All 60 rows sit within 300 s of the watermark: re-read, none past it, the watermark stays.
    assert (again.chunks, again.rows, again.reread) == (0, 0, 60)
    assert again.watermark == store.get(NAME) == first.watermark
    landed = sink.ids() + sink.ids("dead")
    assert sorted(landed) == [*range(1, 51), *range(101, 111)]  # each key exactly once
    # New rows after late ones: the watermark moves on from where it was, never back.
    append_field_rows(source.path, "field", raw_rows(3, first_id=51))
    third = extract(NAME, source, sink, sink, store, chunk_rows=7, lookback_s=300)
    assert (third.chunks, third.rows, third.reread) == (1, 3, 60)
    assert store.get(NAME) == Watermark(T0 + timedelta(seconds=53 // 3), 53)
    assert sorted(sink.ids() + sink.ids("dead")) == [*range(1, 54), *range(101, 111)]


def test_without_a_lookback_late_rows_are_missed_and_a_short_one_misses_older_ones(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink = SqliteSink(tmp_path / "bronze.db")
    first = extract(NAME, source, sink, sink, store, chunk_rows=20)
    assert first.watermark is not None
    append_field_rows(source.path, "field", late_rows(first.watermark))
    assert extract(NAME, source, sink, sink, store, chunk_rows=20).reread == 0
    short = extract(NAME, source, sink, sink, store, chunk_rows=20, lookback_s=59)
    assert short.reread == 50  # the on-time rows, 0 to 16 s behind; the late ones are 60 s
    assert not set(range(101, 111)) & set(sink.ids())


def test_the_lookback_window_is_read_whole_whatever_max_chunks_says(
    tmp_path: Path, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink = SqliteSink(tmp_path / "bronze.db")
    extract(NAME, source, sink, sink, store, chunk_rows=7)
    append_field_rows(source.path, "field", raw_rows(3, first_id=51))
    # 50 rows behind the watermark in 7-row chunks, then one chunk past it.
    summary = extract(NAME, source, sink, sink, store, chunk_rows=7, max_chunks=1, lookback_s=60)
    assert (summary.chunks, summary.rows, summary.reread) == (1, 3, 50)
    assert store.get(NAME) == Watermark(T0 + timedelta(seconds=53 // 3), 53)
    with pytest.raises(ValueError, match="lookback_s must be >= 0"):
        extract(NAME, source, sink, sink, store, lookback_s=-1)


def test_count_differences_lists_each_differing_day_with_a_missing_side_as_zero() -> None:
    def counts(*pairs: tuple[date, int]) -> pl.DataFrame:
        return pl.DataFrame(pairs, schema=DAILY_COUNT_SCHEMA, orient="row")

    d1, d2, d3 = date(2026, 5, 1), date(2026, 5, 2), date(2026, 5, 3)
    source, bronze = (
        counts((d1, 5), (d2, 7), (d3, 1)),
        counts((d1, 5), (d2, 4), (date(2026, 5, 4), 2)),
    )
    assert count_differences(source, bronze).rows() == [
        (d2, 7, 4, 3),
        (d3, 1, 0, 1),
        (date(2026, 5, 4), 0, 2, -2),
    ]
    assert count_differences(source, source).is_empty()
    with pytest.raises(ValueError, match="bronze counts need columns"):
        count_differences(source, bronze.rename({"rows": "n"}))


def test_bronze_daily_counts_stop_at_the_watermark_and_start_at_since() -> None:
    keys = (
        raw_rows(9)
        .with_columns(pl.Series("updated_at", [T0 - timedelta(days=1)] * 3 + [T0] * 6))
        .lazy()
    )
    at = Watermark(T0, 7)
    assert daily_counts(keys, at, None).rows() == [(date(2026, 4, 30), 3), (date(2026, 5, 1), 4)]
    assert daily_counts(keys, at, date(2026, 5, 1)).rows() == [(date(2026, 5, 1), 4)]
