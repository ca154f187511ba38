"""The run-failure sensor, driven tick by tick on a real Dagster instance by jobs that really
fail, with the cursor each tick returns carried to the next as the daemon does; and the
notification it builds."""

from pathlib import Path

import dagster as dg
import pytest

from firepipe.core.notifications import RUN_FAILURE_SOURCE, Notification, run_failure_notification
from firepipe.defs.notifications.sensors import run_failure_notifier
from firepipe.lib.aws_env import DAGSTER_UI_URL_VAR
from firepipe.resources.notifier import LocalNotifier


@dg.op
def read_sensor() -> int:
    raise RuntimeError("sensor reading out of range: 9000 C")


@dg.op
def score(reading: int) -> int:
    return reading


@dg.op
def healthy() -> int:
    return 1


@dg.job
def detector_job() -> None:
    score(read_sensor())
    healthy()


@dg.job
def healthy_job() -> None:
    healthy()


@dg.job
def elsewhere_job() -> None:
    """A job of another code location: not in REPOSITORY."""
    read_sensor()


REPOSITORY = dg.Definitions(jobs=[detector_job, healthy_job]).get_repository_def()


class FlakyOutbox(LocalNotifier):
    """The outbox, refusing the runs in `refused` as SNS does during an outage."""

    refused: list[str]

    def notify(self, notification: Notification) -> str:
        if notification.dedup_key in self.refused:
            raise ConnectionError("SNS: service unavailable")
        return super().notify(notification)


def tick(
    instance: dg.DagsterInstance, cursor: str | None, notifier: LocalNotifier
) -> tuple[str | None, str | None]:
    """One evaluation as the daemon runs it: its cursor and skip message."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=REPOSITORY,
        resources={"notifier": notifier},
    )
    data = run_failure_notifier.evaluate_tick(context)
    assert not data.run_requests
    return data.cursor, data.skip_message


def run(instance: dg.DagsterInstance, job: dg.JobDefinition) -> str:
    return job.execute_in_process(instance=instance, raise_on_error=False).run_id


def notified(outbox: LocalNotifier) -> list[str]:
    """The run ids in the outbox, oldest first."""
    return [r.notification.dedup_key for r in reversed(outbox.recent())]


def test_a_failed_run_is_notified_once_with_its_job_steps_and_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DAGSTER_UI_URL_VAR, "http://127.0.0.1:3000/")
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    with dg.instance_for_test() as instance:
        start, _ = tick(instance, None, outbox)
        run_id = run(instance, detector_job)
        after, message = tick(instance, start, outbox)
        # a crash between notify and the cursor update: the next tick sees the run again
        tick(instance, start, outbox)

    assert message == f"notified 1 failed runs: {run_id}"
    assert after != start
    [record] = outbox.recent()
    n = record.notification
    assert n.dedup_key == run_id
    assert n.severity == "error"
    assert n.source == RUN_FAILURE_SOURCE
    assert n.subject == f"firepipe: job detector_job failed (run {run_id[:8]})"
    assert n.attributes == {"job": "detector_job", "run_id": run_id}
    assert n.body.splitlines() == [
        "Job detector_job failed.",
        f"Run: {run_id}",
        f"Open: http://127.0.0.1:3000/runs/{run_id}",
        "Failed steps: read_sensor",  # score was skipped, healthy succeeded: neither failed
        "Error: RuntimeError: sensor reading out of range: 9000 C",
    ]


def test_a_notifier_outage_fails_the_tick_and_the_next_tick_notifies(tmp_path: Path) -> None:
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    with dg.instance_for_test() as instance:
        start, _ = tick(instance, None, outbox)
        run_id = run(instance, detector_job)
        down = FlakyOutbox(path=outbox.path, refused=[run_id])
        with pytest.raises(ConnectionError, match="service unavailable"):
            tick(instance, start, down)
        assert notified(outbox) == []

        # the daemon keeps no cursor from a failed tick: the next one starts from `start`
        after, _ = tick(instance, start, outbox)
        assert notified(outbox) == [run_id]
        again, message = tick(instance, after, outbox)

    assert (again, message) == (after, "no new failed run in this code location")
    assert notified(outbox) == [run_id]


def test_an_outage_after_some_runs_keeps_the_cursor_at_the_last_notified(tmp_path: Path) -> None:
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    with dg.instance_for_test() as instance:
        start, _ = tick(instance, None, outbox)
        first, second = run(instance, detector_job), run(instance, detector_job)
        flaky = FlakyOutbox(path=outbox.path, refused=[second])
        middle, message = tick(instance, start, flaky)
        assert notified(outbox) == [first]
        assert message == (
            f"notified 1 failed runs, then the notifier failed on run {second} "
            "(ConnectionError('SNS: service unavailable')); the next tick tries it again"
        )
        # the failed run is next: refused again it fails the tick, as with nothing sent
        with pytest.raises(ConnectionError):
            tick(instance, middle, flaky)
        end, _ = tick(instance, middle, outbox)
        assert tick(instance, end, outbox)[0] == end

    assert notified(outbox) == [first, second]


def test_each_failed_run_is_its_own_notification_in_order(tmp_path: Path) -> None:
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    with dg.instance_for_test() as instance:
        start, _ = tick(instance, None, outbox)
        first, second = run(instance, detector_job), run(instance, detector_job)
        tick(instance, start, outbox)

    assert notified(outbox) == [first, second]


def test_successful_runs_and_other_code_locations_are_not_notified(tmp_path: Path) -> None:
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    with dg.instance_for_test() as instance:
        start, _ = tick(instance, None, outbox)
        run(instance, healthy_job)
        elsewhere = run(instance, elsewhere_job)
        assert instance.get_run_by_id(elsewhere).status is dg.DagsterRunStatus.FAILURE
        after, message = tick(instance, start, outbox)

    assert message == "no new failed run in this code location"
    assert after != start  # passed over for good, not looked at again
    assert notified(outbox) == []


def test_runs_that_failed_before_the_first_tick_are_not_notified(tmp_path: Path) -> None:
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    with dg.instance_for_test() as instance:
        run(instance, detector_job)
        start, message = tick(instance, None, outbox)
        assert message == "first tick: runs that fail from now on will be notified"
        assert tick(instance, start, outbox) == (start, "no new failed run in this code location")
        later = run(instance, detector_job)
        tick(instance, start, outbox)

    assert notified(outbox) == [later]


def test_the_sensor_runs_by_default_in_the_code_location(firepipe_home: Path) -> None:
    from firepipe.definitions import defs

    sensor = defs().resolve_sensor_def("run_failure_notifier")
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30
    assert sensor.required_resource_keys == {"notifier"}


def test_notification_of_a_run_that_failed_outside_its_steps() -> None:
    n = run_failure_notification("end_to_end", "abcdef12-3456", None, [], ui_url=None)
    assert n.body.splitlines()[2:] == [
        "Open: /runs/abcdef12-3456",
        "Failed steps: none (the run failed outside its steps)",
        "Error: no error message recorded",
    ]
    long = run_failure_notification("j", "r", "x" * 5000, ["a", "b"]).body.splitlines()
    assert long[3] == "Failed steps: a, b"
    assert long[4] == "Error: " + "x" * 1997 + "..."
