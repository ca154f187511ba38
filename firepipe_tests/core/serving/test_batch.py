"""Batch scoring: scores and alarms of gold rows at each device's operating point, and the
files of a SageMaker batch transform job."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from firepipe.core.features.spec import FeatureSpec, Rolling
from firepipe.core.readings import CHANNEL_NAMES, TIMESTAMP
from firepipe.core.serving import batch
from firepipe.core.serving.scoring import ServingModel
from firepipe.core.training.dataset import PROFILE
from firepipe.core.training.models import Detector

T0 = datetime(2026, 12, 6, tzinfo=UTC)
SPEC = FeatureSpec((Rolling("temperature_c", "mean", 30), Rolling("co_ppm", "max", 30)))
FEATURES = SPEC.names


@dataclass
class FirstFeature:
    """A scorer whose score is the first feature: scores that could be wrong are easy to see."""

    backend: str = "test"

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:, 0])


def model(**points: object) -> ServingModel:
    detector = Detector(
        algorithm="logistic",
        feature_names=FEATURES,
        feature_spec_hash=SPEC.hash(),
        params={},
        feature_spec=SPEC,
        **points,
    )
    return ServingModel(detector, FirstFeature(), "firepipe-fire-detector/3")


def gold(devices: dict[str, list[float]]) -> pl.DataFrame:
    rows = [
        {"device_id": d, "ts": T0 + timedelta(seconds=i), FEATURES[0]: s, FEATURES[1]: 1.0}
        for d, scores in devices.items()
        for i, s in enumerate(scores)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("ts").cast(TIMESTAMP))


def test_each_device_alarms_at_its_profiles_point_with_persistence():
    served = model(threshold=0.5, persistence_s=2, profile_points={"temperature_c": (0.8, 0)})
    scores = [0.6, 0.6, 0.6, 0.9, 0.4]
    features = gold({"b-all": scores, "a-heat": scores, "c-unknown": scores})
    profiles = pl.DataFrame(
        {"device_id": ["a-heat", "b-all"], PROFILE: ["temperature_c", "+".join(CHANNEL_NAMES)]}
    )
    out = batch.score_rows(features.reverse(), served, profiles)
    assert out.schema == pl.Schema(batch.SCORE_SCHEMA)
    assert out["device_id"].to_list() == ["a-heat"] * 5 + ["b-all"] * 5 + ["c-unknown"] * 5
    assert out["ts"].to_list() == [T0 + timedelta(seconds=i) for i in range(5)] * 3
    assert out["score"].to_list() == pytest.approx(scores * 3)
    alarms = {d: part["alarm"].to_list() for (d,), part in out.group_by(["device_id"])}
    # The heat-only profile's own point: 0.8 at once. The others, at the one point: 0.5 held
    # for 2 s, so the third reading is the first that sounds, and a score below stops it.
    assert alarms["a-heat"] == [False, False, False, True, False]
    assert alarms["b-all"] == [False, False, True, True, False]
    assert alarms["c-unknown"] == alarms["b-all"]  # no profile known: the one point
    assert set(out["model_version"]) == {"firepipe-fire-detector/3"}


def test_batches_of_whole_devices_score_as_one_batch(tmp_path):
    served = model(threshold=0.5, persistence_s=3)
    rng = np.random.default_rng(4)
    features = gold({f"d{i}": list(rng.uniform(0.3, 0.8, 40)) for i in range(7)})
    whole = batch.score_rows(features, served)
    path = tmp_path / "gold.parquet"
    features.sample(fraction=1.0, shuffle=True, seed=1).write_parquet(path)
    batched = batch.score_features(pl.scan_parquet(path), served, batch_rows=50)
    assert batched.equals(whole)
    assert whole["alarm"].sum() > 0  # persistence met somewhere, so the batches mattered


def test_device_profiles_name_the_channels_each_device_reported():
    readings = pl.DataFrame(
        {
            "device_id": ["a", "a", "b", "c"],
            **{c: [None, None, None, None] for c in CHANNEL_NAMES},
        },
        schema={"device_id": pl.String, **{c: pl.Float32 for c in CHANNEL_NAMES}},
    ).with_columns(
        pl.Series("co_ppm", [None, 3.0, None, None], dtype=pl.Float32),
        pl.Series("temperature_c", [20.0, None, None, None], dtype=pl.Float32),
        pl.Series("smoke_obscuration_pct_per_m", [0.1, None, None, None], dtype=pl.Float32),
        pl.Series("h2_ppm", [None, None, 1.0, None], dtype=pl.Float32),
    )
    profiles = batch.device_profiles(readings.lazy())
    assert profiles.rows() == [
        ("a", "temperature_c+smoke_obscuration_pct_per_m+co_ppm"),  # CHANNEL_NAMES' order
        ("b", "h2_ppm"),
        ("c", None),
    ]


def test_scores_of_a_bad_model_are_refused():
    class Short(FirstFeature):
        def scores(self, x: np.ndarray) -> np.ndarray:
            return np.zeros(x.shape[0] - 1)

    served = ServingModel(model().detector, Short(), "v")
    with pytest.raises(ValueError, match=r"gave \(1,\) scores for 2 rows"):
        batch.score_rows(gold({"a": [0.1, 0.2]}), served)


def test_gold_must_define_the_detectors_features_as_it_was_trained():
    detector = model().detector
    batch.require_gold_features(
        detector, FeatureSpec((*SPEC.features, Rolling("h2_ppm", "max", 30)))
    )
    other_window = FeatureSpec(
        (Rolling("temperature_c", "mean", 30), Rolling("co_ppm", "max", 300))
    )
    with pytest.raises(ValueError, match="co_ppm__max_30s"):
        batch.require_gold_features(detector, other_window)


def silver() -> pl.DataFrame:
    rows = []
    for device, n in (("b", 3), ("a", 2), ("c", 4)):
        for i in range(n):
            rows.append(
                {
                    "device_id": device,
                    "ts": T0 + timedelta(seconds=i, microseconds=500 if device == "c" else 0),
                    "is_gap": device == "b" and i == 1,
                    **{c: None for c in CHANNEL_NAMES},
                    "temperature_c": None if device == "b" and i == 1 else 20.25 + i,
                    "co_ppm": 1e-5 if device == "a" else None,
                }
            )
    schema = {"device_id": pl.String, "ts": TIMESTAMP, "is_gap": pl.Boolean}
    schema |= {c: pl.Float32 for c in CHANNEL_NAMES}
    return pl.DataFrame(rows, schema=schema)


def test_transform_input_is_whole_devices_in_time_order_one_reading_a_line():
    readings = batch.transform_readings(silver().sample(fraction=1.0, shuffle=True, seed=3).lazy())
    files = list(batch.transform_files(readings, max_rows=5))
    # a (2 rows) and b (2 non-gap rows) share a file; c (4 rows) would pass 5, so it has its own.
    assert [f.keys["device_id"].to_list() for f in files] == [["a", "a", "b", "b"], ["c"] * 4]
    lines = [json.loads(line) for line in files[0].body.decode().splitlines()]
    assert lines[0] == {
        "device_id": "a",
        "ts": "2026-12-06T00:00:00Z",
        "temperature_c": 20.25,
        "co_ppm": 1e-05,
    }
    # b's gap row is not sent; a channel without a value is left out, not sent as null.
    assert lines[2:] == [
        {"device_id": "b", "ts": "2026-12-06T00:00:00Z", "temperature_c": 20.25},
        {"device_id": "b", "ts": "2026-12-06T00:00:02Z", "temperature_c": 22.25},
    ]
    c = [json.loads(line) for line in files[1].body.decode().splitlines()]
    assert [r["ts"] for r in c] == [f"2026-12-06T00:00:0{i}.000500Z" for i in range(4)]
    assert files[0].keys["ts"].to_list() == [line["ts"] for line in lines]
    # Silver read a few devices at a time and cut into files: the same files.
    one_read = list(batch.transform_files(readings, max_rows=2))
    reads = list(batch.transform_files(readings, max_rows=2, scan_rows=4))
    assert [f.body for f in reads] == [f.body for f in one_read]
    assert [f.keys["device_id"].unique().to_list() for f in reads] == [["a"], ["b"], ["c"]]


def answer(keys: pl.DataFrame, scores: list[float]) -> bytes:
    lines = [
        json.dumps({"device_id": d, "ts": t, "score": s, "alarm": s > 0.5, "model_version": "m/2"})
        for (d, t), s in zip(keys.iter_rows(), scores, strict=True)
    ]
    return ("\n".join(lines) + "\n\n").encode()  # a blank line where SageMaker adds one


def test_transform_output_is_read_back_line_for_line():
    (sent, *_) = batch.transform_files(batch.transform_readings(silver().lazy()), max_rows=100)
    out = batch.read_transform_output(sent.keys, answer(sent.keys, [i / 8 for i in range(8)]))
    assert out.schema == pl.Schema(batch.SCORE_SCHEMA)
    assert out.height == 8
    assert out.row(7) == ("c", T0 + timedelta(seconds=3, microseconds=500), 7 / 8, True, "m/2")


def test_transform_output_that_does_not_answer_the_input_is_refused():
    (sent, *_) = batch.transform_files(batch.transform_readings(silver().lazy()), max_rows=100)
    shifted = answer(sent.keys.reverse(), [0.2] * 8)
    with pytest.raises(ValueError, match="output line 1 answers"):
        batch.read_transform_output(sent.keys, shifted)
    with pytest.raises(ValueError, match="7 predictions for 8 readings"):
        batch.read_transform_output(sent.keys, answer(sent.keys.head(7), [0.2] * 7))
