"""Batch scoring: gold's feature rows scored by a served model, each with its alarm, and the
files a SageMaker batch transform job reads and writes.

In process, a row's score is the model's scorer on its features and its alarm follows the rule
of evaluation and the real-fire replay (`evaluation.at_points` + `evaluation.alarm_sounding`):
the score has stayed at or above the threshold of the device's operating point for
`persistence_s` seconds. A device's point is that of its channel profile, the channels it has
reported a value on (`device_profiles`, the rule `real_fires.measured_profile` applies to a
NIST station); a device without a profile of its own alarms at the detector's one point.

A batch transform job sends the readings themselves to the inference container, which computes
gold's features online: JSON lines of silver's non-gap readings (gold's rows), whole devices in
(device_id, ts) order in each file, one reading a line, and each output line answers the input
line it stands at (`read_transform_output` checks that it does).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from firepipe.core.features.spec import GROUP_ROWS, FeatureSpec, device_batches
from firepipe.core.readings import CHANNEL_NAMES, TIMESTAMP, parse_iso_times
from firepipe.core.serving.scoring import ServingModel
from firepipe.core.training import evaluation
from firepipe.core.training.dataset import PROFILE, PROFILE_SEPARATOR, require_columns
from firepipe.core.training.models import Detector, feature_matrix

SCORE_SCHEMA: dict[str, pl.DataType] = {
    "device_id": pl.String(),
    "ts": TIMESTAMP,
    "score": pl.Float64(),
    "alarm": pl.Boolean(),
    "model_version": pl.String(),
}
# Rows scored at once, whole devices: a float64 matrix of 250k rows x 60 features is 120 MB.
BATCH_ROWS = 250_000
# Lines per transform input file, whole devices: about 15 MB of JSON, and each file is one
# unit SageMaker hands to an instance.
TRANSFORM_FILE_ROWS = 100_000
# How a reading's time is sent: ISO 8601 in UTC, the fraction only when there is one
# ("2026-12-06T00:00:01Z").
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
_ROW = "_batch_row"
_PREDICTION_SCHEMA = {**SCORE_SCHEMA, "ts": pl.String()}


def require_gold_features(detector: Detector, gold_spec: FeatureSpec) -> None:
    """Refuse to score gold computed by `gold_spec` unless each feature the detector reads is
    defined there as in the spec it was trained on: a name alone may mean another window."""
    trained = {f.name: f for f in detector.require_feature_spec().features}
    gold = {f.name: f for f in gold_spec.features}
    differ = [n for n in detector.feature_names if gold.get(n) != trained[n]]
    if differ:
        raise ValueError(
            f"gold (feature spec {gold_spec.hash()}) lacks or defines otherwise {len(differ)} "
            f"of the detector's features (spec {detector.feature_spec_hash}): "
            f"{', '.join(differ[:5])}"
        )


def device_profiles(readings: pl.LazyFrame) -> pl.DataFrame:
    """device_id, channel_profile: the channels each device of silver `readings` has reported a
    value on, named as `dataset.profile_name` names them (CHANNEL_NAMES' order, "+"); null for
    a device that never reported one."""
    reported = [
        pl.when(pl.col(c).is_not_null().any()).then(pl.lit(c)).otherwise(None)
        for c in CHANNEL_NAMES
    ]
    named = pl.concat_str(reported, separator=PROFILE_SEPARATOR, ignore_nulls=True)
    return (
        readings.group_by("device_id")
        .agg(pl.when(named != "").then(named).alias(PROFILE))
        .sort("device_id")
        .collect()
    )


def alarms(frame: pl.DataFrame, detector: Detector) -> pl.Series:
    """Per row of `frame` (device_id, ts, score, channel_profile), in the frame's order: whether
    the alarm sounds, each device at its profile's operating point (`evaluation.at_points`)."""
    indexed = frame.with_row_index(_ROW)
    parts = evaluation.at_points(
        indexed, detector.threshold, detector.persistence_s, detector.profile_points
    )
    sounding = pl.concat(
        [
            part.select(_ROW).with_columns(evaluation.alarm_sounding(part, threshold, persistence))
            for part, threshold, persistence in parts
        ]
    )
    return sounding.sort(_ROW)["alarm"]


def score_rows(
    features: pl.DataFrame, model: ServingModel, profiles: pl.DataFrame | None = None
) -> pl.DataFrame:
    """SCORE_SCHEMA rows for gold feature rows of whole devices, sorted by (device_id, ts);
    `profiles` (device_id, channel_profile) gives each device's operating point."""
    detector = model.detector
    require_columns(features, ("device_id", "ts", *detector.feature_names), "features")
    scores = np.asarray(model.scorer.scores(feature_matrix(features, detector.feature_names)))
    if scores.shape != (features.height,):
        raise ValueError(f"the scorer gave {scores.shape} scores for {features.height} rows")
    frame = features.select("device_id", "ts").with_columns(
        pl.Series("score", scores, dtype=pl.Float64)
    )
    if profiles is None:
        frame = frame.with_columns(pl.lit(None, pl.String).alias(PROFILE))
    else:
        require_columns(profiles, ("device_id", PROFILE), "profiles")
        frame = frame.join(
            profiles.select("device_id", pl.col(PROFILE).cast(pl.String)),
            on="device_id",
            how="left",
            maintain_order="left",
        )
    return (
        frame.with_columns(alarms(frame, detector), pl.lit(model.version).alias("model_version"))
        .select(list(SCORE_SCHEMA))
        .sort("device_id", "ts")
    )


def score_features(
    features: pl.LazyFrame,
    model: ServingModel,
    profiles: pl.DataFrame | None = None,
    batch_rows: int = BATCH_ROWS,
) -> pl.DataFrame:
    """`score_rows` of a lazy scan of gold, one batch of whole devices (`device_batches`) at a
    time, so memory holds one batch's features and every row's score."""
    per_device = features.group_by("device_id").len().sort("device_id").collect()
    columns = ["device_id", "ts", *model.detector.feature_names]
    parts = [
        score_rows(
            features.filter(pl.col("device_id").is_in(devices)).select(columns).collect(),
            model,
            profiles,
        )
        for devices in device_batches(per_device, batch_rows)
    ]
    return pl.concat(parts) if parts else pl.DataFrame(schema=SCORE_SCHEMA)


# --- SageMaker batch transform ---------------------------------------------------------------


def transform_readings(silver: pl.LazyFrame) -> pl.LazyFrame:
    """What a transform job scores: silver's non-gap readings (gold has a row for each), with
    their key and channels."""
    return silver.filter(~pl.col("is_gap")).select("device_id", "ts", *CHANNEL_NAMES)


@dataclass(frozen=True)
class TransformFile:
    """One input file of a transform job: its JSON lines, and the key of each line (device_id,
    ts as sent) to check the output against."""

    keys: pl.DataFrame
    body: bytes


def _json_line() -> pl.Expr:
    """A reading as one JSON object: device_id and ts (escaped by polars' JSON encoder), then
    each channel that has a value (a null one is left out: the device lacks that sensor)."""
    head = pl.struct("device_id", "ts").struct.json_encode().str.strip_suffix("}")
    values = [
        pl.when(pl.col(c).is_not_null()).then(pl.format(f',"{c}":{{}}', pl.col(c).cast(pl.String)))
        for c in CHANNEL_NAMES
    ]
    return pl.concat_str([head, *values, pl.lit("}")], ignore_nulls=True)


def transform_files(
    readings: pl.LazyFrame, max_rows: int = TRANSFORM_FILE_ROWS, scan_rows: int = GROUP_ROWS
) -> Iterator[TransformFile]:
    """`transform_readings` as input files of whole devices, at most `max_rows` lines each (a
    device with more readings is a file of its own), sorted by (device_id, ts). Silver is read
    `scan_rows` rows of whole devices at a time (each read scans the table), then cut."""
    per_device = readings.group_by("device_id").len().sort("device_id").collect()
    for scanned in device_batches(per_device, max(scan_rows, max_rows)):
        rows = (
            readings.filter(pl.col("device_id").is_in(scanned))
            .sort("device_id", "ts")
            .with_columns(pl.col("ts").dt.to_string(TS_FORMAT))
            .select("device_id", "ts", _json_line().alias("line"))
            .collect()
        )
        counts = per_device.filter(pl.col("device_id").is_in(scanned))
        start = 0
        for devices in device_batches(counts, max_rows):  # contiguous: rows are by device
            part = rows.slice(
                start, int(counts.filter(pl.col("device_id").is_in(devices))["len"].sum())
            )
            start += part.height
            body = ("\n".join(part["line"].to_list()) + "\n").encode()
            yield TransformFile(part.select("device_id", "ts"), body)


def read_transform_output(keys: pl.DataFrame, output: bytes) -> pl.DataFrame:
    """SCORE_SCHEMA rows from the output file of an input file whose lines had `keys`
    (`TransformFile.keys`): one prediction a line, line i answering line i of the input. An
    output that does not answer the input line for line is refused."""
    lines = [line for line in output.decode().splitlines() if line.strip()]
    if not lines:
        predictions = pl.DataFrame(schema=_PREDICTION_SCHEMA)
    else:
        text = "\n".join(lines).encode()
        predictions = pl.read_ndjson(io.BytesIO(text), schema=_PREDICTION_SCHEMA)
    if predictions.height != keys.height:
        raise ValueError(
            f"the transform output has {predictions.height} predictions for {keys.height} readings"
        )
    wrong = (predictions["device_id"] != keys["device_id"]) | (predictions["ts"] != keys["ts"])
    if wrong.fill_null(True).any():
        line = int(wrong.fill_null(True).arg_true()[0])
        raise ValueError(
            f"output line {line + 1} answers {predictions.row(line)[:2]}, not the reading sent "
            f"on that line {keys.row(line)}"
        )
    if predictions["score"].is_null().any() or predictions["alarm"].is_null().any():
        raise ValueError("the transform output has a prediction without a score or an alarm")
    return predictions.with_columns(parse_iso_times(pl.col("ts")).alias("ts")).select(
        list(SCORE_SCHEMA)
    )
