"""What the run summary makes of check outcomes: a failed warning is reported, not a failure."""

import dagster as dg

from firepipe.run_summary import CheckOutcome, RunSummary, render


def summary(*checks: CheckOutcome) -> RunSummary:
    return RunSummary(
        "end_to_end", "a" * 32, dg.DagsterRunStatus.SUCCESS.value, 1.0, checks=list(checks)
    )


def test_a_failed_warning_is_printed_but_the_run_succeeded() -> None:
    warned = summary(
        CheckOutcome("bronze/synthetic_readings", "schema", True),
        CheckOutcome("bronze/synthetic_readings", "scenario_mix", False, blocking=False),
    )
    assert warned.succeeded
    text = render(warned, "/home")
    assert "Asset checks: 1 of 2 passed" in text
    assert "WARNING bronze/synthetic_readings scenario_mix" in text


def test_a_failed_blocking_check_fails_the_summary() -> None:
    failed = summary(CheckOutcome("silver/sensor_readings", "duplicate_rate", False))
    assert not failed.succeeded
    assert "FAILED silver/sensor_readings duplicate_rate" in render(failed, "/home")
