"""Silver's catch-up: a bronze update that silver's eager condition counted as handled, although
the silver run it credits had read bronze before it.

Dagster's `eager` resets on the tick after it requested silver, and an upstream update that
falls between silver's run reading bronze and that tick is taken as handled by the run (see
docs/architecture.md, "Automation"). Such an update would reach silver only with the next bronze
change. This sensor finds it from the instance's own records: a bronze materialisation newer
than the start of the run that made silver's latest materialisation, old enough that the
automation has had its ticks to act, with no run that could build silver in flight; then it asks
for silver (its downstream follows eagerly).
"""

from datetime import UTC, datetime

import dagster as dg

from firepipe.defs.automation import AUTOMATION_INTERVAL_S
from firepipe.defs.lake.assets import BRONZE_KEYS, QUARANTINE_KEY, READINGS_KEY

# Two automation ticks: an update younger than that is still eager's to follow.
GRACE_S = 2 * AUTOMATION_INTERVAL_S
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _builds_silver(run: dg.DagsterRun) -> bool:
    """Whether `run` may materialise silver (a run of a whole job may: end_to_end)."""
    return run.asset_selection is None or READINGS_KEY in run.asset_selection


@dg.sensor(
    name="silver_catch_up",
    asset_selection=[READINGS_KEY, QUARANTINE_KEY],
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def silver_catch_up(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Rebuild silver when a bronze update came in after its latest run read bronze and the
    automation did not ask for silver since."""
    instance = context.instance
    silver = instance.get_latest_materialization_event(READINGS_KEY)
    if silver is None or silver.run_id is None:
        return dg.SkipReason("silver was never materialised: its automation builds it first")
    record = instance.get_run_record_by_id(silver.run_id)
    read_from = record.start_time if record and record.start_time else silver.timestamp
    now = datetime.now(UTC).timestamp()
    late = {
        key.to_user_string(): event.run_id
        for key in BRONZE_KEYS.values()
        if (event := instance.get_latest_materialization_event(key)) is not None
        and read_from < event.timestamp <= now - GRACE_S
    }
    if not late:
        return dg.SkipReason("silver's latest run read every bronze update older than the grace")
    in_flight = [r for r in instance.get_runs(dg.RunsFilter(statuses=_ACTIVE)) if _builds_silver(r)]
    if in_flight:
        return dg.SkipReason(f"a run that builds silver is in flight: {in_flight[0].run_id}")
    updates = ", ".join(f"{key} (run {run_id})" for key, run_id in sorted(late.items()))
    context.log.info(f"silver run {silver.run_id} started before bronze updates {updates}")
    # One run per missed set of updates: a restarted daemon asks for the same key.
    return dg.RunRequest(run_key=f"silver after {silver.run_id}: {updates}")
