"""The daily field extraction: at 01:00 UTC, whatever the warehouse sensor saw.

Its lookback re-reads the recent past for rows that arrived late, and it keeps bronze, and so
silver and gold, inside the lake's freshness window on a day without new rows. Its runs are
asked for as the sensor's are (`attempt`): tagged with the watermark they start from, and not
while another extraction is in flight, so the two never race for the extraction lock.
"""

import dagster as dg

from firepipe.defs.ingestion.assets import EXTRACTION_NAME, FIELD_DEAD_LETTERS, FIELD_READINGS
from firepipe.defs.ingestion.sensors import extraction_attempt
from firepipe.resources.watermarks import WatermarkStore

field_extraction = dg.define_asset_job(
    "field_extraction",
    selection=[FIELD_READINGS, FIELD_DEAD_LETTERS],
    description="Extract the field warehouse's rows past the watermark into bronze.",
)


@dg.schedule(
    name="field_extraction_daily",
    job=field_extraction,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Extract the field warehouse once a day (01:00 UTC), whatever the sensor saw.",
)
def field_extraction_daily(
    context: dg.ScheduleEvaluationContext, extraction_watermarks: WatermarkStore
) -> dg.RunRequest | dg.SkipReason:
    return extraction_attempt(context, extraction_watermarks.get(EXTRACTION_NAME))
