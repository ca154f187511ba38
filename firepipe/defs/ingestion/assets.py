"""Field data into bronze: incremental extraction from the field warehouse, and landed files.

- bronze/field_readings + bronze/field_dead_letters: `firepipe.core.extraction.extract` from the
  `warehouse_source` (DuckDB locally, Snowflake in AWS) after the watermark committed in
  `extraction_watermarks`, chunk by chunk into Iceberg (`lib.extraction_sinks`); one run at a
  time, a second is refused at once. Each run re-reads `lookback_s` behind the watermark for
  rows a loader committed late; the check `daily_counts_match_source` warns when bronze and the
  source count different rows on a day up to the watermark.
- bronze/landed_readings: every upload in the `landing_zone` that its stored ledger has not
  handled, once the file shows it is complete (`resources.landing.ingest_landing`); unreadable
  or schema-breaking files are quarantined with their reason and the run goes on; files still
  waiting are listed with why.

Each asset creates its table even when nothing new arrived, so silver can always read it.
"""

from collections.abc import Iterator
from datetime import UTC, timedelta

import dagster as dg
import polars as pl

from firepipe import names
from firepipe.core.ingestion.extraction import ExtractionBusyError, ExtractionError, extract
from firepipe.core.ingestion.landing import LANDED_SCHEMA
from firepipe.core.ingestion.reconciliation import count_differences, daily_counts
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
    # Rows a loader commits with an updated_at already behind the watermark are re-read if they
    # are at most this late. Five minutes: longer than a loading transaction is expected to stay
    # open (a choice, not a measurement); the re-read rows cost a read, not a commit, when
    # bronze holds them already (lib.extraction_sinks). Later rows: the check below warns.
    lookback_s: float = 300.0


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
    before = None
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
                    lookback_s=config.lookback_s,
                )
    except (ExtractionBusyError, ExtractionError) as error:
        raise dg.Failure(
            description=str(error),
            metadata={
                "source": warehouse_source.describe(),
                # The watermark the run started from: the error says where it stayed. No store
                # call here, which could fail as the store did and hide the error.
                "watermark_before": str(before),
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
        "lookback_s": config.lookback_s,
        "reread_rows": summary.reread,
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


class ReconciliationConfig(dg.Config):
    # Trailing UTC days compared, the watermark's day included: the source's GROUP BY scans
    # updated_at of these days only (a whole-table count grows with the table). None: all days.
    days: int | None = 7


@dg.asset_check(
    asset=FIELD_READINGS,
    name="daily_counts_match_source",
    description="Per UTC day of updated_at, up to the committed watermark: source rows = bronze "
    "field readings + dead letters. Warns with the days that differ (rows committed later than "
    "the lookback window, or lost).",
)
def daily_counts_match_source(
    config: ReconciliationConfig,
    warehouse_source: WarehouseSource,
    extraction_watermarks: WatermarkStore,
    lakehouse: Lakehouse,
) -> dg.AssetCheckResult:
    if config.days is not None and config.days < 1:
        raise ValueError(f"days must be >= 1 or None, got {config.days}")
    # The watermark first: what either side counts up to it is settled, whatever runs meanwhile.
    watermark = extraction_watermarks.get(EXTRACTION_NAME)
    if watermark is None:
        return dg.AssetCheckResult(
            passed=True, metadata={"watermark": "none: nothing extracted yet"}
        )
    since = None
    if config.days is not None:
        since = watermark.updated_at.astimezone(UTC).date() - timedelta(days=config.days - 1)
    keys = pl.concat(
        [
            lakehouse.scan(t).select("updated_at", "id")
            for t in (FIELD_READINGS_TABLE, DEAD_LETTERS_TABLE)
        ]
    )
    bronze = daily_counts(keys, watermark, since)
    source = warehouse_source.daily_counts(watermark, since)
    differing = count_differences(source, bronze)
    return dg.AssetCheckResult(
        passed=differing.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "source": warehouse_source.describe(),
            "watermark": str(watermark),
            "since": str(since or "all days"),
            "source_days": source.height,
            "source_rows": int(source["rows"].sum()),
            "bronze_rows": int(bronze["rows"].sum()),
            "days_differing": differing.height,
            "differences": markdown_table(differing),
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
    waiting = pl.DataFrame(
        {"file": list(summary.waiting), "why": list(summary.waiting.values())},
        schema=dict.fromkeys(("file", "why"), pl.String),
    )
    for q in run.quarantined:
        context.log.warning(f"quarantined {q.key}: {q.rule}: {q.reason}")
    for key in run.reclaimed:
        context.log.warning(f"{key} was written to after it was quarantined: judged again")
    metadata = {
        "landing_zone": landing_zone.describe(),
        "files_ingested": len(summary.ingested),
        "ingested": "\n".join(summary.ingested) or "none",
        "rows": summary.rows,
        "duplicates": len(summary.duplicates),
        "files_quarantined": quarantined.height,
        "quarantined": markdown_table(quarantined),
        "files_waiting": waiting.height,
        "waiting": markdown_table(waiting),
        "reclaimed_from_quarantine": "\n".join(run.reclaimed) or "none",
        "ledger": summary.ledger.fingerprint(),
        "dagster/table_name": LANDED_TABLE,
        "iceberg/table_rows": lakehouse.table_rows(LANDED_TABLE),
    }
    if summary.failed is not None:
        key, error = summary.failed
        # What was handled before it stays handled (the ledger was stored); the next run
        # retries this file.
        raise dg.Failure(description=f"landing stopped at {key}: {error}", metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)
