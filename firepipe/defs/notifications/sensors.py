"""The run-failure sensor: every failed run of this code location is notified once, through
the notifier (the local outbox, or SNS in AWS).

A plain sensor with its own cursor, not a `run_failure_sensor`: Dagster's run status sensors
move their cursor past a run even when the sensor's code raised on it, so a notifier that is
down (an SNS outage) would lose that run's notification for good. Here the cursor is the
storage id of the last RUN_FAILURE event handled, and it moves past a run of this code location
only once the notifier took it; a run the notifier refused is tried again on the next tick. The
run id is the dedup key, so a retry after a crash between notify and cursor update is still one
notification.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from firepipe.core.notifications import Notification, run_failure_notification
from firepipe.lib.aws_env import DAGSTER_UI_URL_VAR
from firepipe.resources.notifier import Notifier

# Each notification is one call to the notifier (a network round trip to SNS); a backlog after
# downtime drains this many per tick, well inside the sensor's evaluation timeout.
RUNS_PER_TICK = 25


@dg.sensor(
    name="run_failure_notifier",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_notifier(context: dg.SensorEvaluationContext, notifier: Notifier) -> dg.SkipReason:
    """Notify the job, run id and link, failed steps and first error of each failed run of this
    code location, oldest first. The first tick only marks where it starts: runs that failed
    before it are not notified, so a fresh deployment does not flood subscribers with old
    failures."""
    instance = context.instance
    after = _storage_id(context.cursor)
    if after is None:
        latest = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1)
        context.update_cursor(str(latest.records[0].storage_id if latest.records else -1))
        return dg.SkipReason("first tick: runs that fail from now on will be notified")

    records = instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(dg.DagsterEventType.RUN_FAILURE, after_storage_id=after),
        limit=RUNS_PER_TICK,
        ascending=True,
    ).records
    notified: list[str] = []
    for record in records:
        run = instance.get_run_by_id(record.run_id)
        # A deleted run, or one of another code location, is passed over for good.
        if run is not None and _in_this_code_location(run, context):
            try:
                notification_id = notifier.notify(_notification(instance, run, record))
            except Exception as error:
                # Nothing sent yet this tick: fail it. The UI shows a failed tick with the error,
                # and the daemon keeps no cursor from a failed tick, so the next one starts at
                # this run again. After some runs were sent, failing would throw their cursor
                # away too and send them again (a standard SNS topic delivers repeats), so keep
                # it and name the error; the next tick starts at this run, and fails if the
                # notifier is still down.
                if not notified:
                    raise
                return dg.SkipReason(
                    f"notified {len(notified)} failed runs, then the notifier failed on run "
                    f"{run.run_id} ({error!r}); the next tick tries it again"
                )
            context.log.info(
                f"run {run.run_id} failure notified as {notification_id} ({notifier.describe()})"
            )
            notified.append(run.run_id)
        context.update_cursor(str(record.storage_id))
    if not notified:
        return dg.SkipReason("no new failed run in this code location")
    return dg.SkipReason(f"notified {len(notified)} failed runs: {', '.join(notified)}")


def _storage_id(cursor: str | None) -> int | None:
    """The cursor's storage id; None for no cursor, or one this sensor did not write (the
    run_failure_sensor it replaced kept JSON there), which then starts afresh."""
    if cursor is None or not cursor.lstrip("-").isdigit():
        return None
    return int(cursor)


def _in_this_code_location(run: dg.DagsterRun, context: dg.SensorEvaluationContext) -> bool:
    """Whether `run` ran a job of the sensor's code location, as run_failure_sensor decides it
    (by the run's origin); a run executed in process (`execute_in_process`, tests) carries no
    origin, and then its job name decides."""
    origin, here = run.remote_job_origin, context.code_location_origin
    if origin is not None and here is not None:
        return (
            origin.location_name == here.location_name
            and origin.repository_origin.repository_name == context.repository_name
        )
    repository = context.repository_def
    return repository is not None and run.job_name in repository.job_names


def _notification(
    instance: dg.DagsterInstance, run: dg.DagsterRun, failure: dg.EventLogRecord
) -> Notification:
    run_failure = failure.event_log_entry.dagster_event
    if run_failure is None:
        raise ValueError(f"run {run.run_id}: its RUN_FAILURE record carries no Dagster event")
    step_failures = [
        event
        for record in instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
        ).records
        if (event := record.event_log_entry.dagster_event) is not None
    ]
    return run_failure_notification(
        job_name=run.job_name,
        run_id=run.run_id,
        error=_first_error(run_failure, step_failures),
        failed_steps=[event.step_key for event in step_failures if event.step_key],
        ui_url=dg.EnvVar(DAGSTER_UI_URL_VAR).get_value(),
    )


def _first_error(run_failure: dg.DagsterEvent, step_failures: Sequence[dg.DagsterEvent]) -> str:
    """The first failed step's error as its code raised it (Dagster wraps it in an execution
    error whose innermost cause is the user's), else the run's own error, else its message."""
    for event in (*step_failures, run_failure):
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return _innermost(error).message
    return run_failure.message or ""


def _innermost(error: Any) -> Any:
    """The last cause of a Dagster SerializableErrorInfo chain."""
    while error.cause is not None:
        error = error.cause
    return error
