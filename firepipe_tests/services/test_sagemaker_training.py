"""The SageMaker training entry point: script mode and the plain /opt/ml layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firepipe.core.training.job import (
    METRICS_FILE,
    OBJECTIVE_METRIC,
    TrainingRequest,
    encode_hyperparameters,
)
from firepipe.core.training.models import DETECTOR_FILE, Detector
from firepipe.services.sagemaker_training import main
from firepipe_tests.core.training.test_job import channels
from firepipe_tests.core.training.test_models import FAST, FEATURES, synthetic_frame


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
