"""Sensors for outside events: new rows in the field warehouse, new files in the landing zone.

Both are stopped by default (the end_to_end job materialises the bronze assets anyway); turn
them on in the UI or with `dagster sensor start`.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from firepipe.core.extraction import TransientError
from firepipe.core.landing import LandingCursor, pending
from firepipe.defs.ingestion.assets import (
    EXTRACTION_NAME,
    FIELD_DEAD_LETTERS,
    FIELD_READINGS,
    LANDED_READINGS,
)
from firepipe.resources.landing import LandingZone
from firepipe.resources.warehouse import WarehouseSource
from firepipe.resources.watermarks import WatermarkStore

# The watermark a sensor-started extraction run began after: runs with the same tag are
# attempts at the same rows.
EXTRACTION_AFTER_TAG = "firepipe/extraction_after"
LANDING_FILES_TAG = "firepipe/landing_files"
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# A probe is one indexed query for one row; every 5 minutes keeps a Snowflake warehouse from
# resuming more than the extraction needs. A choice, not a measurement.
WAREHOUSE_INTERVAL_S = 300
# S3 listing of a landing prefix: once a minute, the settle time's order of magnitude.
LANDING_INTERVAL_S = 60


@dg.sensor(
    name="field_warehouse_sensor",
    asset_selection=[FIELD_READINGS, FIELD_DEAD_LETTERS],
    minimum_interval_seconds=WAREHOUSE_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
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
        probe = warehouse_source.next_chunk(watermark, 1)
    except TransientError as error:
        return dg.SkipReason(f"{warehouse_source.describe()} unreachable, next tick: {error}")
    if probe.is_empty():
        return dg.SkipReason(f"nothing after {watermark} in {warehouse_source.describe()}")
    after = str(watermark) if watermark is not None else "start"
    earlier = context.instance.get_runs(dg.RunsFilter(tags={EXTRACTION_AFTER_TAG: after}))
    active = [run.run_id for run in earlier if run.status in _ACTIVE]
    if active:
        return dg.SkipReason(f"extraction after {after} already running: {active[0]}")
    return dg.RunRequest(
        run_key=f"field_readings after {after} attempt {len(earlier) + 1}",
        tags={EXTRACTION_AFTER_TAG: after},
    )


@dg.sensor(
    name="landing_sensor",
    asset_selection=[LANDED_READINGS],
    minimum_interval_seconds=LANDING_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def landing_sensor(
    context: dg.SensorEvaluationContext, landing_zone: LandingZone
) -> dg.SensorResult | dg.SkipReason:
    """Ingest when settled files landed past the cursor; each file asks for one run.

    The cursor is the (last_modified, key) of the newest file asked for, kept by Dagster; it
    starts from the landing zone's own ingestion cursor, so files ingested before the sensor
    was turned on are not asked for again. The run key is the newest file's position, so a
    restart that repeats a tick cannot ask twice.
    """
    known = [
        c
        for c in (LandingCursor.from_json(context.cursor), landing_zone.load_cursor())
        if c is not None
    ]
    cursor = max(known) if known else None
    settled_before = datetime.now(UTC) - timedelta(seconds=landing_zone.settle_s)
    new = pending(landing_zone.list_objects(), cursor, settled_before)
    if not new:
        return dg.SkipReason(f"no new settled files in {landing_zone.describe()} after {cursor}")
    last = new[-1].position
    request = dg.RunRequest(
        run_key=f"landing {last.last_modified.isoformat()} {last.key}",
        tags={LANDING_FILES_TAG: str(len(new))},
    )
    return dg.SensorResult(run_requests=[request], cursor=last.to_json())
