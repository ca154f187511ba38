"""Sensors for outside events: new rows in the field warehouse, new files in the landing zone.

Both run by default: a deployment ingests from its first tick, and silver, gold and the ml
assets follow through their automation conditions (firepipe.defs.automation). The daily field
extraction (firepipe.defs.ingestion.schedules) asks for its runs the same way (`attempt`).
"""

from datetime import UTC, datetime

import dagster as dg

from firepipe.core.ingestion.extraction import TransientError, Watermark
from firepipe.core.ingestion.landing import due
from firepipe.defs.ingestion.assets import (
    EXTRACTION_NAME,
    FIELD_DEAD_LETTERS,
    FIELD_READINGS,
    LANDED_READINGS,
)
from firepipe.lib.runs import fail_if_worker_gone
from firepipe.resources.landing import LandingZone
from firepipe.resources.warehouse import WarehouseSource
from firepipe.resources.watermarks import WatermarkStore

# Where a sensor-started run began (the extraction watermark, the landing zone's cursor): runs
# with the same tag are attempts at the same work.
EXTRACTION_AFTER_TAG = "firepipe/extraction_after"
LANDING_AFTER_TAG = "firepipe/landing_after"
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# Sensor runs keep their progress as they go (the extraction commits its watermark per chunk,
# landing records each file as it writes it), so a run that run monitoring ends at this limit
# loses nothing and the next attempt goes on. An hour: a choice, far past a normal tick's work.
SENSOR_RUN_MAX_RUNTIME_S = 3600
# A probe reads the table's MAX(updated_at) and MAX(id), which Snowflake answers from metadata
# without resuming a warehouse; only when the newest rows share the watermark's time does it
# run the one-row keyset query. Every 5 minutes: a choice, not a measurement.
WAREHOUSE_INTERVAL_S = 300
# S3 listing of a landing prefix: once a minute, the settle time's order of magnitude.
LANDING_INTERVAL_S = 60


@dg.sensor(
    name="field_warehouse_sensor",
    asset_selection=[FIELD_READINGS, FIELD_DEAD_LETTERS],
    minimum_interval_seconds=WAREHOUSE_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def field_warehouse_sensor(
    context: dg.SensorEvaluationContext,
    warehouse_source: WarehouseSource,
    extraction_watermarks: WatermarkStore,
) -> dg.RunRequest | dg.SkipReason:
    """Extract when the field warehouse holds rows past the committed watermark.

    The run key names the watermark and the attempt: one run per watermark while it is in
    flight (a restarted daemon asks for the same key, which Dagster runs once), and a new
    attempt after a failed one, since a failure leaves the watermark where it was.
    """
    watermark = extraction_watermarks.get(EXTRACTION_NAME)
    try:
        new_rows = warehouse_source.has_rows_after(watermark)
    except TransientError as error:
        return dg.SkipReason(f"{warehouse_source.describe()} unreachable, next tick: {error}")
    if not new_rows:
        return dg.SkipReason(f"nothing after {watermark} in {warehouse_source.describe()}")
    return extraction_attempt(context, watermark)


def extraction_attempt(
    context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext, watermark: Watermark | None
) -> dg.RunRequest | dg.SkipReason:
    """An extraction run from `watermark` (None: from the start), unless one is in flight."""
    after = str(watermark) if watermark is not None else "start"
    return attempt(context, "field_readings", EXTRACTION_AFTER_TAG, after)


def attempt(
    context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext,
    what: str,
    tag: str,
    after: str,
) -> dg.RunRequest | dg.SkipReason:
    """A run for the work past `after`, unless a run of the same work (any run carrying `tag`,
    whoever asked for it) is in flight: one extraction or one ingestion at a time. Its run key
    names `after` and the attempt, so a restarted daemon asks for the same run (Dagster runs a
    key once) and a failed run, which leaves the durable cursor or watermark at `after`, is
    tried again."""
    in_flight = context.instance.get_runs(dg.RunsFilter(statuses=_ACTIVE))
    active = [run.run_id for run in in_flight if tag in run.tags and _live(context, run)]
    if active:
        return dg.SkipReason(f"{what} already running: {active[0]}")
    earlier = context.instance.get_runs(dg.RunsFilter(tags={tag: after}))
    return dg.RunRequest(
        run_key=f"{what} after {after} attempt {len(earlier) + 1}",
        tags={tag: after, "dagster/max_runtime": str(SENSOR_RUN_MAX_RUNTIME_S)},
    )


def _live(
    context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext, run: dg.DagsterRun
) -> bool:
    """False for a run whose processes were killed: it is marked failed here, so the sensor
    asks for the next attempt now instead of waiting on the dead run for good."""
    reason = fail_if_worker_gone(context.instance, run)
    if reason is not None:
        context.log.warning(f"run {run.run_id} marked failed: {reason}")
    return reason is None


@dg.sensor(
    name="landing_sensor",
    asset_selection=[LANDED_READINGS],
    minimum_interval_seconds=LANDING_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_sensor(
    context: dg.SensorEvaluationContext, landing_zone: LandingZone
) -> dg.RunRequest | dg.SkipReason:
    """Ingest when files landed that the landing zone's ledger (what ingestion has handled, kept
    in the zone) has not handled, but for those waiting for a second look that is not due yet,
    or a quarantined file was written to since; one run at a time, named by the ledger's state;
    a failed run is asked for again."""
    ledger = landing_zone.load_ledger()
    new = due(landing_zone.list_objects(), ledger, datetime.now(UTC), landing_zone.settle_s)
    rewritten = landing_zone.rewritten_in_quarantine()
    after = ledger.fingerprint()
    if not new and not rewritten:
        return dg.SkipReason(f"no new files in {landing_zone.describe()} (ledger {after})")
    return attempt(context, "landing", LANDING_AFTER_TAG, after)
