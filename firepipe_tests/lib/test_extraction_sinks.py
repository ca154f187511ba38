"""The extraction faults of issue 4 against the real sinks: Iceberg tables in a local catalog, a
DuckDB source and a SQLite watermark store; every key compared with the source."""

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from pyiceberg.table import Transaction

from firepipe.core.ingestion.extraction import (
    DEAD_LETTER_SCHEMA,
    FIELD_READING_SCHEMA,
    Chunk,
    Watermark,
    extract,
)
from firepipe.lib.extraction_sinks import (
    DEAD_LETTERS_TABLE,
    FIELD_READINGS_TABLE,
    IcebergChunkSink,
    IcebergDeadLetterSink,
)
from firepipe.lib.field_seed import append_field_rows
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.warehouse import DuckDBWarehouseSource
from firepipe.resources.watermarks import SqliteWatermarkStore
from firepipe_tests.core.ingestion.test_extraction import T0, late_rows, raw_rows

NAME = "field_readings"
BAD = {17: {"co_ppm": "ERR"}, 31: {"ts": "soon"}}


@pytest.fixture
def source(tmp_path: Path) -> DuckDBWarehouseSource:
    path = str(tmp_path / "warehouse.duckdb")
    append_field_rows(path, "field", raw_rows(50, bad=BAD))
    return DuckDBWarehouseSource(path=path, table="field")


@pytest.fixture
def store(tmp_path: Path) -> SqliteWatermarkStore:
    return SqliteWatermarkStore(path=str(tmp_path / "watermarks.db"))


def landed_ids(lakehouse: LocalLakehouse) -> tuple[list[int], list[int]]:
    readings = lakehouse.read(FIELD_READINGS_TABLE)["id"].sort().to_list()
    dead = lakehouse.read(DEAD_LETTERS_TABLE)["id"].sort().to_list()
    return readings, dead


class KilledOnce(IcebergChunkSink):
    """Killed once, on chunk `at_chunk` (0-based): during its commit, or after it returned."""

    def __init__(self, lakehouse: LocalLakehouse, mode: str, at_chunk: int) -> None:
        super().__init__(lakehouse)
        self.mode, self.at_chunk, self.seen = mode, at_chunk, 0

    def write_chunk(self, chunk: Chunk) -> None:
        now = self.seen == self.at_chunk
        self.seen += 1
        if now and self.mode == "during":

            def killed(tx: Transaction) -> None:
                raise KeyboardInterrupt("killed during the commit")

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(Transaction, "commit_transaction", killed)
                super().write_chunk(chunk)
        super().write_chunk(chunk)
        if now:
            raise KeyboardInterrupt("killed after the write, before the watermark commit")


