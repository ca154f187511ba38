"""Detectors: training, scoring with missing channels, bit-identical save/load, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from firepipe.core.features.spec import FeatureSpec, default_spec
from firepipe.core.training.dataset import LABEL, SECONDS_SINCE_IGNITION
from firepipe.core.training.models import (
    ALGORITHMS,
    DETECTOR_FILE,
    FEATURE_SPEC_FILE,
    LIGHTGBM_MODEL_FILE,
    Detector,
    _Linear,
    channel_groups,
    default_params,
    early_fire_weights,
    feature_matrix,
    train_detector,
)

FEATURES = (
    "temperature_c__mean_30s",
    "temperature_c__diff_60s",
    "smoke_obscuration_pct_per_m__max_30s",
    "co_ppm__mean_30s",
    "co_ppm__diff_60s",
    "humidity_pct__mean_30s",
    "smoke_heat_lag_300s",
)
CO = ("co_ppm__mean_30s", "co_ppm__diff_60s")
# Small and single-threaded so each test trains in well under a second.
FAST = {"num_boost_round": 40, "num_threads": 1, "early_stopping_rounds": 0, "min_data_in_leaf": 20}


def synthetic_frame(n_rows: int = 3000, seed: int = 0, co_absent_every: int = 3) -> pl.DataFrame:
    """Readings of 60 devices: fire rows (30 %, 0-600 s after ignition) run hotter, smokier and
    with more CO; humidity is noise. Every `co_absent_every`-th device has no CO sensor (its CO
    features are null), every second one no humidity sensor, and a few smoke values are missing
    here and there."""
    rng = np.random.default_rng(seed)
    device = rng.integers(0, 60, n_rows)
    fire = rng.random(n_rows) < 0.3
    frame = pl.DataFrame(
        {
            "device_id": [f"dev-{d}" for d in device],
            LABEL: fire,
            "temperature_c__mean_30s": 21 + rng.normal(0, 2, n_rows) + 2.5 * fire,
            "temperature_c__diff_60s": rng.normal(0, 1, n_rows) + 1.0 * fire,
            "smoke_obscuration_pct_per_m__max_30s": np.abs(rng.normal(0, 0.6, n_rows)) + 0.8 * fire,
            "co_ppm__mean_30s": rng.normal(3, 3, n_rows) + 5 * fire,
            "co_ppm__diff_60s": rng.normal(0, 2, n_rows) + 3 * fire,
            "humidity_pct__mean_30s": rng.normal(50, 10, n_rows),
            "smoke_heat_lag_300s": rng.normal(0, 30, n_rows),
        },
        schema_overrides={n: pl.Float32 for n in FEATURES},
    )
    no_co = (pl.Series(device) % co_absent_every == 0) if co_absent_every else pl.lit(False)
    sporadic = pl.Series(rng.random(n_rows) < 0.02)
    # fire rows 0-600 s after ignition (the early ones weigh more in training); others none
    since = pl.Series(np.where(fire, rng.uniform(0, 600, n_rows), np.nan), nan_to_null=True)
    return frame.with_columns(
        since.alias(SECONDS_SINCE_IGNITION),
        *(pl.when(no_co).then(None).otherwise(pl.col(c)).alias(c) for c in CO),
        pl.when(pl.Series(device) % 2 == 0)
        .then(None)
        .otherwise(pl.col("humidity_pct__mean_30s"))
        .alias("humidity_pct__mean_30s"),
        pl.when(sporadic)
        .then(None)
        .otherwise(pl.col("smoke_obscuration_pct_per_m__max_30s"))
        .alias("smoke_obscuration_pct_per_m__max_30s"),
    )


def fast_params(algorithm: str) -> dict[str, float | int]:
    return dict(FAST) if algorithm == "lightgbm" else {}


def train(algorithm: str, frame: pl.DataFrame | None = None, seed: int = 0, **extra) -> Detector:
    params = {**fast_params(algorithm), **extra}
    data = synthetic_frame() if frame is None else frame
    return train_detector(data, None, FEATURES, "spec123", algorithm, params, seed)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_scores_separate_fires_on_unseen_rows(algorithm: str) -> None:
    detector = train(algorithm)
    unseen = synthetic_frame(seed=7)
    scores = detector.scores(unseen)
    assert scores.dtype == np.float64
    assert scores.shape == (unseen.height,)
    assert np.all((scores >= 0) & (scores <= 1))
    assert average_precision_score(unseen[LABEL].to_numpy(), scores) > 0.9
    assert detector.feature_spec_hash == "spec123"
    assert detector.params["seed"] == 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_save_load_gives_bit_identical_scores(algorithm: str, tmp_path: Path) -> None:
    points = {"temperature_c+smoke_obscuration_pct_per_m": (0.61, 0), "temperature_c": (0.8, 2)}
    detector = train(algorithm).with_operating_point(0.73, 4, points)
    written = detector.save(tmp_path / "model")
    expected = {DETECTOR_FILE} | ({LIGHTGBM_MODEL_FILE} if algorithm == "lightgbm" else set())
    assert {p.name for p in written} == expected
    assert {p.name for p in (tmp_path / "model").iterdir()} == expected
    loaded = Detector.load(tmp_path / "model")
    assert loaded == detector
    assert (loaded.threshold, loaded.persistence_s) == (0.73, 4)
    assert loaded.profile_points == points
    unseen = synthetic_frame(seed=11)
    assert np.array_equal(loaded.scores(unseen), detector.scores(unseen))
    assert loaded.scores(unseen).tobytes() == detector.scores(unseen).tobytes()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_model_trained_with_missing_channel_scores_devices_without_it(algorithm: str) -> None:
    detector = train(algorithm)  # a third of the training devices lack CO
    unseen = synthetic_frame(seed=3, co_absent_every=0)
    without_co = unseen.with_columns(pl.lit(None, dtype=pl.Float32).alias(c) for c in CO)
    with_co = detector.scores(unseen)
    scores = detector.scores(without_co)
    assert np.all(np.isfinite(scores))
    y = unseen[LABEL].to_numpy()
    # still a detector on temperature and smoke alone, though CO made it better
    assert average_precision_score(y, scores) > 0.85
    assert average_precision_score(y, with_co) > average_precision_score(y, scores)
    assert not np.array_equal(scores, with_co)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_seed_same_model(algorithm: str) -> None:
    first, second = train(algorithm, seed=5), train(algorithm, seed=5)
    assert first.payload == second.payload
    unseen = synthetic_frame(seed=2)
    assert np.array_equal(first.scores(unseen), second.scores(unseen))


def test_lightgbm_seed_changes_the_bagged_model() -> None:
    assert train("lightgbm", seed=1).payload != train("lightgbm", seed=2).payload


def test_lightgbm_stops_early_on_validation() -> None:
    params = {**FAST, "num_boost_round": 300, "early_stopping_rounds": 5, "learning_rate": 0.3}
    detector = train_detector(
        synthetic_frame(), synthetic_frame(seed=9), FEATURES, "h", "lightgbm", params
    )
    trees = lgb.Booster(model_str=detector.payload).num_trees()
    assert 5 < trees < 300
    assert detector.params["num_boost_round"] == 300


def test_logistic_imputes_the_mean_and_flags_an_absent_channel() -> None:
    groups = channel_groups(FEATURES)
    assert groups == [[0, 1], [2], [3, 4], [5], [6]]
    linear = _Linear.from_json(train("logistic").payload)
    row = synthetic_frame(n_rows=1, seed=4, co_absent_every=0)
    absent = row.with_columns(pl.lit(None, dtype=pl.Float32).alias(c) for c in CO)
    half = row.with_columns(pl.lit(None, dtype=pl.Float32).alias("co_ppm__diff_60s"))
    design = {
        name: linear.design(feature_matrix(frame, FEATURES))[0]
        for name, frame in {"row": row, "absent": absent, "half": half}.items()
    }
    n = len(FEATURES)
    co_indicator = n + 2  # the third group
    assert design["row"][co_indicator] == 0.0
    assert design["half"][co_indicator] == 0.0  # one CO feature missing: the sensor is there
    assert design["absent"][co_indicator] == 1.0
    assert design["absent"][3] == design["absent"][4] == design["half"][4] == 0.0  # the mean
    assert design["half"][3] == design["row"][3] != 0.0


def test_default_params_are_copies() -> None:
    params = default_params("lightgbm")
    params["num_leaves"] = 2
    assert default_params("lightgbm")["num_leaves"] == 31


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithm": "xgboost"}, "algorithm must be one of"),
        ({"params": {"num_leafs": 3}}, "no parameter"),
        ({"params": {"num_leaves": 3.5}}, "num_leaves must be int"),
        (
            {"feature_names": ("temperature_c__mean_30s", "nope")},
            r"lacks feature column\(s\) \['nope'\]",
        ),
        ({"feature_names": ()}, "non-empty"),
    ],
)
def test_bad_training_input_is_refused(change: dict, message: str) -> None:
    arguments = {
        "train": synthetic_frame(n_rows=200),
        "validation": None,
        "feature_names": FEATURES,
        "feature_spec_hash": "h",
        "algorithm": "lightgbm",
        "params": dict(FAST),
    } | change
    with pytest.raises(ValueError, match=message):
        train_detector(**arguments)


def test_single_class_or_null_labels_are_refused() -> None:
    frame = synthetic_frame(n_rows=200)
    with pytest.raises(ValueError, match="both fire and non-fire"):
        train_detector(
            frame.with_columns(pl.lit(False).alias(LABEL)), None, FEATURES, "h", "logistic"
        )
    nulls = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col(LABEL)).alias(LABEL)
    )
    with pytest.raises(ValueError, match="null"):
        train_detector(nulls, None, FEATURES, "h", "logistic")


def test_a_device_alarms_at_its_channel_profiles_point() -> None:
    heat_smoke = "temperature_c+smoke_obscuration_pct_per_m"
    detector = train("logistic").with_operating_point(0.9, 6, {heat_smoke: (0.6, 0)})
    assert detector.operating_point(heat_smoke) == (0.6, 0)
    # any other profile, or none known, alarms at the one point
    assert detector.operating_point("temperature_c") == (0.9, 6)
    assert detector.operating_point(None) == (0.9, 6)
    # replacing the point drops the profiles' unless they are given again
    assert detector.with_operating_point(0.8, 0).profile_points == {}


def test_a_format_1_detector_loads_with_its_one_point(tmp_path: Path) -> None:
    detector = train("logistic").with_operating_point(0.7, 2, {"temperature_c": (0.5, 0)})
    detector.save(tmp_path)
    document = json.loads((tmp_path / DETECTOR_FILE).read_text())
    del document["profile_points"]
    (tmp_path / DETECTOR_FILE).write_text(json.dumps({**document, "format_version": 1}))
    loaded = Detector.load(tmp_path)
    assert (loaded.threshold, loaded.persistence_s, loaded.profile_points) == (0.7, 2, {})
    (tmp_path / DETECTOR_FILE).write_text(json.dumps({**document, "format_version": 3}))
    with pytest.raises(ValueError, match="has format 3, this code reads 1, 2"):
        Detector.load(tmp_path)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_detector_saves_and_loads_its_feature_spec(algorithm: str, tmp_path: Path) -> None:
    spec = default_spec()
    detector = train(algorithm)
    # A detector knows the hash of its spec; the spec itself comes in once training is done.
    with pytest.raises(ValueError, match="saved without its feature spec"):
        detector.require_feature_spec()
    with pytest.raises(ValueError, match="trained on feature spec spec123"):
        detector.with_feature_spec(spec)
    detector = replace_hash(detector, spec.hash()).with_feature_spec(spec)
    written = detector.save(tmp_path)
    assert tmp_path / FEATURE_SPEC_FILE in written
    assert FeatureSpec.from_json((tmp_path / FEATURE_SPEC_FILE).read_text()) == spec
    loaded = Detector.load(tmp_path)
    assert loaded.feature_spec == loaded.require_feature_spec() == spec
    assert loaded == detector
    # The spec stays with every operating point.
    assert detector.with_operating_point(0.7, 2).feature_spec == spec
    # Saved again without a spec, no stale spec file is left behind.
    replace_hash(detector, spec.hash()).save(tmp_path)
    assert not (tmp_path / FEATURE_SPEC_FILE).exists()
    assert Detector.load(tmp_path).feature_spec is None


def replace_hash(detector: Detector, spec_hash: str) -> Detector:
    return dataclasses.replace(detector, feature_spec_hash=spec_hash, feature_spec=None)


def test_a_feature_spec_must_compute_every_input(tmp_path: Path) -> None:
    spec = default_spec()
    fewer = FeatureSpec(tuple(f for f in spec.features if f.name != "smoke_heat_lag_300s"))
    detector = replace_hash(train("logistic"), fewer.hash())
    with pytest.raises(ValueError, match=r"computes no feature.*smoke_heat_lag_300s"):
        detector.with_feature_spec(fewer)
    # A spec file that does not match the detector's hash is refused on load.
    replace_hash(detector, spec.hash()).with_feature_spec(spec).save(tmp_path)
    document = json.loads((tmp_path / DETECTOR_FILE).read_text())
    (tmp_path / DETECTOR_FILE).write_text(json.dumps({**document, "feature_spec_hash": "x"}))
    with pytest.raises(ValueError, match="trained on feature spec x"):
        Detector.load(tmp_path)


def test_a_fires_first_minutes_weigh_more() -> None:
    frame = pl.DataFrame(
        {
            LABEL: [False, True, True, True, False],
            SECONDS_SINCE_IGNITION: [None, 0.0, 120.0, 121.0, -5.0],
        }
    )
    params = default_params("lightgbm")
    assert (params["early_fire_weight"], params["early_fire_s"]) == (3.0, 120.0)
    assert early_fire_weights(frame, params).tolist() == [1.0, 3.0, 3.0, 1.0, 1.0]
    assert early_fire_weights(frame, {**params, "early_fire_weight": 1.0}).tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="needs the frame's 'seconds_since_ignition'"):
        early_fire_weights(frame.drop(SECONDS_SINCE_IGNITION), params)
    with pytest.raises(ValueError, match="early_fire_weight must be > 0"):
        early_fire_weights(frame, {**params, "early_fire_weight": 0.0})
    # It reaches the model: the same data weighted otherwise trains another detector, and the
    # weight is not a LightGBM parameter.
    weighted = train("lightgbm")
    plain = train("lightgbm", early_fire_weight=1.0)
    assert weighted.payload != plain.payload
    assert "early_fire" not in weighted.payload.split("parameters:")[-1]
    assert weighted.params["early_fire_weight"] == 3.0


def test_operating_point_is_checked(tmp_path: Path) -> None:
    detector = train("logistic")
    with pytest.raises(ValueError, match="threshold"):
        detector.with_operating_point(1.5, 0)
    with pytest.raises(ValueError, match="persistence_s"):
        detector.with_operating_point(0.5, -1)
    with pytest.raises(ValueError, match="threshold of profile temperature_c must be in"):
        detector.with_operating_point(0.5, 0, {"temperature_c": (1.2, 0)})
    with pytest.raises(ValueError, match="is not a channel profile's name"):  # not in order
        detector.with_operating_point(
            0.5, 0, {"smoke_obscuration_pct_per_m+temperature_c": (0.5, 0)}
        )
    with pytest.raises(ValueError, match="unknown channel"):
        detector.with_operating_point(0.5, 0, {"lidar": (0.5, 0)})
    with pytest.raises(ValueError, match="not a saved detector"):
        Detector.load(tmp_path)
    with pytest.raises(ValueError, match="not numeric"):
        detector.scores(synthetic_frame(n_rows=5).with_columns(pl.lit("x").alias(FEATURES[0])))


def banded_frame(n_rows: int = 4000, seed: int = 0) -> pl.DataFrame:
    """Fires only where temperature_c__diff_60s lies in a middle band: a score free to follow
    the data rises into the band and falls after it."""
    rng = np.random.default_rng(seed)
    rise = rng.uniform(0, 10, n_rows)
    other = rng.normal(0, 1, n_rows)
    fire = (rise > 3) & (rise < 6)
    return pl.DataFrame(
        {"device_id": "d", LABEL: fire, "temperature_c__diff_60s": rise, "noise": other}
    )


def _scores_along_rise(detector: Detector) -> np.ndarray:
    grid = pl.DataFrame(
        {
            "temperature_c__diff_60s": np.tile(np.linspace(0, 10, 101), 5),
            "noise": np.repeat(np.linspace(-2, 2, 5), 101),
        }
    )
    return detector.scores(grid).reshape(5, 101)


def test_monotone_constraint_keeps_the_score_from_falling_as_the_rise_grows() -> None:
    frame = banded_frame()
    names = ("temperature_c__diff_60s", "noise")
    params = {**FAST, "early_fire_weight": 1.0}  # the band has no ignition times
    free = train_detector(frame, None, names, "h", "lightgbm", params)
    bound = train_detector(
        frame, None, names, "h", "lightgbm", params, increasing=("temperature_c__diff_60s",)
    )
    # The data falls after the band: unconstrained, the score does too.
    assert float(np.diff(_scores_along_rise(free), axis=1).min()) < -0.1
    steps = np.diff(_scores_along_rise(bound), axis=1)
    assert float(steps.min()) >= 0.0
    assert float(steps.max()) > 0.1  # and it still rises into the band
    assert "\nmonotone_constraints=1 0\n" in bound.payload


@pytest.mark.parametrize(
    ("algorithm", "increasing", "message"),
    [
        ("lightgbm", ("nope",), r"increasing names \['nope'\]"),
        ("logistic", ("co_ppm__diff_60s",), "logistic takes no monotone constraints"),
    ],
)
def test_bad_monotone_constraints_are_refused(
    algorithm: str, increasing: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        train_detector(
            synthetic_frame(n_rows=200), None, FEATURES, "h", algorithm, increasing=increasing
        )
