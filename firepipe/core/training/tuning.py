"""One hyperparameter search space for both backends: optuna's TPE in-process locally, and
SageMaker automatic model tuning in AWS (its ParameterRanges come from the same records), both
maximising the validation average precision (PR-AUC) of the same training code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import polars as pl

from firepipe.core.training.models import average_precision, default_params, train_detector


def _check_range(name: str, low: float, high: float, log: bool) -> None:
    if not name:
        raise ValueError("a search parameter needs a name")
    if not low < high:
        raise ValueError(f"search parameter {name}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        # SageMaker: "Logarithmic scaling works only for ranges that have only values greater
        # than 0" (API_IntegerParameterRange); a log scale has no zero anyway.
        raise ValueError(f"search parameter {name}: a log scale needs low > 0, got {low}")


@dataclass(frozen=True)
class IntParam:
    name: str
    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)):
            raise ValueError(f"search parameter {self.name}: bounds must be whole numbers")
        _check_range(self.name, self.low, self.high, self.log)


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_range(self.name, self.low, self.high, self.log)


SearchSpace = tuple[IntParam | FloatParam, ...]

# Ranges around LightGBM's Parameters-Tuning guide: learning rate and leaf count on log scales
# (their effect is multiplicative); min_data_in_leaf from 20 (LightGBM's default) to 2,000 s
# of 1 Hz readings; subsampling from half to all; L2 from almost none to strong.
LIGHTGBM_SPACE: SearchSpace = (
    FloatParam("learning_rate", 0.01, 0.3, log=True),
    IntParam("num_leaves", 8, 128, log=True),
    IntParam("min_data_in_leaf", 20, 2000, log=True),
    FloatParam("feature_fraction", 0.5, 1.0),
    FloatParam("bagging_fraction", 0.5, 1.0),
    FloatParam("lambda_l2", 0.001, 10.0, log=True),
)
# Inverse regularisation strength over five decades around scikit-learn's default C = 1.
LOGISTIC_SPACE: SearchSpace = (FloatParam("C", 0.001, 100.0, log=True),)
SPACES: dict[str, SearchSpace] = {"lightgbm": LIGHTGBM_SPACE, "logistic": LOGISTIC_SPACE}


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, int | float]:
    chosen: dict[str, int | float] = {}
    for p in space:
        if isinstance(p, IntParam):
            chosen[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
        else:
            chosen[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return chosen


def _decimal(value: float) -> str:
    """Plain decimal text ("0.001", never "1e-03"): SageMaker's ParameterValue is a string."""
    return str(np.format_float_positional(float(value), trim="-"))


def sagemaker_parameter_ranges(space: SearchSpace) -> dict[str, list[dict[str, str]]]:
    """The ParameterRanges member of CreateHyperParameterTuningJob's
    HyperParameterTuningJobConfig (botocore sagemaker service-2.json: ParameterRanges)."""
    names = [p.name for p in space]
    if len(set(names)) != len(names):
        raise ValueError(f"search space names a parameter twice: {names}")
    ranges: dict[str, list[dict[str, str]]] = {
        "IntegerParameterRanges": [],
        "ContinuousParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for p in space:
        scaling = "Logarithmic" if p.log else "Linear"
        if isinstance(p, IntParam):
            low, high, kind = str(p.low), str(p.high), "IntegerParameterRanges"
        else:
            low, high, kind = _decimal(p.low), _decimal(p.high), "ContinuousParameterRanges"
        ranges[kind].append(
            {"Name": p.name, "MinValue": low, "MaxValue": high, "ScalingType": scaling}
        )
    return ranges


def tune(
    train: pl.DataFrame,
    validation: pl.DataFrame,
    feature_names: tuple[str, ...] | list[str],
    feature_spec_hash: str,
    space: SearchSpace = LIGHTGBM_SPACE,
    n_trials: int = 20,
    seed: int = 0,
    algorithm: str = "lightgbm",
    base_params: dict[str, Any] | None = None,
    increasing: tuple[str, ...] = (),
) -> tuple[dict[str, Any], pl.DataFrame]:
    """TPE search (seeded: the same seed gives the same trials) over `space`, each trial a
    detector trained on `train` and scored on `validation`. Returns the best trial's full
    parameters (base_params and defaults filled in: ready for train_detector) and one row per
    trial: trial, average_precision, then the suggested values. Every trial keeps the
    `increasing` constraints the detector will be trained with."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    unknown = sorted({p.name for p in space} - set(default_params(algorithm)))
    if unknown:
        raise ValueError(f"search space names {unknown}, not {algorithm} parameters")

    def objective(trial: optuna.Trial) -> float:
        params = {**(base_params or {}), **suggest(trial, space)}
        detector = train_detector(
            train, validation, feature_names, feature_spec_hash, algorithm, params, seed, increasing
        )
        return average_precision(validation, detector.scores(validation))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    trials = pl.DataFrame(
        [{"trial": t.number, "average_precision": t.value, **t.params} for t in study.trials],
        schema_overrides={"trial": pl.Int64, "average_precision": pl.Float64},
    )
    best = {**default_params(algorithm), **(base_params or {}), **study.best_trial.params}
    return best, trials
