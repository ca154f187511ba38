"""The run-failure sensor: every failed run of this code location is notified once, through
the notifier (the local outbox, or SNS in AWS).

A notification that cannot be sent fails the tick, which leaves Dagster's cursor before the run,
so the next tick tries it again; the run id as dedup key keeps a retried run to one notification.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from firepipe.core.notifications import run_failure_notification
from firepipe.lib.aws_env import DAGSTER_UI_URL_VAR
from firepipe.resources.notifier import Notifier


@dg.run_failure_sensor(
    name="run_failure_notifier",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
)
def run_failure_notifier(context: dg.RunFailureSensorContext, notifier: Notifier) -> None:
    """Notify the job, run id and link, failed steps and first error of each failed run."""
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    notification = run_failure_notification(
        job_name=run.job_name,
        run_id=run.run_id,
        error=_first_error(context.failure_event, step_failures),
        failed_steps=[event.step_key for event in step_failures if event.step_key],
        ui_url=dg.EnvVar(DAGSTER_UI_URL_VAR).get_value(),
    )
    notification_id = notifier.notify(notification)
    context.log.info(
        f"run {run.run_id} failure notified as {notification_id} ({notifier.describe()})"
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
