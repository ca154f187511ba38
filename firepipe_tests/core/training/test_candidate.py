"""Fitting a candidate: the channels a trainer gets, its hyperparameters, tuning, and the
operating points chosen on validation, saved with the feature spec."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from firepipe.core.features.spec import default_spec
from firepipe.core.training import candidate, dataset, evaluation, inputs
from firepipe.core.training.job import parse_hyperparameters
from firepipe.core.training.models import Detector
from firepipe_tests.core.training.conftest import InProcessTrainer

FAST = {"num_boost_round": "40", "num_threads": "1"}
# 80 devices: a profile has a non-fire validation device or two, so the bar is 1.
SETTINGS = candidate.CandidateSettings(params=FAST, profile_min_devices=1)


@pytest.fixture(scope="module")
def fitted(small_training_set: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    trainer = InProcessTrainer()
    model_dir = tmp_path_factory.mktemp("candidate") / "model"
    fit = candidate.fit_candidate(
        small_training_set.lazy(), default_spec(), trainer, "0123456789ab", model_dir, SETTINGS
    )
    return fit, trainer


def test_the_trainer_gets_train_and_validation_with_the_columns_training_reads(
    small_training_set: pl.DataFrame,
) -> None:
    names = inputs.detector_inputs(default_spec(), "offset_robust")
    channels, profiles = candidate.learning_channels(small_training_set.lazy(), names)
    assert set(channels) == {"train", "validation"}
    for split, part in channels.items():
        expected = small_training_set.filter(pl.col(dataset.SPLIT) == split)
        assert part.height == expected.height > 0
        assert dataset.SPLIT not in part.columns
        assert dataset.PROFILE not in part.columns
        assert set(part.columns) == {*evaluation.SPLIT_COLUMNS, *names} - {"score"}
    # The validation rows' profiles, in their order, for the operating points.
    validation = small_training_set.filter(pl.col(dataset.SPLIT) == "validation")
    assert len(profiles) == 1
    assert profiles[0].to_list() == validation[dataset.PROFILE].cast(pl.String).to_list()
    # Without profiles in the training set, none; without validation rows, a clear error.
    plain = small_training_set.drop(dataset.PROFILE).lazy()
    assert candidate.learning_channels(plain, names)[1] == []
    no_validation = small_training_set.filter(pl.col(dataset.SPLIT) != "validation").lazy()
    with pytest.raises(ValueError, match="no validation rows"):
        candidate.learning_channels(no_validation, names)


def test_the_candidate_is_saved_with_its_points_and_feature_spec(
    fitted, small_training_set: pl.DataFrame
) -> None:
    fit, trainer = fitted
    spec = default_spec()
    detector = fit.detector
    assert Detector.load(fit.model_dir) == detector
    assert detector.feature_spec == spec
    assert detector.feature_names == inputs.detector_inputs(spec, "offset_robust")
    assert fit.increasing == inputs.increasing_inputs(spec, detector.feature_names)
    train_rows = small_training_set.filter(pl.col(dataset.SPLIT) == "train").height
    assert fit.metrics == {"train:rows": train_rows}  # the trainer's own metrics
    # One training job, named for the run, with the request and the config's params.
    [(kind, job, hyperparameters)] = trainer.calls
    assert (kind, job) == ("train", "firepipe-01234567-lightgbm")
    assert hyperparameters == fit.hyperparameters
    request = parse_hyperparameters(hyperparameters)
    assert request.feature_spec_hash == spec.hash()
    assert request.increasing == fit.increasing
    assert request.params is not None
    assert request.params["num_boost_round"] == 40
    # The points are those chosen on the scored validation rows (with their profiles).
    assert detector.persistence_s in evaluation.PERSISTENCE_OPTIONS_S
    assert detector.profile_points
    assert {p for _, p in detector.profile_points.values()} == {detector.persistence_s}
    table = fit.operating_points
    assert set(table[dataset.PROFILE]) >= set(detector.profile_points)
    own = table.filter(pl.col("own_point"))
    assert dict(zip(own[dataset.PROFILE], own["threshold"], strict=True)) == {
        name: t for name, (t, _) in detector.profile_points.items()
    }
    assert set(table.filter(~pl.col("own_point"))["threshold"]) <= {detector.threshold}
    # The example a served request would send: features, device, time and profile.
    assert fit.input_example.height == 5
    assert fit.input_example.columns == [
        *detector.feature_names,
        "device_id",
        "ts",
        dataset.PROFILE,
    ]


def test_the_operating_points_are_evaluations_choice(
    fitted, small_training_set: pl.DataFrame
) -> None:
    fit, _ = fitted
    names = fit.detector.feature_names
    channels, profiles = candidate.learning_channels(small_training_set.lazy(), names)
    validation = channels["validation"].with_columns(
        pl.Series("score", fit.detector.scores(channels["validation"]))
    )
    threshold, persistence_s = evaluation.choose_operating_point(validation)
    assert (fit.detector.threshold, fit.detector.persistence_s) == (threshold, persistence_s)
    chosen = evaluation.choose_profile_points(
        validation.with_columns(*profiles), 1, (persistence_s,)
    )
    assert fit.detector.profile_points == {n: (t, int(p)) for n, (t, p) in chosen.items()}
    # Asked for no profile points: the one point only, and a one-row table.
    one = candidate.with_operating_points(
        fit.detector,
        validation.with_columns(*profiles),
        candidate.CandidateSettings(profile_points=False),
    )
    assert (one.threshold, one.persistence_s, one.profile_points) == (threshold, persistence_s, {})
    table = candidate.operating_points_table(validation, one)
    assert table.to_dicts() == [{"threshold": threshold, "persistence_s": persistence_s}]


def test_tuning_comes_first_and_its_best_hyperparameters_train(
    small_training_set: pl.DataFrame, tmp_path: Path
) -> None:
    trainer = InProcessTrainer()
    settings = candidate.CandidateSettings(
        params=FAST, tune=True, max_trials=3, seed=4, profile_points=False
    )
    fit = candidate.fit_candidate(
        small_training_set.lazy(), default_spec(), trainer, "run", tmp_path / "m", settings
    )
    [(tune, tune_job, static), (train, train_job, used)] = trainer.calls
    assert (tune, tune_job, train, train_job) == (
        "tune",
        "firepipe-run-lightgbm-tune",
        "train",
        "firepipe-run-lightgbm",
    )
    assert static["num_leaves"] == "31"
    assert used["num_leaves"] == "8"
    assert fit.hyperparameters == used
    assert fit.tuning_objective == 0.5
    assert fit.detector.params["num_leaves"] == 8
    assert fit.detector.profile_points == {}


def test_a_bad_parameter_fails_before_any_job(
    small_training_set: pl.DataFrame, tmp_path: Path
) -> None:
    trainer = InProcessTrainer()
    settings = candidate.CandidateSettings(params={"num_leaves": "many"})
    with pytest.raises(ValueError, match="num_leaves"):
        candidate.fit_candidate(
            small_training_set.lazy(), default_spec(), trainer, "run", tmp_path, settings
        )
    assert trainer.calls == []


def test_the_logistic_reference_takes_no_monotone_constraints() -> None:
    spec = default_spec()
    request = candidate.training_request(
        spec, candidate.CandidateSettings(algorithm="logistic", features="all", seed=3)
    )
    assert request.feature_names == spec.names
    assert request.increasing == ()
    assert (request.algorithm, request.seed, request.feature_spec_hash) == (
        "logistic",
        3,
        spec.hash(),
    )
    monotone = candidate.training_request(spec, candidate.CandidateSettings())
    assert monotone.increasing == inputs.increasing_inputs(spec, monotone.feature_names) != ()


def test_the_candidate_is_compiled_and_checked_on_the_test_split(
    fitted, small_training_set: pl.DataFrame
) -> None:
    fit, _ = fitted
    test_rows = small_training_set.filter(pl.col(dataset.SPLIT) == "test").height
    assert fit.serving.backend == "tl2cgen", fit.serving.reason
    assert fit.serving.check_rows == test_rows > 0
    assert fit.serving.max_abs_diff is not None
    assert fit.serving.max_abs_diff <= 1e-6
    assert (fit.model_dir / "compiled" / "compiled.json").is_file()
    assert fit.serving.tags()["serving_backend"] == "tl2cgen"
