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
from firepipe.core.training.entry import (
    METRIC_DEFINITIONS,
    METRICS_FILE,
    OBJECTIVE_METRIC,
    TrainingRequest,
    encode_hyperparameters,
    main,
    parse_hyperparameters,
    run_training,
)
from firepipe.core.training.models import DETECTOR_FILE, Detector, train_detector
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
    code = "import sys, firepipe.core.training.entry; print('optuna' in sys.modules)"
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


def sagemaker_env(monkeypatch: pytest.MonkeyPatch, root: Path, hps: dict) -> Path:
    train, validation = channels(root)
    model_dir = root / "opt_ml_model"
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(train))
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(validation))
    monkeypatch.setenv("SM_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("SM_HPS", json.dumps(hps))
    return model_dir


def test_main_reads_sagemaker_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The training toolkit decodes JSON-looking values in SM_HPS: numbers and the name list
    hps = {
        "algorithm": "lightgbm",
        "feature_names": list(FEATURES),
        "feature_spec_hash": "spec-abc",
        "seed": 3,
        **FAST,
        "sagemaker_region": "eu-west-1",
    }
    model_dir = sagemaker_env(monkeypatch, tmp_path, hps)
    assert main(["--num_boost_round", "7"]) == 0
    detector = Detector.load(model_dir)
    assert detector.params["num_boost_round"] == 7  # the argument overrides SM_HPS
    assert detector.params["seed"] == 3
    assert detector.feature_names == FEATURES
    assert (model_dir / DETECTOR_FILE).is_file()
    assert f"{OBJECTIVE_METRIC}=" in capsys.readouterr().out


def test_main_reports_bad_setups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sagemaker_env(monkeypatch, tmp_path, {"algorithm": "lightgbm"})
    assert main([]) == 2
    assert "hyperparameters lack" in capsys.readouterr().err
    monkeypatch.delenv("SM_MODEL_DIR")
    assert main(["--algorithm", "logistic"]) == 2
    assert "SM_MODEL_DIR" in capsys.readouterr().err
    assert main(["--algorithm"]) == 2
    assert "--name value pairs" in capsys.readouterr().err


def container_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A training job with firepipe's own image, no SM_* variables: /opt/ml as `tmp_path/opt_ml`
    (input/config/hyperparameters.json, input/data/<channel>, model, output/failure)."""
    for name in ("SM_HPS", "SM_CHANNEL_TRAIN", "SM_CHANNEL_VALIDATION", "SM_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "opt_ml"
    (root / "output").mkdir(parents=True)
    return root


def write_hyperparameters(root: Path, params: dict[str, int]) -> None:
    hps = encode_hyperparameters(TrainingRequest("lightgbm", FEATURES, "spec-h", 3, params))
    (root / "input/config").mkdir(parents=True)
    (root / "input/config/hyperparameters.json").write_text(json.dumps(hps))


def test_main_reads_the_container_layout_without_sm_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = container_root(tmp_path, monkeypatch)
    assert main([], root=root) == 2
    assert "not inside a SageMaker training job" in capsys.readouterr().err
    assert "not inside" in (root / "output/failure").read_text()
    write_hyperparameters(root, {"num_boost_round": 5})
    for split, seed in (("train", 1), ("validation", 2)):
        (root / "input/data" / split).mkdir(parents=True)
        synthetic_frame(600, seed).write_parquet(root / "input/data" / split / "part-0.parquet")
    assert main([], root=root) == 0
    detector = Detector.load(root / "model")
    assert detector.feature_spec_hash == "spec-h"
    assert detector.params["num_boost_round"] == 5
    assert json.loads((root / "model" / METRICS_FILE).read_text())[OBJECTIVE_METRIC] > 0


def test_any_failure_reaches_sagemakers_failure_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not only ValueErrors: a channel file polars cannot read fails the job with its reason."""
    root = container_root(tmp_path, monkeypatch)
    write_hyperparameters(root, {})
    (root / "input/data/train").mkdir(parents=True)
    (root / "input/data/train/part-0.parquet").write_bytes(b"PAR1 not a parquet file")
    assert main([], root=root) == 2
    reason = (root / "output/failure").read_text()
    assert reason.startswith("training failed: ")
    assert "Error" in reason  # the exception's type names what failed
    assert reason in capsys.readouterr().err
