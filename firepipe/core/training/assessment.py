"""A candidate judged: ml/evaluation's work as plain functions.

The detector scores every split of the training set (each device at its channel profile's
operating point), the test split once more through every channel profile, and the real NIST
fires beside the fixed-threshold reference (`real_fires.replay_nist`, which `firepipe
evaluate-real` runs too). The features it reads come from its own spec. What comes out: the
nested report, the flat metrics the registry records (their names are what promotion reads),
the plots, and a few tables and headline figures for a person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from firepipe.core.features.spec import FeatureSpec
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.training import dataset, evaluation, plots, real_fires
from firepipe.core.training.candidate import learning_columns
from firepipe.core.training.models import Detector
from firepipe.core.training.real_fires import NistReplay

REAL_PREFIX = "real_"  # the NIST summary's metrics: real_median_lead_s, ...
TIMES = "time_to_detection"
# The figures a person looks at first (flat metric names); the run summary reads the test
# split's and every profile's (firepipe/cli/summary.py).
HEADLINE_METRICS = tuple(
    f"{prefix}{name}"
    for prefix in ("test/", f"{evaluation.PROFILES_REPORT}/{evaluation.ALL_PROFILES}/")
    for name in (
        "roc_auc",
        "pr_auc",
        "false_alarms_per_1000_device_hours",
        f"{TIMES}/detected_share",
        f"{TIMES}/median_s",
    )
) + tuple(
    f"{REAL_PREFIX}{name}"
    for name in (
        "share_no_later_than_median_alarm",
        "share_no_later_than_first_alarm",
        "median_lead_s",
    )
)


# Shorter headers for the tables a person reads (the metrics keep their full names).
TABLE_HEADERS = {
    "false_alarms_per_1000_device_hours": "false_alarms_per_1000h",
    "nuisance_false_alarms_per_1000_device_hours": "nuisance_per_1000h",
    "baseline_false_alarms_per_1000_device_hours": "baseline_per_1000h",
    f"{TIMES}/devices": "fire_devices",
    f"{TIMES}/detected_share": "detected_share",
    f"{TIMES}/median_s": "detection_median_s",
    f"{TIMES}/p90_s": "detection_p90_s",
}


@dataclass(frozen=True)
class Assessment:
    report: dict[str, Any]  # evaluation.evaluate per split, and PROFILES_REPORT for test
    replay: NistReplay  # the NIST fires, the model's and the fixed-threshold reference's
    detections: pl.DataFrame  # evaluation.detection_times of every split, with split
    plots: dict[str, bytes]  # PNG by file name
    metrics: dict[str, float]  # flat: what the registry records and promotion reads

    @property
    def headline(self) -> dict[str, float]:
        return {name: self.metrics[name] for name in HEADLINE_METRICS if name in self.metrics}

    def tables(self) -> dict[str, pl.DataFrame]:
        """One table per report, for a person: the splits, the test split per channel
        profile, the times to detection by family and scenario, the NIST summary of the model
        and the reference, and the NIST stations."""
        profiles = self.report.get(evaluation.PROFILES_REPORT, {})
        return {
            "splits": split_table(self.report),
            "test_profiles": metrics_table(profiles, dataset.PROFILE),
            "time_to_detection": detection_table(self.report),
            "nist_summary": nist_summary_table(self.replay),
            "nist_stations": self.replay.model.stations,
        }


def scored_splits(frame: pl.LazyFrame, detector: Detector) -> pl.DataFrame:
    """Every split's rows, the columns the detector and the evaluation read, with its score;
    a training set built without channel profiles has every channel, as simulated."""
    rows = frame.select(dataset.SPLIT, *learning_columns(frame, detector.feature_names)).collect()
    if dataset.PROFILE not in rows.columns:
        rows = rows.with_columns(pl.lit(dataset.profile_name(CHANNEL_NAMES)).alias(dataset.PROFILE))
    return rows.with_columns(pl.Series("score", detector.scores(rows)))


def profile_report(
    scored: pl.DataFrame, detector: Detector, spec: FeatureSpec
) -> dict[str, Any] | None:
    """The test split once more, every device seen through each channel profile in turn
    (`dataset.profile_views`); None without test rows."""
    test = scored.filter(pl.col(dataset.SPLIT) == "test").drop(dataset.PROFILE, "score")
    if not test.height:
        return None
    reads = set(detector.feature_names)
    read = FeatureSpec(tuple(f for f in spec.features if f.name in reads))
    views = dataset.profile_views(test, read)
    views = views.with_columns(pl.Series("score", detector.scores(views)))
    points = (detector.threshold, detector.persistence_s, detector.profile_points)
    return evaluation.evaluate_profiles(views, *points)


def all_detection_times(scored: pl.DataFrame, detector: Detector) -> pl.DataFrame:
    points = (detector.threshold, detector.persistence_s, detector.profile_points)
    return pl.concat(
        [
            evaluation.detection_times(
                scored.filter(pl.col(dataset.SPLIT) == split), *points
            ).with_columns(pl.lit(split).alias("split"))
            for split in evaluation.splits_in(scored)
        ],
        how="diagonal_relaxed",
    )


def assess(
    frame: pl.LazyFrame,
    detector: Detector,
    nist_folder: Path,
    warm_up_s: float = real_fires.WARM_UP_S,
) -> Assessment:
    """The detector on the training set `frame` and on the NIST tests in `nist_folder`."""
    spec = detector.require_feature_spec()  # refused before any data is read
    scored = scored_splits(frame, detector)
    points = (detector.threshold, detector.persistence_s, detector.profile_points)
    report: dict[str, Any] = evaluation.evaluate(scored, *points)
    if (profiles := profile_report(scored, detector, spec)) is not None:
        report[evaluation.PROFILES_REPORT] = profiles
    replay = real_fires.replay_nist(nist_folder, detector, warm_up_s)
    detections = all_detection_times(scored, detector)
    pngs = {
        "roc.png": plots.roc_png(scored),
        "time_to_detection.png": plots.time_to_detection_png(detections),
        "nist_timelines.png": plots.nist_timelines_png(replay.model),
    }
    return Assessment(report, replay, detections, pngs, flat_metrics(report, replay))


def flat_metrics(report: Mapping[str, Any], replay: NistReplay) -> dict[str, float]:
    """The registry's metrics: the report's "split/metric" names and the NIST summary's under
    REAL_PREFIX (not the detector's settings that the summary repeats)."""
    real = {k: v for k, v in replay.model.summary.items() if k not in real_fires.SETTINGS}
    return {
        **evaluation.flat_metrics(report),
        **evaluation.flat_metrics(real, REAL_PREFIX),
    }


def _scalars(report: Mapping[str, Any]) -> dict[str, Any]:
    """One split's report without its per-family and per-scenario times, one level deep
    (TABLE_HEADERS' names); unmeasurable figures stay (as nulls)."""
    out: dict[str, Any] = {}
    for key, value in report.items():
        if isinstance(value, Mapping):
            if key == TIMES:
                out |= {f"{TIMES}/{k}": v for k, v in value.items()}
        else:
            out[key] = value
    return {TABLE_HEADERS.get(key, key): value for key, value in out.items()}


def metrics_table(reports: Mapping[str, Mapping[str, Any]], key: str) -> pl.DataFrame:
    """One row per report (a split or a channel profile, named in column `key`), its metrics
    as columns (the time to detection over all its fires; `detection_table` has the rest)."""
    rows = [{key: name, **_scalars(report)} for name, report in reports.items()]
    return pl.DataFrame(rows, infer_schema_length=None)


def split_table(report: Mapping[str, Any]) -> pl.DataFrame:
    """`metrics_table` of the splits (the profile report left out)."""
    splits = {k: v for k, v in report.items() if k != evaluation.PROFILES_REPORT}
    return metrics_table(splits, dataset.SPLIT)


def detection_table(report: Mapping[str, Any]) -> pl.DataFrame:
    """split, by (family or scenario), name, devices, detected_share, median_s, p90_s: the
    time to detection of each split's fires, by scenario family and by scenario."""
    rows = [
        {dataset.SPLIT: split, "by": by, "name": name, **times}
        for split, own in report.items()
        if split != evaluation.PROFILES_REPORT
        for by in ("family", "scenario")
        for name, times in own[f"{TIMES}_by_{by}"].items()
    ]
    return pl.DataFrame(rows, infer_schema_length=None)


def nist_summary_table(replay: NistReplay) -> pl.DataFrame:
    """One row per replayed detector (the model, the fixed-threshold reference): its summary
    figures, the operating points per profile left to the stations table."""
    reports = {"model": replay.model, "fixed threshold": replay.baseline}
    rows = [
        {"detector": name, **{k: v for k, v in report.summary.items() if k != "profile_points"}}
        for name, report in reports.items()
    ]
    return pl.DataFrame(rows, infer_schema_length=None)
