"""The training job both backends run: in-process locally (`run_training`) and inside a
SageMaker training job (`firepipe.services.sagemaker_training`, which reads the container's
layout and calls `run_training`).

Hyperparameters travel as strings, as SageMaker passes them (CreateTrainingJob HyperParameters:
string to string, values at most 2,500 characters): algorithm, feature_names (a JSON list),
feature_spec_hash, seed, increasing (a JSON list: the features the score may not fall in) and
the model's own parameters (models.default_params names them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from sklearn.metrics import roc_auc_score  # type: ignore[import-untyped]

from firepipe.core.training.dataset import SPLIT
from firepipe.core.training.models import (
    ALGORITHMS,
    Detector,
    average_precision,
    check_increasing,
    default_params,
    labels,
    resolve_params,
    train_detector,
)

OBJECTIVE_METRIC = (
    "validation:average_precision"  # printed as "validation:average_precision=0.9312"
)
METRICS = ("train:average_precision", "train:roc_auc", OBJECTIVE_METRIC, "validation:roc_auc")
# SageMaker reads a job's metrics from its log with one regex per metric (MetricDefinition).
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = tuple(
    {"Name": name, "Regex": f"{re.escape(name)}=([0-9.]+)"} for name in METRICS
)
METRICS_FILE = "metrics.json"  # beside the saved detector in the model folder
HYPERPARAMETER_VALUE_MAX_CHARS = 2500  # botocore sagemaker service-2.json: HyperParameterValue
_REQUIRED = ("algorithm", "feature_names", "feature_spec_hash")


@dataclass(frozen=True)
class TrainingRequest:
    algorithm: str
    feature_names: tuple[str, ...]
    feature_spec_hash: str
    seed: int = 0
    params: Mapping[str, float | int | str] | None = None
    increasing: tuple[str, ...] = ()


def encode_hyperparameters(request: TrainingRequest) -> dict[str, str]:
    """The request as SageMaker hyperparameters (strings); parse_hyperparameters inverts it."""
    params = resolve_params(request.algorithm, dict(request.params or {}))
    encoded = {
        "algorithm": request.algorithm,
        "feature_names": _json_names(request.feature_names),
        "feature_spec_hash": request.feature_spec_hash,
        "seed": str(request.seed),
        "increasing": _json_names(request.increasing),
        **{
            name: repr(value) if isinstance(value, float) else str(value)
            for name, value in params.items()
        },
    }
    too_long = [k for k, v in encoded.items() if len(v) > HYPERPARAMETER_VALUE_MAX_CHARS]
    if too_long:
        raise ValueError(
            f"hyperparameter(s) {too_long} exceed SageMaker's "
            f"{HYPERPARAMETER_VALUE_MAX_CHARS} characters"
        )
    return encoded


def _json_names(names: Sequence[str]) -> str:
    return json.dumps(list(names), separators=(",", ":"))


def _names(hps: dict[str, str], name: str, default: str | None = None) -> tuple[str, ...]:
    text = hps.pop(name, default)
    if text is None:
        raise ValueError(f"hyperparameters lack {name}")
    try:
        names = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"hyperparameter {name} is not a JSON list: {e}") from e
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"hyperparameter {name} must be a JSON list of strings")
    return tuple(names)


def _number(name: str, text: str, integral: bool) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"hyperparameter {name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"hyperparameter {name}={text!r} is not finite")
    if not integral:
        return value
    if not value.is_integer():
        raise ValueError(f"hyperparameter {name}={text!r} must be a whole number")
    return int(value)


def parse_hyperparameters(hyperparameters: Mapping[str, str]) -> TrainingRequest:
    """Strings -> a request. SageMaker's own entries (sagemaker_*, and _tuning_objective_metric
    that a tuning job adds) are skipped; any other unknown name is an error."""
    hps = {
        k: v
        for k, v in hyperparameters.items()
        if not (k.startswith("sagemaker_") or k.startswith("_"))
    }
    missing = [k for k in _REQUIRED if k not in hps]
    if missing:
        raise ValueError(f"hyperparameters lack {missing}")
    algorithm = hps.pop("algorithm")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"hyperparameter algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    names = _names(hps, "feature_names")
    increasing = _names(hps, "increasing", "[]")
    check_increasing(algorithm, names, increasing)
    spec_hash = hps.pop("feature_spec_hash")
    seed = int(_number("seed", hps.pop("seed", "0"), integral=True))
    defaults = default_params(algorithm)
    unknown = sorted(set(hps) - set(defaults))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for {algorithm}")
    params = {
        name: _number(name, text, integral=isinstance(defaults[name], int))
        for name, text in hps.items()
    }
    return TrainingRequest(algorithm, names, spec_hash, seed, params, increasing)


def read_channel(directory: Path, split: str) -> pl.DataFrame:
    """Every Parquet file under a channel folder, in path order. A frame that carries the split
    column must hold only `split` rows: a wrong folder would otherwise leak into training."""
    if not directory.is_dir():
        raise ValueError(f"channel folder {directory} does not exist")
    files = sorted(directory.rglob("*.parquet"))
    if not files:
        raise ValueError(f"channel folder {directory} holds no Parquet files")
    frame = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    if SPLIT in frame.columns:
        others = sorted(set(frame[SPLIT].unique().to_list()) - {split}, key=str)
        if others:
            raise ValueError(f"channel folder {directory} holds {SPLIT} {others}, not only {split}")
    return frame


def _metrics(prefix: str, frame: pl.DataFrame, scores: Any) -> dict[str, float]:
    y = labels(frame)
    return {
        f"{prefix}:average_precision": average_precision(frame, scores),
        f"{prefix}:roc_auc": float(roc_auc_score(y, scores)),
    }


def fit_request(
    request: TrainingRequest, train: pl.DataFrame, validation: pl.DataFrame | None
) -> Detector:
    """The detector `request` describes, fitted on `train` (validation: early stopping)."""
    return train_detector(
        train,
        validation,
        request.feature_names,
        request.feature_spec_hash,
        request.algorithm,
        dict(request.params or {}),
        request.seed,
        request.increasing,
    )


def run_training(
    train_dir: Path,
    validation_dir: Path | None,
    model_dir: Path,
    hyperparameters: Mapping[str, str],
) -> dict[str, float]:
    """Train on the train channel, save the detector (and metrics.json) into model_dir, print
    each metric as name=value for SageMaker's metric regexes and return them."""
    request = parse_hyperparameters(hyperparameters)
    train = read_channel(train_dir, "train")
    validation = read_channel(validation_dir, "validation") if validation_dir else None
    detector = fit_request(request, train, validation)
    detector.save(model_dir)
    metrics = _metrics("train", train, detector.scores(train))
    if validation is not None:
        metrics |= _metrics("validation", validation, detector.scores(validation))
    (model_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    for name, value in metrics.items():
        print(f"{name}={value:.6f}", flush=True)
    return metrics