def test_extraction_into_iceberg_lands_every_key_once_with_values_and_reasons(
    lakehouse: LocalLakehouse, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink, dead = IcebergChunkSink(lakehouse), IcebergDeadLetterSink(lakehouse)
    summary = extract(NAME, source, sink, dead, store, chunk_rows=7)
    assert (summary.chunks, summary.readings, summary.dead_letters) == (8, 48, 2)
    assert landed_ids(lakehouse) == ([i for i in range(1, 51) if i not in BAD], [17, 31])
    readings = lakehouse.read(FIELD_READINGS_TABLE)
    assert readings.schema == pl.Schema(FIELD_READING_SCHEMA)
    row = readings.filter(pl.col("id") == 5).row(0, named=True)
    assert (row["co_ppm"], row["ts"], row["device_id"]) == (4.5, T0 + timedelta(seconds=4), "dev-0")
    letters = lakehouse.read(DEAD_LETTERS_TABLE).sort("id")
    assert letters.schema == pl.Schema(DEAD_LETTER_SCHEMA)
    assert letters["reason"].to_list() == [
        "co_ppm is not a number: 'ERR'",
        "ts is not an ISO 8601 time: 'soon'",
    ]
    assert extract(NAME, source, sink, dead, store, chunk_rows=7).chunks == 0
    assert lakehouse.table_rows(FIELD_READINGS_TABLE) == 48


@pytest.mark.parametrize("mode", ["during", "after"])
def test_a_run_killed_mid_chunk_and_run_again_lands_each_source_key_exactly_once(
    lakehouse: LocalLakehouse,
    source: DuckDBWarehouseSource,
    store: SqliteWatermarkStore,
    mode: str,
) -> None:
    dead = IcebergDeadLetterSink(lakehouse)
    with pytest.raises(KeyboardInterrupt, match=f"killed {mode}"):
        extract(NAME, source, KilledOnce(lakehouse, mode, at_chunk=2), dead, store, chunk_rows=7)
    # Two chunks committed; the third rolled back whole, or written but not acknowledged.
    assert store.get(NAME) == Watermark(T0 + timedelta(seconds=14 // 3), 14)
    readings, _ = landed_ids(lakehouse)
    assert readings == [i for i in range(1, 15 if mode == "during" else 22) if i != 17]

    extract(NAME, source, IcebergChunkSink(lakehouse), dead, store, chunk_rows=7)
    readings, letters = landed_ids(lakehouse)
    source_ids = source.next_chunk(None, 1000)["id"].to_list()
    assert sorted(readings + letters) == source_ids == list(range(1, 51))  # none lost or twice
    assert letters == [17, 31]


def test_ensure_table_creates_both_tables_empty_and_typed(lakehouse: LocalLakehouse) -> None:
    for sink, schema in (
        (IcebergChunkSink(lakehouse), FIELD_READING_SCHEMA),
        (IcebergDeadLetterSink(lakehouse), DEAD_LETTER_SCHEMA),
    ):
        sink.ensure_table()
        sink.ensure_table()  # once is enough; a second call changes nothing
        frame = lakehouse.read(sink.identifier)
        assert frame.height == 0
        assert frame.schema == pl.Schema(schema)
        assert len(lakehouse.snapshots(sink.identifier)) <= 1


def test_late_rows_land_once_and_a_reread_of_landed_rows_commits_nothing(
    lakehouse: LocalLakehouse, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink, dead = IcebergChunkSink(lakehouse), IcebergDeadLetterSink(lakehouse)
    first = extract(NAME, source, sink, dead, store, chunk_rows=7, lookback_s=300)
    assert first.watermark is not None
    commits = [len(lakehouse.snapshots(t)) for t in (FIELD_READINGS_TABLE, DEAD_LETTERS_TABLE)]
    # Nothing new: the whole window is re-read, and both tables already hold it.
    assert extract(NAME, source, sink, dead, store, chunk_rows=7, lookback_s=300).reread == 50
    assert [len(lakehouse.snapshots(t)) for t in (FIELD_READINGS_TABLE, DEAD_LETTERS_TABLE)] == (
        commits
    )
    append_field_rows(source.path, "field", late_rows(first.watermark, bad={105: {"h2_ppm": "x"}}))
    again = extract(NAME, source, sink, dead, store, chunk_rows=7, lookback_s=300)
    assert (again.chunks, again.reread, again.watermark) == (0, 60, first.watermark)
    readings, letters = landed_ids(lakehouse)
    assert readings == [i for i in [*range(1, 51), *range(101, 111)] if i not in (*BAD, 105)]
    assert letters == [17, 31, 105]
    late = lakehouse.read(FIELD_READINGS_TABLE).filter(pl.col("id") == 101).row(0, named=True)
    assert late["updated_at"] == first.watermark.updated_at - timedelta(seconds=60)


def test_chunks_without_dead_letters_commit_nothing_to_the_dead_letter_table(
    lakehouse: LocalLakehouse, source: DuckDBWarehouseSource, store: SqliteWatermarkStore
) -> None:
    sink, dead = IcebergChunkSink(lakehouse), IcebergDeadLetterSink(lakehouse)
    sink.ensure_table()
    dead.ensure_table()
    summary = extract(NAME, source, sink, dead, store, chunk_rows=7)
    # 8 chunks, 2 with a dead letter (ids 17 and 31): one commit each, none for the other 6.
    assert summary.chunks == 8
    catalog = lakehouse.catalog()
    assert len(catalog.load_table(DEAD_LETTERS_TABLE).snapshots()) == 2
    # Every chunk held readings: 8 commits; each of them one snapshot (nothing to delete).
    assert len(catalog.load_table(FIELD_READINGS_TABLE).snapshots()) == 8
