"""Field data into bronze: incremental extraction from the field warehouse, and landed files.

- bronze/field_readings + bronze/field_dead_letters: `firepipe.core.extraction.extract` from the
  `warehouse_source` (DuckDB locally, Snowflake in AWS) after the watermark committed in
  `extraction_watermarks`, chunk by chunk into Iceberg (`lib.extraction_sinks`); one run at a
  time, a second is refused at once.
- bronze/landed_readings: every settled file in the `landing_zone` past its stored cursor
  (`resources.landing.ingest_landing`); unreadable or schema-breaking files are quarantined
  with their reason and the run goes on.

Each asset creates its table even when nothing new arrived, so silver can always read it.
"""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from firepipe import names
from firepipe.core.ingestion.extraction import ExtractionBusyError, ExtractionError, extract
from firepipe.core.ingestion.landing import LANDED_SCHEMA
from firepipe.defs.metadata import markdown_table
from firepipe.lib.extraction_sinks import (
    DEAD_LETTERS_TABLE,
    FIELD_READINGS_TABLE,
    IcebergChunkSink,
    IcebergDeadLetterSink,
)
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import Lakehouse
from firepipe.resources.landing import LandingZone, ingest_landing
from firepipe.resources.warehouse import WarehouseSource
from firepipe.resources.watermarks import WatermarkStore

FIELD_READINGS = dg.AssetKey(names.FIELD_READINGS)
FIELD_DEAD_LETTERS = dg.AssetKey(names.FIELD_DEAD_LETTERS)
LANDED_READINGS = dg.AssetKey(names.LANDED_READINGS)
LANDED_TABLE = names.table_name(names.LANDED_READINGS)
# The watermark's name in the store: one extraction of one source table.
EXTRACTION_NAME = "field_readings"


class FieldExtractionConfig(dg.Config):
    # 50,000 rows (~5 MB as text) per chunk: one Iceberg commit per chunk stays cheap next to
    # the rows it carries, and a killed run redoes at most one chunk. A choice, not a measurement.
    chunk_rows: int = 50_000
    max_chunks: int | None = None  # None: until the source has nothing newer


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            FIELD_READINGS,
            group_name=names.group_name(names.LANDED_READINGS),
            kinds={"snowflake", "iceberg"},
            description="Field readings parsed from the warehouse, one row per source key "
            "(updated_at, id), typed; extracted incrementally after a committed watermark.",
        ),
        dg.AssetSpec(
            FIELD_DEAD_LETTERS,
            group_name=names.group_name(names.LANDED_READINGS),
            kinds={"snowflake", "iceberg"},
            description="Field rows that could not be parsed, as the warehouse held them, "
            "with the reason.",
        ),
    ],
    can_subset=False,
)
def field_readings(
    context: dg.AssetExecutionContext,
    config: FieldExtractionConfig,
    warehouse_source: WarehouseSource,
    extraction_watermarks: WatermarkStore,
    lakehouse: Lakehouse,
) -> Iterator[dg.MaterializeResult]:
    """Incremental extraction of field readings, chunk by chunk, into bronze."""
    readings, dead_letters = IcebergChunkSink(lakehouse), IcebergDeadLetterSink(lakehouse)
    # One extraction at a time, refused at once: two would race on the watermark and on the
    # same key ranges (one fails with StaleWatermarkError, the other with pyiceberg's "Added
    # data files were found matching the filter"). A lock in the watermark store, not a Dagster
    # pool: a pool's slots live in the instance, which must be configured with its limit; a
    # second run's step waits for the slot instead of being refused; and a SIGKILLed run keeps
    # its claimed slot until a person frees it in the UI (Dagster frees slots of runs it sees
    # end). The store's lock (a file lock locally, a lease in DynamoDB on AWS) binds runs of
    # `dagster job execute` and of the daemon alike, refuses at once, and ends with the process
    # that holds it.
    try:
        with extraction_watermarks.exclusive(EXTRACTION_NAME, context.run.run_id):
            readings.ensure_table()
            dead_letters.ensure_table()
            before = extraction_watermarks.get(EXTRACTION_NAME)
            with warehouse_source.session() as source:
                summary = extract(
                    EXTRACTION_NAME,
                    source,
                    readings,
                    dead_letters,
                    extraction_watermarks,
                    chunk_rows=config.chunk_rows,
                    max_chunks=config.max_chunks,
                )
    except (ExtractionBusyError, ExtractionError) as error:
        raise dg.Failure(
            description=str(error),
            metadata={
                "source": warehouse_source.describe(),
                "watermark": str(extraction_watermarks.get(EXTRACTION_NAME)),
            },
        ) from error
    context.log.info(
        f"{summary.rows} rows in {summary.chunks} chunks from {warehouse_source.describe()}; "
        f"watermark {before} -> {summary.watermark}"
    )
    common = {
        "source": warehouse_source.describe(),
        "watermarks": extraction_watermarks.describe(),
        "watermark_before": str(before),
        "watermark": str(summary.watermark),
        "chunks": summary.chunks,
        "source_rows": summary.rows,
    }
    yield dg.MaterializeResult(
        asset_key=FIELD_READINGS,
        metadata={
            **common,
            "rows": summary.readings,
            "dead_letters": summary.dead_letters,
            "dagster/table_name": FIELD_READINGS_TABLE,
            "iceberg/table_rows": lakehouse.table_rows(FIELD_READINGS_TABLE),
        },
    )
    yield dg.MaterializeResult(
        asset_key=FIELD_DEAD_LETTERS,
        metadata={
            **common,
            "rows": summary.dead_letters,
            "dagster/table_name": DEAD_LETTERS_TABLE,
            "iceberg/table_rows": lakehouse.table_rows(DEAD_LETTERS_TABLE),
        },
    )


