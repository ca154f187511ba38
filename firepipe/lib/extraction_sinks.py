"""The extraction sinks over the lakehouse: field readings and dead letters as Iceberg tables.

Each write is one Iceberg commit that replaces the rows of the chunk's key range
[chunk.first, chunk.last] (`tables.KeyRange` on (updated_at, id)) by the chunk's rows. A run
killed after the write but before the watermark commit re-reads the same range and rewrites the
same rows: nothing is added twice, and a chunk never half-lands (a commit is atomic).

A write whose range already holds exactly the chunk's rows commits nothing: every extraction
re-reads a lookback window behind its watermark (late rows), and a commit per re-read chunk
would add snapshots (and metadata) to both tables on every run for rows already there.
"""

from collections.abc import Mapping

import polars as pl

from firepipe import names
from firepipe.core.ingestion.extraction import (
    DEAD_LETTER_SCHEMA,
    FIELD_READING_SCHEMA,
    KEY_ID,
    KEY_UPDATED_AT,
    Chunk,
)
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import Lakehouse

FIELD_READINGS_TABLE = names.table_name(names.FIELD_READINGS)
DEAD_LETTERS_TABLE = names.table_name(names.FIELD_DEAD_LETTERS)


def chunk_scope(chunk: Chunk) -> tables.Scope:
    """The rows a chunk owns: its (updated_at, id) key range."""
    key_range = tables.KeyRange(
        KEY_UPDATED_AT,
        KEY_ID,
        (chunk.first.updated_at, chunk.first.id),
        (chunk.last.updated_at, chunk.last.id),
    )
    return tables.Scope(((key_range,),))


def _sorted(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.sort(KEY_UPDATED_AT, KEY_ID)


class _IcebergChunkTable:
    SCHEMA: Mapping[str, pl.DataType]

    def __init__(self, lakehouse: Lakehouse, identifier: str) -> None:
        self.lakehouse, self.identifier = lakehouse, identifier

    def _replace(self, chunk: Chunk, rows: pl.DataFrame) -> None:
        catalog, scope = self.lakehouse.catalog(), chunk_scope(chunk)
        # A write that would leave the range as bronze holds it commits nothing: a re-read of the
        # lookback window, or no rows (most chunks have no dead letters). A new chunk with rows
        # is written without reading the range first.
        compare = chunk.reread or rows.is_empty()
        if compare and tables.load_table(catalog, self.identifier) is not None:
            held = tables.read_table(catalog, self.identifier, scope)
            if held.columns == rows.columns and _sorted(held).equals(_sorted(rows)):
                return
        # Also for no rows: a re-run must clear what an earlier attempt left in the range.
        tables.write_table(catalog, self.identifier, rows, scope=scope)

    def ensure_table(self) -> None:
        """Create the table, empty, if it is missing, so readers always find it."""
        catalog = self.lakehouse.catalog()
        if not catalog.table_exists(self.identifier):
            tables.write_table(catalog, self.identifier, pl.DataFrame(schema=dict(self.SCHEMA)))


class IcebergChunkSink(_IcebergChunkTable):
    """firepipe.core.extraction.ChunkSink: parsed field readings."""

    SCHEMA = FIELD_READING_SCHEMA

    def __init__(self, lakehouse: Lakehouse, identifier: str = FIELD_READINGS_TABLE) -> None:
        super().__init__(lakehouse, identifier)

    def write_chunk(self, chunk: Chunk) -> None:
        self._replace(chunk, chunk.readings)


class IcebergDeadLetterSink(_IcebergChunkTable):
    """firepipe.core.extraction.DeadLetterSink: unparseable rows with their reason."""

    SCHEMA = DEAD_LETTER_SCHEMA

    def __init__(self, lakehouse: Lakehouse, identifier: str = DEAD_LETTERS_TABLE) -> None:
        super().__init__(lakehouse, identifier)

    def write_dead_letters(self, chunk: Chunk) -> None:
        self._replace(chunk, chunk.dead_letters)
