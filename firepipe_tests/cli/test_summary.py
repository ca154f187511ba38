"""What the run summary makes of check outcomes: a failed warning is reported, not a failure."""

import dagster as dg

from firepipe.cli.summary import CheckOutcome, RunSummary, render


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


def test_the_detector_section_shows_the_candidate_its_figures_and_the_decision() -> None:
    run = summary()
    run.detector = {
        "ml/detector": {
            "model_uri": "models:/d/3",
            "algorithm": "lightgbm",
            "threshold": 0.75,
            "persistence_s": 4.0,
            "profile_points": 3,
        },
        "ml/evaluation": {
            "test/roc_auc": 0.9,
            "test/time_to_detection/detected_share": 0.5,
            "test_profiles/all/false_alarms_per_1000_device_hours": 2.5,
            "test_profiles/all/time_to_detection/median_s": 41.0,
            "real_summary": {
                "stations": 29,
                "share_no_later_than_median_alarm": 0.25,
                "share_no_later_than_first_alarm": 0.125,
                "median_lead_s": None,
                "pre_ignition_alarms": 0,
                "warm_up_s": 300.0,
                "warm_up_basis_s": 10.0,
            },
        },
        "ml/champion": {
            "promoted": False,
            "champion_version": 2,
            "reasons": "- pass: floors\n- fail: lead 3 s vs champion 9 s",
        },
    }
    text = render(run, "/home")
    assert (
        "Detector: models:/d/3 (lightgbm), threshold 0.750, persistence 4 s; its own point for "
        "3 channel profile(s)"
    ) in text
    assert "synthetic test split: ROC-AUC 0.900" in text
    assert (
        "the same through every channel profile: ROC-AUC -, PR-AUC -, false alarms per 1,000 "
        "device-hours 2.5, fires detected - (median 41 s)"
    ) in text
    assert "PR-AUC -" in text  # not measured: shown as unknown, not as zero
    assert "fires detected 50%" in text
    assert "no later than the median alarm 25%, than the first 12%, median lead -," in text
    assert "alarms before ignition 0 (after 300 s of each station's first 10 s median)" in text
    assert "champion: not promoted; champion now 2" in text
    assert "fail: lead 3 s vs champion 9 s" in text
    assert "pass: floors" not in text  # only the reasons that decided it
    assert "firepipe evaluate-real --model models:/d/3" in text
    assert "score readings with the champion over HTTP: firepipe serve" in text
    run.detector["ml/champion"]["champion_version"] = None  # nothing promoted, ever
    assert "firepipe serve" not in render(run, "/home")
    run.detector["ml/champion"]["champion_version"] = 2
    assert "Detector:" not in render(summary(), "/home")
    run.detector["ml/evaluation"]["real_summary"]["warm_up_s"] = 0.0
    assert "alarms before ignition 0 (replayed from ignition)" in render(run, "/home")


def test_a_candidate_that_already_is_the_champion_is_not_called_rejected() -> None:
    run = summary()
    run.detector = {
        "ml/detector": {"model_uri": "models:/d/3", "algorithm": "lightgbm"},
        "ml/champion": {"champion_version": 3, "decision": "already the champion"},
    }
    text = render(run, "/home")
    assert "champion: already the champion; champion now 3" in text
    assert "not promoted" not in text


def test_the_agents_section_shows_the_replay_against_evaluate_real() -> None:
    summary = RunSummary(
        "end_to_end",
        "0123456789",
        dg.DagsterRunStatus.SUCCESS.value,
        10.0,
        agents={"stations": 36, "agree_with_evaluate_real": 35, "alarms": 30, "readings": 9000},
    )
    text = render(summary, "/home/dagster")
    assert "(the NIST tests through monitoring, analysis and response, 9000 readings)" in text
    assert "30 of 36 stations alarmed; 35 at evaluate-real's time" in text
    assert "Agents" not in render(RunSummary("end_to_end", "0", "SUCCESS", 1.0), "/h")


def test_the_knowledge_base_is_shown_when_the_run_built_it() -> None:
    run = summary()
    assert "Knowledge base" not in render(run, "/home")
    run.knowledge_base = {"documents": 14, "chunks": 271, "reembedded": 3, "location": "/kb/v-1"}
    text = render(run, "/home")
    expected = "Knowledge base: 271 passages of 14 documents (3 embedded in this run) at /kb/v-1"
    assert expected in text
    assert "firepipe kb search" in text
