"""Judging a candidate: every split, the test split through every channel profile, the NIST
replay with the model's own spec, the flat metrics promotion reads, and the tables and headline
figures a person reads."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from firepipe.core.features.spec import default_spec
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.training import assessment, candidate, dataset, evaluation, promotion
from firepipe.core.training import real_fires as rf
from firepipe.core.training.models import Detector
from firepipe_tests.conftest import nist_data_dir
from firepipe_tests.core.training.conftest import InProcessTrainer

NIST_DIR = Path(nist_data_dir())
SETTINGS = candidate.CandidateSettings(
    params={"num_boost_round": "40", "num_threads": "1"}, profile_min_devices=1
)


@pytest.fixture(scope="module")
def model(small_training_set: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Detector:
    model_dir = tmp_path_factory.mktemp("assessment") / "model"
    return candidate.fit_candidate(
        small_training_set.lazy(), default_spec(), InProcessTrainer(), "run", model_dir, SETTINGS
    ).detector


@pytest.fixture(scope="module")
def judged(small_training_set: pl.DataFrame, model: Detector) -> assessment.Assessment:
    return assessment.assess(small_training_set.lazy(), model, NIST_DIR, warm_up_s=120.0)


def test_every_split_every_profile_and_the_nist_replay_are_measured(
    judged: assessment.Assessment, model: Detector, small_training_set: pl.DataFrame
) -> None:
    report = judged.report
    assert list(report) == ["train", "validation", "test", evaluation.PROFILES_REPORT]
    test_devices = report["test"]["devices"]
    profiles = report[evaluation.PROFILES_REPORT]
    assert set(profiles) == {
        *(dataset.profile_name(p) for p in dataset.CHANNEL_PROFILES),
        evaluation.ALL_PROFILES,
    }
    assert profiles[evaluation.ALL_PROFILES]["devices"] == test_devices * len(
        dataset.CHANNEL_PROFILES
    )
    # The replay is the one `firepipe evaluate-real` runs, at the warm-up asked for.
    replay = rf.replay_nist(NIST_DIR, model, 120.0)
    assert judged.replay.model.stations.equals(replay.model.stations)
    assert judged.replay.baseline.summary == replay.baseline.summary
    assert judged.replay.model.summary["warm_up_s"] == 120.0
    # Each split's detections, split by split.
    fires = (
        small_training_set.filter(pl.col("is_fire"))
        .group_by(dataset.SPLIT)
        .agg(pl.col("device_id").n_unique())
    )
    expected = dict(zip(fires[dataset.SPLIT], fires["device_id"], strict=True))
    assert dict(judged.detections.group_by("split").len().iter_rows()) == expected
    assert set(judged.plots) == {"roc.png", "time_to_detection.png", "nist_timelines.png"}
    assert all(png.startswith(b"\x89PNG") for png in judged.plots.values())


def test_the_metrics_keep_the_names_promotion_reads(judged: assessment.Assessment) -> None:
    metrics = judged.metrics
    for name in promotion.PROMOTION_METRICS:
        if name != promotion.MEDIAN_LEAD_S or judged.replay.model.summary["median_lead_s"]:
            assert name in metrics, name
    assert metrics == {
        **evaluation.flat_metrics(judged.report),
        **evaluation.flat_metrics(
            {k: v for k, v in judged.replay.model.summary.items() if k not in rf.SETTINGS},
            "real_",
        ),
    }
    assert metrics["test/roc_auc"] == judged.report["test"]["roc_auc"]
    assert metrics["real_stations"] == 29
    assert "real_threshold" not in metrics  # the model's settings are not results


def test_a_person_reads_a_few_headline_figures(judged: assessment.Assessment) -> None:
    headline = judged.headline
    assert set(headline) <= set(assessment.HEADLINE_METRICS)
    assert len(headline) <= len(assessment.HEADLINE_METRICS) == 13
    for name in (
        "test/roc_auc",
        "test/false_alarms_per_1000_device_hours",
        "real_share_no_later_than_median_alarm",
        "real_share_no_later_than_first_alarm",
        f"{evaluation.PROFILES_REPORT}/{evaluation.ALL_PROFILES}/time_to_detection/median_s",
    ):
        assert headline[name] == judged.metrics[name], name


def test_the_reports_become_tables(judged: assessment.Assessment) -> None:
    report = judged.report
    splits = assessment.split_table(report)
    assert splits[dataset.SPLIT].to_list() == ["train", "validation", "test"]
    assert splits["roc_auc"].to_list() == [
        report[s]["roc_auc"] for s in ("train", "validation", "test")
    ]
    assert splits["detection_median_s"].to_list() == [
        report[s]["time_to_detection"]["median_s"] for s in ("train", "validation", "test")
    ]
    assert "time_to_detection_by_scenario" not in splits.columns
    profiles = assessment.metrics_table(report[evaluation.PROFILES_REPORT], dataset.PROFILE)
    assert profiles.height == len(dataset.CHANNEL_PROFILES) + 1
    all_row = profiles.filter(pl.col(dataset.PROFILE) == evaluation.ALL_PROFILES)
    assert (
        all_row["false_alarms_per_1000h"].item()
        == (
            report[evaluation.PROFILES_REPORT][evaluation.ALL_PROFILES][
                "false_alarms_per_1000_device_hours"
            ]
        )
    )
    times = assessment.detection_table(report)
    test_scenarios = report["test"]["time_to_detection_by_scenario"]
    own = times.filter((pl.col(dataset.SPLIT) == "test") & (pl.col("by") == "scenario"))
    assert own["name"].to_list() == list(test_scenarios)
    assert own["median_s"].to_list() == [t["median_s"] for t in test_scenarios.values()]
    assert list(judged.tables()) == [
        "splits",
        "test_profiles",
        "time_to_detection",
        "nist_summary",
        "nist_stations",
    ]
    assert judged.tables()["test_profiles"].equals(profiles)
    nist = assessment.nist_summary_table(judged.replay)
    assert nist["detector"].to_list() == ["model", "fixed threshold"]
    assert nist["share_no_later_than_median_alarm"].to_list() == [
        judged.replay.model.summary["share_no_later_than_median_alarm"],
        judged.replay.baseline.summary["share_no_later_than_median_alarm"],
    ]


def test_a_model_without_its_spec_is_refused_before_any_data_is_read(
    model: Detector, tmp_path: Path
) -> None:
    import dataclasses

    unread = pl.scan_parquet(tmp_path / "absent.parquet")  # reading it would fail otherwise
    with pytest.raises(ValueError, match="saved without its feature spec"):
        assessment.assess(unread, dataclasses.replace(model, feature_spec=None), NIST_DIR)


def test_a_training_set_without_profiles_is_read_as_every_channel(
    small_training_set: pl.DataFrame, model: Detector
) -> None:
    plain = small_training_set.drop(dataset.PROFILE).lazy()
    scored = assessment.scored_splits(plain, model)
    assert scored[dataset.PROFILE].unique().to_list() == [dataset.profile_name(CHANNEL_NAMES)]
    assert scored["score"].to_list() == model.scores(scored).tolist()
