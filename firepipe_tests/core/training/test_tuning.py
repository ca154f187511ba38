"""Tuning: one search space, optuna locally (seeded), SageMaker ParameterRanges in AWS."""

from __future__ import annotations

import botocore.session
import optuna
import polars as pl
import pytest
from botocore.validate import ParamValidator

from firepipe.core.training.models import default_params, train_detector
from firepipe.core.training.tuning import (
    LIGHTGBM_SPACE,
    LOGISTIC_SPACE,
    SPACES,
    FloatParam,
    IntParam,
    average_precision,
    sagemaker_parameter_ranges,
    suggest,
    tune,
)
from firepipe_tests.core.training.test_models import FAST, FEATURES, synthetic_frame

BASE = {**FAST, "num_boost_round": 15}
SPACE = (
    IntParam("num_leaves", 4, 64, log=True),
    FloatParam("learning_rate", 0.05, 0.5, log=True),
    IntParam("min_data_in_leaf", 10, 400),
    FloatParam("feature_fraction", 0.5, 1.0),
)


def run_tune(seed: int, n_trials: int = 5) -> tuple[dict, pl.DataFrame]:
    train, validation = synthetic_frame(n_rows=2000), synthetic_frame(n_rows=1000, seed=1)
    return tune(train, validation, FEATURES, "h", SPACE, n_trials, seed, base_params=BASE)


def test_tune_is_reproducible_and_returns_the_best_trial() -> None:
    best, trials = run_tune(seed=3)
    again, trials_again = run_tune(seed=3)
    assert trials.equals(trials_again)
    assert best == again
    assert trials.columns == ["trial", "average_precision", *(p.name for p in SPACE)]
    assert trials["trial"].to_list() == list(range(5))
    top = trials.sort("average_precision", descending=True).row(0, named=True)
    assert {p.name: best[p.name] for p in SPACE} == {p.name: top[p.name] for p in SPACE}
    # the returned params are complete: the base, then the defaults, for what was not searched
    assert best["num_boost_round"] == 15
    assert best["lambda_l2"] == default_params("lightgbm")["lambda_l2"]
    # and reproduce the best trial's score when trained again
    train, validation = synthetic_frame(n_rows=2000), synthetic_frame(n_rows=1000, seed=1)
    detector = train_detector(train, validation, FEATURES, "h", "lightgbm", best, seed=3)
    assert average_precision(validation, detector.scores(validation)) == top["average_precision"]
    # the trials differ from one another, and another seed searches elsewhere
    assert trials["num_leaves"].n_unique() > 1
    _, other = run_tune(seed=4)
    assert not other.equals(trials)


def test_tune_refuses_parameters_of_another_algorithm() -> None:
    frame = synthetic_frame(n_rows=300)
    with pytest.raises(ValueError, match=r"\['num_leaves'\], not logistic"):
        tune(frame, frame, FEATURES, "h", SPACE[:1], 1, 0, algorithm="logistic")
    with pytest.raises(ValueError, match="n_trials"):
        tune(frame, frame, FEATURES, "h", SPACE, 0, 0)


def test_tune_logistic_space() -> None:
    train, validation = synthetic_frame(n_rows=1000), synthetic_frame(n_rows=500, seed=1)
    best, trials = tune(train, validation, FEATURES, "h", LOGISTIC_SPACE, 3, 0, "logistic")
    assert trials.height == 3
    assert 0.001 <= best["C"] <= 100.0
    assert best["max_iter"] == default_params("logistic")["max_iter"]


def test_suggest_draws_inside_the_space_with_the_right_types() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        chosen = suggest(study.ask(), LIGHTGBM_SPACE)
        for p in LIGHTGBM_SPACE:
            assert p.low <= chosen[p.name] <= p.high
            assert isinstance(chosen[p.name], int if isinstance(p, IntParam) else float)
    assert suggest(optuna.trial.FixedTrial({"num_leaves": 9, "learning_rate": 0.1}), SPACE[:2]) == {
        "num_leaves": 9,
        "learning_rate": 0.1,
    }


def test_sagemaker_parameter_ranges_exact_shape() -> None:
    assert sagemaker_parameter_ranges((*SPACE, FloatParam("lambda_l2", 0.00001, 10, log=True))) == {
        "IntegerParameterRanges": [
            {"Name": "num_leaves", "MinValue": "4", "MaxValue": "64", "ScalingType": "Logarithmic"},
            {
                "Name": "min_data_in_leaf",
                "MinValue": "10",
                "MaxValue": "400",
                "ScalingType": "Linear",
            },
        ],
        "ContinuousParameterRanges": [
            {
                "Name": "learning_rate",
                "MinValue": "0.05",
                "MaxValue": "0.5",
                "ScalingType": "Logarithmic",
            },
            {
                "Name": "feature_fraction",
                "MinValue": "0.5",
                "MaxValue": "1",
                "ScalingType": "Linear",
            },
            {
                "Name": "lambda_l2",
                "MinValue": "0.00001",
                "MaxValue": "10",
                "ScalingType": "Logarithmic",
            },
        ],
        "CategoricalParameterRanges": [],
    }


@pytest.mark.parametrize("algorithm", sorted(SPACES))
def test_sagemaker_parameter_ranges_satisfy_the_api_model(algorithm: str) -> None:
    """Validated against botocore's own model of CreateHyperParameterTuningJob."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.shape_for("ParameterRanges")
    ranges = sagemaker_parameter_ranges(SPACES[algorithm])
    report = ParamValidator().validate(ranges, shape)
    assert not report.has_errors(), report.generate_report()
    named = {r["Name"] for kind in ranges.values() for r in kind}
    assert named == {p.name for p in SPACES[algorithm]}
    assert named <= set(default_params(algorithm))  # the entry point parses them all
    allowed = set(model.shape_for("HyperParameterScalingType").enum)
    assert {r["ScalingType"] for kind in ranges.values() for r in kind} <= allowed


def test_bad_search_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="low"):
        IntParam("num_leaves", 10, 10)
    with pytest.raises(ValueError, match="log scale needs low > 0"):
        FloatParam("lambda_l2", 0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="whole numbers"):
        IntParam("num_leaves", 1.5, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="twice"):
        sagemaker_parameter_ranges((FloatParam("C", 1, 2), FloatParam("C", 2, 3)))
