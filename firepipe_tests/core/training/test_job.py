"""The training entry point: channel folders in, a saved detector and printed metrics out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from firepipe.core.training.dataset import SPLIT
from firepipe.core.training.job import (
    METRIC_DEFINITIONS,
    METRICS_FILE,
    OBJECTIVE_METRIC,
    TrainingRequest,
    encode_hyperparameters,
    parse_hyperparameters,
    run_training,
)
from firepipe.core.training.models import Detector, train_detector
from firepipe_tests.core.training.test_models import FAST, FEATURES, synthetic_frame

REQUEST = TrainingRequest(
    "lightgbm", FEATURES, "spec-abc", seed=3, params=FAST, increasing=FEATURES[1:3]
)


def channels(root: Path) -> tuple[Path, Path]:
    """A train channel of two Parquet files (one in a sub-folder) and a validation channel."""
    train, validation = root / "train", root / "validation"
    (train / "part").mkdir(parents=True)
    validation.mkdir()
    frame = synthetic_frame(n_rows=2000).with_columns(pl.lit("train").alias(SPLIT))
    frame.head(1200).write_parquet(train / "a.parquet")
    frame.tail(800).write_parquet(train / "part" / "b.parquet")
    synthetic_frame(n_rows=800, seed=5).with_columns(
        pl.lit("validation").alias(SPLIT)
    ).write_parquet(validation / "v.parquet")
    return train, validation


def test_the_entry_point_does_not_import_the_tuner() -> None:
    """A training job runs this module: optuna (tuning's local backend) is not needed there."""
    code = "import sys, firepipe.core.training.job; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_hyperparameters_round_trip_as_strings() -> None:
    encoded = encode_hyperparameters(REQUEST)
    assert all(isinstance(v, str) for v in encoded.values())
    assert encoded["feature_names"] == json.dumps(list(FEATURES), separators=(",", ":"))
    assert encoded["num_threads"] == "1"
    assert encoded["learning_rate"] == "0.05"
    parsed = parse_hyperparameters(encoded)
    assert parsed.algorithm == "lightgbm"
    assert parsed.feature_names == FEATURES
    assert parsed.increasing == FEATURES[1:3]
    assert (parsed.feature_spec_hash, parsed.seed) == ("spec-abc", 3)
    assert parsed.params is not None
    assert parsed.params["num_boost_round"] == FAST["num_boost_round"]
    assert isinstance(parsed.params["num_leaves"], int)
    assert isinstance(parsed.params["learning_rate"], float)


def test_parse_takes_tuning_job_values_and_skips_sagemaker_entries() -> None:
    hps = {
        "algorithm": "lightgbm",
        "feature_names": '["a", "b"]',
        "feature_spec_hash": "h",
        "num_leaves": "17.0",  # SageMaker's integer ranges may arrive like this
        "learning_rate": "0.0123",
        "sagemaker_program": "entry.py",
        "_tuning_objective_metric": OBJECTIVE_METRIC,
    }
    parsed = parse_hyperparameters(hps)
    assert parsed.params == {"num_leaves": 17, "learning_rate": 0.0123}
    assert parsed.seed == 0
    assert parsed.increasing == ()  # a request from before the constraints: none


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithm": "svm"}, "algorithm must be one of"),
        ({"feature_names": "temperature"}, "not a JSON list"),
        ({"feature_names": '{"a": 1}'}, "JSON list of strings"),
        ({"increasing": "temperature_c__diff_60s"}, "increasing is not a JSON list"),
        ({"increasing": '["not_a_feature"]'}, "not among the feature names"),
        ({"num_leaves": "2.5"}, "whole number"),
        ({"learning_rate": "fast"}, "not a number"),
        ({"learning_rate": "nan"}, "not finite"),
        ({"max_depth": "3"}, r"unknown hyperparameter\(s\) \['max_depth'\]"),
    ],
)
def test_bad_hyperparameters_are_refused(change: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hyperparameters(encode_hyperparameters(REQUEST) | change)
    with pytest.raises(ValueError, match="lack"):
        parse_hyperparameters({"algorithm": "lightgbm"})


def test_encode_refuses_values_sagemaker_would_reject() -> None:
    names = tuple(f"temperature_c__feature_{i:04d}" for i in range(100))
    with pytest.raises(ValueError, match="2500"):
        encode_hyperparameters(TrainingRequest("logistic", names, "h"))


def test_run_training_writes_the_model_dir_and_prints_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, validation = channels(tmp_path)
    model_dir = tmp_path / "model"
    metrics = run_training(train, validation, model_dir, encode_hyperparameters(REQUEST))
    assert set(metrics) == {d["Name"] for d in METRIC_DEFINITIONS}
    assert 0.9 < metrics[OBJECTIVE_METRIC] <= 1.0
    assert json.loads((model_dir / METRICS_FILE).read_text()) == metrics
    printed = capsys.readouterr().out
    for definition in METRIC_DEFINITIONS:  # what SageMaker's regexes will find in the log
        found = re.findall(definition["Regex"], printed)
        assert len(found) == 1
        assert float(found[0]) == pytest.approx(metrics[definition["Name"]], abs=1e-6)
    # the saved detector is the one training in-process gives, on all train rows
    detector = Detector.load(model_dir)
    frames = [pl.read_parquet(p) for p in sorted(train.rglob("*.parquet"))]
    direct = train_detector(
        pl.concat(frames),
        pl.read_parquet(validation / "v.parquet"),
        FEATURES,
        "spec-abc",
        "lightgbm",
        FAST,
        3,
        increasing=FEATURES[1:3],  # the request's constraints reach the model
    )
    assert detector == direct
    unseen = synthetic_frame(n_rows=300, seed=8)
    assert np.array_equal(detector.scores(unseen), direct.scores(unseen))


def test_run_training_without_validation(tmp_path: Path) -> None:
    train, _ = channels(tmp_path)
    request = TrainingRequest("logistic", FEATURES, "h")
    metrics = run_training(train, None, tmp_path / "m", encode_hyperparameters(request))
    assert set(metrics) == {"train:average_precision", "train:roc_auc"}
    assert Detector.load(tmp_path / "m").algorithm == "logistic"


def test_channels_are_checked(tmp_path: Path) -> None:
    _, validation = channels(tmp_path)
    hps = encode_hyperparameters(REQUEST)
    with pytest.raises(ValueError, match=r"holds split \['validation'\], not only train"):
        run_training(validation, None, tmp_path / "m", hps)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no Parquet files"):
        run_training(tmp_path / "empty", None, tmp_path / "m", hps)
    with pytest.raises(ValueError, match="does not exist"):
        run_training(tmp_path / "nowhere", None, tmp_path / "m", hps)
