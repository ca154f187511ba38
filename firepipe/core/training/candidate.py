"""A candidate detector fitted on the training set: ml/detector's work as plain functions.

The train and validation splits are read once, only the columns training uses, and handed to a
`Trainer` (the training backend: in-process or SageMaker, `firepipe.resources.training`) as its
channels with the string hyperparameters both backends take; tuned first when asked. Then the
operating point is chosen on validation (no false alarm there, fires detected soonest), and one
point per channel profile on that profile's own validation devices. The detector is saved with
its points and the feature spec it reads, so the model carries what replaying it needs, and
with its trees compiled for the inference service, checked against LightGBM on the test split
(`firepipe.core.serving.export`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from firepipe.core.features.spec import FeatureSpec
from firepipe.core.serving.export import ExportOutcome, export_compiled
from firepipe.core.training import dataset, evaluation, inputs
from firepipe.core.training.inputs import FeatureSet
from firepipe.core.training.job import (
    TrainingRequest,
    encode_hyperparameters,
    parse_hyperparameters,
)
from firepipe.core.training.models import MONOTONE_ALGORITHMS, Detector

LEARNING_SPLITS = ("train", "validation")


class TuningOutcome(Protocol):
    """What a tuning run answers (the training backend's TuningResult)."""

    @property
    def best_hyperparameters(self) -> Mapping[str, str]: ...

    @property
    def objective(self) -> float: ...


class Trainer(Protocol):
    """Where a detector is trained and tuned: the training backend, by its methods alone."""

    def train(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        hyperparameters: Mapping[str, str],
        model_dir: Path,
    ) -> dict[str, float]: ...

    def tune(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        static_hyperparameters: Mapping[str, str],
        max_trials: int,
        seed: int,
    ) -> TuningOutcome: ...


@dataclass(frozen=True)
class CandidateSettings:
    """ml/detector's config (`DetectorConfig` describes each field)."""

    algorithm: str = "lightgbm"
    tune: bool = False
    max_trials: int = 20
    seed: int = 0
    params: Mapping[str, str] = field(default_factory=dict)
    features: FeatureSet = "offset_robust"
    monotone: bool = True
    profile_points: bool = True
    profile_min_devices: int = evaluation.MIN_PROFILE_DEVICES


@dataclass(frozen=True)
class Candidate:
    detector: Detector  # saved in model_dir, with its operating points and feature spec
    model_dir: Path
    increasing: tuple[str, ...]  # the inputs the score may not fall in
    hyperparameters: dict[str, str]  # those it was trained with (tuned ones when tuned)
    metrics: dict[str, float]  # the training job's
    tuning_objective: float | None  # the best validation average precision when tuned
    operating_points: pl.DataFrame  # `operating_points_table`
    input_example: pl.DataFrame  # a few validation rows, as a served request carries them
    serving: ExportOutcome  # the compiled model saved beside it for serving, or why none


def learning_columns(frame: pl.LazyFrame, feature_names: Sequence[str]) -> list[str]:
    """The columns training and evaluation read: the labels, the features and the channel
    profile (when the training set has one)."""
    names = frame.collect_schema().names()
    wanted = {*evaluation.SPLIT_COLUMNS, dataset.PROFILE, *feature_names}
    return [c for c in names if c in wanted]


def learning_channels(
    frame: pl.LazyFrame, feature_names: Sequence[str]
) -> tuple[dict[str, pl.DataFrame], list[pl.Series]]:
    """The train and validation channels (without the split and profile columns), and the
    validation rows' channel profile (none when the training set was built without them):
    the profiles choose the operating points, training does not read them."""
    # Read once, and only what training uses: the test split and the other columns stay out.
    learning = (
        frame.filter(pl.col(dataset.SPLIT).is_in(LEARNING_SPLITS))
        .select(dataset.SPLIT, *learning_columns(frame, feature_names))
        .collect()
    )
    channels = {
        split: learning.filter(pl.col(dataset.SPLIT) == split).drop(dataset.SPLIT)
        for split in LEARNING_SPLITS
    }
    del learning
    own = channels["validation"]
    profiles = [own[dataset.PROFILE].cast(pl.String)] if dataset.PROFILE in own.columns else []
    channels = {split: part.drop(dataset.PROFILE, strict=False) for split, part in channels.items()}
    for split, part in channels.items():
        if part.is_empty():
            raise ValueError(f"the training set has no {split} rows: generate more devices")
    return channels, profiles


def training_request(spec: FeatureSpec, settings: CandidateSettings) -> TrainingRequest:
    """The detector's inputs (the settings' feature set of `spec`), monotone in the rises when
    the algorithm takes constraints."""
    names = inputs.detector_inputs(spec, settings.features)
    monotone = settings.monotone and settings.algorithm in MONOTONE_ALGORITHMS
    increasing = inputs.increasing_inputs(spec, names) if monotone else ()
    return TrainingRequest(
        settings.algorithm, names, spec.hash(), settings.seed, increasing=increasing
    )


def hyperparameters(request: TrainingRequest, params: Mapping[str, str]) -> dict[str, str]:
    """The request and `params` over its defaults as the backends' strings, parsed as the
    training entry point will parse them: a bad one fails here, before any job starts."""
    return encode_hyperparameters(
        parse_hyperparameters({**encode_hyperparameters(request), **params})
    )


def job_name(run_id: str, algorithm: str) -> str:
    return f"firepipe-{run_id[:8]}-{algorithm}"


def fit_candidate(
    frame: pl.LazyFrame,
    spec: FeatureSpec,
    trainer: Trainer,
    run_id: str,
    model_dir: Path,
    settings: CandidateSettings,
) -> Candidate:
    """Train (after tuning when asked) on the training set `frame`, whose features `spec`
    computed; choose the operating points on validation; save the detector into `model_dir`."""
    request = training_request(spec, settings)
    channels, profiles = learning_channels(frame, request.feature_names)
    chosen = hyperparameters(request, settings.params)
    job = job_name(run_id, settings.algorithm)
    objective = None
    if settings.tune:
        tuned = trainer.tune(f"{job}-tune", channels, chosen, settings.max_trials, settings.seed)
        chosen, objective = dict(tuned.best_hyperparameters), tuned.objective
    metrics = trainer.train(job, channels, chosen, model_dir)
    trained = Detector.load(model_dir).with_feature_spec(spec)
    validation = channels["validation"].with_columns(
        pl.Series("score", trained.scores(channels["validation"]))
    )
    if settings.profile_points and profiles:
        validation = validation.with_columns(*profiles)
    detector = with_operating_points(trained, validation, settings)
    detector.save(model_dir)
    serving = export_compiled(
        detector, model_dir, parity_rows(frame, detector.feature_names, channels["validation"])
    )
    return Candidate(
        detector=detector,
        model_dir=model_dir,
        increasing=request.increasing,
        hyperparameters=chosen,
        metrics=metrics,
        tuning_objective=objective,
        operating_points=operating_points_table(validation, detector),
        # With ts and device_id: a detector with a persistence needs them to answer.
        input_example=channels["validation"]
        .select(*request.feature_names, "device_id", "ts")
        .with_columns(*profiles)
        .head(5),
        serving=serving,
    )


def parity_rows(
    frame: pl.LazyFrame, feature_names: Sequence[str], validation: pl.DataFrame
) -> pl.DataFrame:
    """The rows a compiled model is checked on against LightGBM: the test split's features
    (read now, after training; none of it reached the trainer), or the validation rows when
    the training set has no test split."""
    test = frame.filter(pl.col(dataset.SPLIT) == "test").select(*feature_names).collect()
    return test if test.height else validation.select(*feature_names)


def with_operating_points(
    detector: Detector, validation: pl.DataFrame, settings: CandidateSettings
) -> Detector:
    """`detector` at the point chosen on its scored `validation` rows and, when they carry
    their channel profile and the settings ask, at one threshold per profile."""
    threshold, persistence_s = evaluation.choose_operating_point(validation)
    profile_points: dict[str, tuple[float, int]] = {}
    if settings.profile_points and dataset.PROFILE in validation.columns:
        # Only the threshold adapts to a profile: its persistence is the one point's, chosen
        # on every validation device (measured: on make run's data, persistences chosen on a
        # profile's own few devices raised false alarms on the test split's profile views).
        chosen = evaluation.choose_profile_points(
            validation, settings.profile_min_devices, (persistence_s,)
        )
        profile_points = {name: (t, int(p)) for name, (t, p) in chosen.items()}
    return detector.with_operating_point(threshold, int(persistence_s), profile_points)


def operating_points_table(validation: pl.DataFrame, detector: Detector) -> pl.DataFrame:
    """Per channel profile of validation: its devices and the operating point it alarms at
    (its own, or the one point); one row of the one point without profiles."""
    if dataset.PROFILE not in validation.columns:
        return pl.DataFrame(
            {"threshold": [detector.threshold], "persistence_s": [detector.persistence_s]}
        )
    devices = evaluation.profile_devices(validation)
    points = [detector.operating_point(name) for name in devices[dataset.PROFILE]]
    return devices.with_columns(
        pl.Series("own_point", [n in detector.profile_points for n in devices[dataset.PROFILE]]),
        pl.Series("threshold", [t for t, _ in points], dtype=pl.Float64),
        pl.Series("persistence_s", [p for _, p in points], dtype=pl.Int64),
    )