@dg.asset(
    key=LANDED_READINGS,
    group_name=names.group_name(names.LANDED_READINGS),
    kinds={"s3", "polars", "iceberg"},
)
def landed_readings(
    context: dg.AssetExecutionContext, landing_zone: LandingZone, lakehouse: Lakehouse
) -> dg.MaterializeResult:
    """Readings from files dropped in the landing zone (CSV, Parquet, JSON lines), each file
    once; files that cannot become readings are quarantined with their rule and reason."""
    catalog = lakehouse.catalog()
    if not catalog.table_exists(LANDED_TABLE):
        tables.write_table(catalog, LANDED_TABLE, pl.DataFrame(schema=LANDED_SCHEMA))
    run = ingest_landing(landing_zone, lakehouse, LANDED_TABLE)
    summary = run.summary
    quarantined = pl.DataFrame(
        {
            "file": [q.key for q in run.quarantined],
            "rule": [q.rule for q in run.quarantined],
            "reason": [q.reason for q in run.quarantined],
            "moved_to": [q.quarantined_key for q in run.quarantined],
        },
        schema=dict.fromkeys(("file", "rule", "reason", "moved_to"), pl.String),
    )
    for q in run.quarantined:
        context.log.warning(f"quarantined {q.key}: {q.rule}: {q.reason}")
    metadata = {
        "landing_zone": landing_zone.describe(),
        "files_ingested": len(summary.ingested),
        "ingested": "\n".join(summary.ingested) or "none",
        "rows": summary.rows,
        "duplicates": len(summary.duplicates),
        "files_quarantined": quarantined.height,
        "quarantined": markdown_table(quarantined),
        "cursor": summary.cursor.to_json() if summary.cursor else "none",
        "dagster/table_name": LANDED_TABLE,
        "iceberg/table_rows": lakehouse.table_rows(LANDED_TABLE),
    }
    if summary.failed is not None:
        key, error = summary.failed
        # What was handled before it stays handled (the cursor was stored); the next run
        # retries this file.
        raise dg.Failure(description=f"landing stopped at {key}: {error}", metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)
