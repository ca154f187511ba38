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
    assert optional == ["device_id", "ts", "channel_profile"]
    assert {c.name: c.type.name for c in signature.inputs.inputs}["smoke__max_60s"] == "float"
    assert [c.name for c in signature.outputs.inputs] == ["score", "alarm"]
    with pytest.raises(ValueError, match="at least one row"):
        detector_signature(detector, feature_frame().head(0))


def test_a_detector_with_persistence_gets_a_signature_from_features_alone(tmp_path: Path) -> None:
    # ml/detector saves the operating point before registering: 2 s must not need ts rows.
    detector = saved_detector(tmp_path, persistence_s=2)
    signature = detector_signature(detector, feature_frame().select(FEATURES))
    assert [c.name for c in signature.inputs.inputs] == [
        *FEATURES,
        "device_id",
        "ts",
        "channel_profile",
    ]
    assert [c.name for c in signature.outputs.inputs] == ["score", "alarm"]


HEAT_SMOKE = "temperature_c+smoke_obscuration_pct_per_m"
SMOKE = "smoke_obscuration_pct_per_m"


def _with_profiles(frame: pl.DataFrame) -> pl.DataFrame:
    """dev-0 heat and smoke (spelled in another order), dev-1 smoke alone, dev-2 a profile the
    detector has no point for, dev-3 says nothing."""
    given = {
        "dev-0": "smoke_obscuration_pct_per_m + temperature_c",
        "dev-1": SMOKE,
        "dev-2": "temperature_c+co_ppm",
    }
    return frame.with_columns(
        pl.col("device_id").replace_strict(given, default=None).alias("channel_profile")
    )


def test_each_device_alarms_at_its_channel_profiles_point(tmp_path: Path) -> None:
    # One point 0.55 with 2 s; heat and smoke 0.3 at once; smoke alone 0.45 with 3 s.
    points = {HEAT_SMOKE: (0.3, 0), SMOKE: (0.45, 3)}
    detector = saved_detector(tmp_path, threshold=0.55, persistence_s=2)
    detector = detector.with_operating_point(0.55, 2, points)
    frame = _with_profiles(feature_frame(seed=2)).sample(fraction=1.0, shuffle=True, seed=1)
    predicted = predict_frame(detector, frame)
    scored = frame.select("device_id", "ts").with_columns(score=predicted["score"])
    at = {"dev-0": (0.3, 0), "dev-1": (0.45, 3), "dev-2": (0.55, 2), "dev-3": (0.55, 2)}
    expected = np.zeros(frame.height, dtype=bool)
    for device, (threshold, persistence_s) in at.items():
        rows = (frame["device_id"] == device).to_numpy()
        part = scored.filter(pl.Series(rows))
        expected[rows] = evaluation.alarm_sounding(part, threshold, persistence_s).to_numpy()
    assert predicted["alarm"].to_numpy().tolist() == expected.tolist()
    # The points differ where it shows: each device alarms a different number of times.
    counts = {d: int(expected[(frame["device_id"] == d).to_numpy()].sum()) for d in at}
    assert counts["dev-0"] > counts["dev-1"] > counts["dev-3"] > 0
    # Without the column every device alarms at the one point.
    plain = predict_frame(detector, frame.drop("channel_profile"))
    expected_plain = evaluation.alarm_sounding(scored, 0.55, 2).to_numpy()
    assert plain["alarm"].to_numpy().tolist() == expected_plain.tolist()


@pytest.mark.parametrize("points", [{SMOKE: (0.4, 0)}, {}])
def test_a_channel_profile_naming_an_unknown_channel_is_refused(
    tmp_path: Path, points: dict
) -> None:
    # refused whether or not the detector has a point per profile: the request is wrong
    detector = saved_detector(tmp_path).with_operating_point(0.5, 0, points)
    frame = feature_frame().with_columns(
        pl.lit("smoke_obscuration_pct_per_m+lidar").alias("channel_profile")
    )
    with pytest.raises(
        ValueError, match=r"'channel_profile' 'smoke_obscuration_pct_per_m\+lidar'.*'lidar'"
    ):
        predict_frame(detector, frame)


def test_the_pyfunc_reads_the_channel_profile_column(tmp_path: Path) -> None:
    detector = saved_detector(tmp_path / "detector", threshold=0.95, persistence_s=0)
    detector = detector.with_operating_point(0.95, 0, {SMOKE: (0.2, 0)})
    detector.save(tmp_path / "detector")
    frame = _with_profiles(feature_frame(seed=1))
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=DetectorModel(),
        artifacts={DETECTOR_ARTIFACT: str(tmp_path / "detector")},
        signature=detector_signature(detector, frame),
        pip_requirements=[],
    )
    predicted = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(
        input_example_pandas(detector, frame)
    )
    score = predicted["score"].to_numpy()
    smoke_alone = (frame["device_id"] == "dev-1").to_numpy()
    threshold = np.where(smoke_alone, 0.2, 0.95)
    assert predicted["alarm"].to_numpy().tolist() == (score >= threshold).tolist()
    assert ((score >= 0.2) & (score < 0.95) & smoke_alone).any()  # the point made a difference


def test_the_served_model_carries_the_detectors_feature_spec(tmp_path: Path) -> None:
    from firepipe.core.features.spec import default_spec
    from firepipe.core.training.models import train_detector

    spec = default_spec()
    names = spec.names[: len(FEATURES)]
    frame = feature_frame().rename(dict(zip(FEATURES, names, strict=True)))
    detector = train_detector(frame, None, names, spec.hash(), "logistic", {"early_fire_weight": 1})
    detector.with_feature_spec(spec).save(tmp_path / "detector")
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=DetectorModel(),
        artifacts={DETECTOR_ARTIFACT: str(tmp_path / "detector")},
        signature=detector_signature(detector, frame),
        pip_requirements=[],
    )
    served = mlflow.pyfunc.load_model(str(tmp_path / "model")).unwrap_python_model()
    assert served.detector.feature_spec == spec
    assert served.detector.feature_names == names
