from datetime import datetime, timedelta
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import polars as pl
import pytest

from firepipe.core.training import evaluation
from firepipe.services.detector_model import (
    DETECTOR_ARTIFACT,
    DetectorModel,
    alarm_flags,
    detector_signature,
    input_example_pandas,
    predict_frame,
)
from firepipe_tests.services.detector_sample import FEATURES, feature_frame, saved_detector

T0 = datetime(2026, 1, 1)


def _ts(seconds: list[int]) -> pl.Series:
    return pl.Series("ts", [T0 + timedelta(seconds=s) for s in seconds])


def test_alarm_needs_the_score_held_for_persistence_seconds() -> None:
    scores = np.array([0.9, 0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.9])
    flags = alarm_flags(scores, 0.5, 2, _ts(list(range(8))))
    # above from 0 s: alarm once 2 s have passed; broken at 3 s; again from 4 s, alarm at 6 s.
    assert flags.tolist() == [False, False, True, False, False, False, True, True]
    assert alarm_flags(scores, 0.5, 0).tolist() == (scores >= 0.5).tolist()


def test_alarm_is_per_device_and_keeps_the_input_order() -> None:
    # Two devices interleaved and shuffled; device b never holds its score for 2 s.
    rows = [
        ("a", 0, 0.9),
        ("b", 0, 0.9),
        ("a", 1, 0.9),
        ("b", 1, 0.1),
        ("a", 2, 0.9),
        ("b", 2, 0.9),
    ]
    order = [5, 0, 3, 4, 1, 2]
    shuffled = [rows[i] for i in order]
    flags = alarm_flags(
        np.array([r[2] for r in shuffled]),
        0.5,
        2,
        _ts([r[1] for r in shuffled]),
        pl.Series([r[0] for r in shuffled]),
    )
    expected = {("a", 2): True}
    assert flags.tolist() == [expected.get((r[0], r[1]), False) for r in shuffled]


def test_alarm_flags_are_evaluations_rule_for_every_persistence() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(60)
    ts = _ts(sorted(rng.choice(200, 60, replace=False).tolist()))
    devices = pl.Series(rng.choice(["a", "b"], 60))
    for persistence_s in (0, 2, 5):
        frame = pl.DataFrame({"device_id": devices, "ts": ts, "score": scores})
        expected = evaluation.alarm_sounding(frame, 0.4, persistence_s).to_list()
        assert alarm_flags(scores, 0.4, persistence_s, ts, devices).tolist() == expected


def test_alarm_with_persistence_needs_timestamps() -> None:
    with pytest.raises(ValueError, match="needs a 'ts' column"):
        alarm_flags(np.array([0.9]), 0.5, 4)
    with pytest.raises(ValueError, match="must be a datetime"):
        alarm_flags(np.array([0.9]), 0.5, 4, pl.Series([1.0]))


def test_predict_frame_refuses_missing_features(tmp_path: Path) -> None:
    detector = saved_detector(tmp_path)
    with pytest.raises(ValueError, match="smoke__max_60s"):
        predict_frame(detector, feature_frame().drop("smoke__max_60s"))


@pytest.mark.parametrize("algorithm", ["lightgbm", "logistic"])
def test_pyfunc_predicts_scores_and_alarms_of_the_saved_detector(
    tmp_path: Path, algorithm: str
) -> None:
    detector = saved_detector(tmp_path / "detector", algorithm, threshold=0.6, persistence_s=2)
    frame = feature_frame(seed=1)
    signature = detector_signature(detector, frame)
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=DetectorModel(),
        artifacts={DETECTOR_ARTIFACT: str(tmp_path / "detector")},
        signature=signature,
        pip_requirements=[],
    )
    predicted = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(
        input_example_pandas(detector, frame)
    )
    expected_scores = detector.scores(frame)
    assert list(predicted.columns) == ["score", "alarm"]
    assert np.array_equal(predicted["score"].to_numpy(), expected_scores)
    # The alarms follow evaluation's rule, the one the operating point was chosen by.
    scored = frame.select("device_id", "ts").with_columns(score=pl.Series(expected_scores))
    expected_alarms = evaluation.alarm_sounding(scored, 0.6, 2)
    assert predicted["alarm"].tolist() == expected_alarms.to_list()
    assert 0 < expected_alarms.sum() < (expected_scores >= 0.6).sum()  # persistence mattered


def test_signature_lists_the_features_and_optional_ids(tmp_path: Path) -> None:
    detector = saved_detector(tmp_path)
    signature = detector_signature(detector, feature_frame())
    required = [c.name for c in signature.inputs.inputs if c.required]
    optional = [c.name for c in signature.inputs.inputs if not c.required]
    assert required == list(FEATURES)
    assert optional == ["device_id", "ts"]
    assert {c.name: c.type.name for c in signature.inputs.inputs}["smoke__max_60s"] == "float"
    assert [c.name for c in signature.outputs.inputs] == ["score", "alarm"]
    with pytest.raises(ValueError, match="at least one row"):
        detector_signature(detector, feature_frame().head(0))


def test_a_detector_with_persistence_gets_a_signature_from_features_alone(tmp_path: Path) -> None:
    # ml/detector saves the operating point before registering: 2 s must not need ts rows.
    detector = saved_detector(tmp_path, persistence_s=2)
    signature = detector_signature(detector, feature_frame().select(FEATURES))
    assert [c.name for c in signature.inputs.inputs] == [*FEATURES, "device_id", "ts"]
    assert [c.name for c in signature.outputs.inputs] == ["score", "alarm"]
