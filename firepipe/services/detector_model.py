"""The exported detector: an MLflow pyfunc around a saved `Detector` directory.

The pyfunc carries the directory as an artifact (`detector.json`, plus `model.txt` for LightGBM
and `feature_spec.json`, the spec of the features it reads; no pickle of the model itself) and
loads it with `Detector.load`, so the registry, the inference service and batch scoring all
compute scores with the same code as training, and know which features to compute.

`predict(features)` returns one row per input row, in input order: `score` (P(fire), float64)
and `alarm` (bool). An alarm needs the score to have stayed at or above the threshold of the
device's operating point for its `persistence_s` seconds (the rule evaluation uses,
`evaluation.alarm_sounding`). A device's point is that of its channel profile when the input
says which channels it has (`channel_profile`, their names joined by "+", as the training set
spells them) and the detector has one for it; else the detector's one point, which was chosen
silent on every profile. With persistence the input must carry `ts` (and `device_id` when it
holds several devices). The signature lists these three as optional columns beside the
features; `ts` is sent as naive UTC, since MLflow's datetime type refuses a time zone.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, Schema

from firepipe.core.training import evaluation
from firepipe.core.training.dataset import PROFILE, parse_profile
from firepipe.core.training.models import Detector

DETECTOR_ARTIFACT = "detector"  # the pyfunc artifact name of the saved Detector directory
DEVICE_COLUMN = "device_id"
TS_COLUMN = "ts"
PROFILE_COLUMN = PROFILE
SCORE_COLUMN = "score"
ALARM_COLUMN = "alarm"


def alarm_flags(
    scores: np.ndarray,
    threshold: float,
    persistence_s: int,
    ts: pl.Series | None = None,
    device_id: pl.Series | None = None,
) -> np.ndarray:
    """Per row, in input order: whether the alarm sounds, by the one alarm rule of evaluation
    and the real-fire replay (`evaluation.alarm_sounding`). Serving's part is the input: `ts`
    must be a datetime when the detector has a persistence; without `device_id` the rows are
    one device's."""
    evaluation.check_operating_point(threshold, persistence_s)
    if persistence_s == 0:
        # The rule without persistence, answered without a frame: a single-row request is
        # served in a few ms, and this would add about 2.
        return np.asarray(scores, dtype=np.float64) >= threshold
    if ts is None:
        raise ValueError(
            f"this detector alarms after {persistence_s} s of high scores: the input needs a "
            f"'{TS_COLUMN}' column (and '{DEVICE_COLUMN}' for several devices)"
        )
    if not isinstance(ts.dtype, pl.Datetime):
        raise ValueError(f"'{TS_COLUMN}' must be a datetime column, got {ts.dtype}")
    devices = device_id if device_id is not None else pl.repeat("", len(scores), eager=True)
    frame = pl.DataFrame({"device_id": devices, "ts": ts, "score": scores})
    return evaluation.alarm_sounding(frame, threshold, persistence_s).to_numpy()


def predict_frame(detector: Detector, features: pl.DataFrame) -> pl.DataFrame:
    """`score` and `alarm` per row of `features` (a frame with the detector's feature columns)."""
    missing = [name for name in detector.feature_names if name not in features.columns]
    if missing:
        raise ValueError(f"the input lacks {len(missing)} feature columns: {', '.join(missing)}")
    scores = np.asarray(detector.scores(features), dtype=np.float64)
    ts = features.get_column(TS_COLUMN) if TS_COLUMN in features.columns else None
    devices = features.get_column(DEVICE_COLUMN) if DEVICE_COLUMN in features.columns else None
    points = row_points(detector, features)
    alarms = np.zeros(len(scores), dtype=bool)
    for (threshold, persistence_s), rows in points.items():
        part_ts, part_devices = ts, devices
        if len(points) > 1:  # one point (the common case) needs no copies
            part_ts = ts.gather(rows) if ts is not None else None
            part_devices = devices.gather(rows) if devices is not None else None
        alarms[rows] = alarm_flags(scores[rows], threshold, persistence_s, part_ts, part_devices)
    return pl.DataFrame({SCORE_COLUMN: scores, ALARM_COLUMN: alarms})


def row_points(detector: Detector, features: pl.DataFrame) -> dict[tuple[float, int], np.ndarray]:
    """The input's row indices by the operating point they alarm at: the point of the row's
    `channel_profile` (`Detector.operating_point`; null or absent: the one point). A profile
    that names an unknown channel is refused."""
    if PROFILE_COLUMN not in features.columns:
        return {detector.operating_point(): np.arange(features.height)}
    given = features.get_column(PROFILE_COLUMN).cast(pl.String)
    points: dict[tuple[float, int], list[np.ndarray]] = {}
    for text in given.unique().to_list():
        try:
            profile = parse_profile(text) if text is not None else None
        except ValueError as e:
            raise ValueError(f"'{PROFILE_COLUMN}' {text!r}: {e}") from e
        same = given.is_null() if text is None else (given == text).fill_null(False)
        rows = np.flatnonzero(same.to_numpy())
        points.setdefault(detector.operating_point(profile), []).append(rows)
    return {point: np.sort(np.concatenate(parts)) for point, parts in points.items()}


class DetectorModel(PythonModel):  # type: ignore[misc]
    """The pyfunc: load a saved Detector from the model's artifacts, predict score and alarm."""

    def load_context(self, context: PythonModelContext) -> None:
        self.detector = Detector.load(Path(context.artifacts[DETECTOR_ARTIFACT]))

    # The pd.DataFrame hint tells MLflow to hand over the frame as is (after the signature's
    # schema enforcement) rather than infer a schema from the hint.
    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None
    ) -> pd.DataFrame:
        return predict_frame(self.detector, pl.from_pandas(model_input)).to_pandas()


def detector_signature(detector: Detector, input_example: pl.DataFrame) -> ModelSignature:
    """The features as required inputs (types from the example), `device_id`, `ts` and
    `channel_profile` as optional ones, and the score/alarm outputs."""
    if input_example.height == 0:
        raise ValueError("the input example needs at least one row of the detector's features")
    # The output's schema does not depend on the persistence, which would need `ts` rows.
    output = predict_frame(detector.with_operating_point(detector.threshold, 0), input_example)
    output = output.to_pandas()
    features = input_example.select(detector.feature_names).to_pandas()
    inferred = infer_signature(features, output)
    # Every feature column must be sent, though its values may be null (a channel the device
    # lacks); MLflow would call a column with nulls in the example optional.
    required = [ColSpec(spec.type, spec.name, required=True) for spec in inferred.inputs.inputs]
    optional = [
        ColSpec("string", DEVICE_COLUMN, required=False),
        ColSpec("datetime", TS_COLUMN, required=False),
        ColSpec("string", PROFILE_COLUMN, required=False),
    ]
    return ModelSignature(inputs=Schema([*required, *optional]), outputs=inferred.outputs)


def input_example_pandas(detector: Detector, input_example: pl.DataFrame) -> pd.DataFrame:
    """The example MLflow stores beside the model: the columns the signature names."""
    names = [*detector.feature_names, DEVICE_COLUMN, TS_COLUMN, PROFILE_COLUMN]
    example = input_example.select([n for n in names if n in input_example.columns])
    ts_type = example.schema.get(TS_COLUMN)
    if isinstance(ts_type, pl.Datetime) and ts_type.time_zone:
        # MLflow's datetime type is timezone-naive: the lake's UTC timestamps go as naive UTC.
        utc = pl.col(TS_COLUMN).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        example = example.with_columns(utc)
    return example.to_pandas()
