"""How good a detector is, from its scores: ranking metrics per reading, and what matters to a
person at home, per device: false alarms per 1,000 device-hours on non-fires, and time to
detection after ignition on fires.

Alarms follow the device's operating point: an alarm sounds once the score has stayed at or
above the threshold for `persistence_s` seconds (at once for 0) and stops when it falls below
(`alarm_sounding`, per reading; `alarm_onsets`, per episode). It is the alarm rule of the
evaluation, the operating point and the real-fire replay, and the served model's alarm must
follow it too. Sampling may be irregular (1 Hz synthetic, 2 s or 5 s NIST): time is taken from
`ts`, never from row counts. Consecutive readings are taken to be continuous, so a run of high
scores spans a gap between them.

Frames carry one row per device and reading: device_id, ts (a timestamp, or seconds as a
number) and score (float, P(fire)); the split evaluation also reads scenario, scenario_family,
is_fire, label and seconds_since_ignition (negative before ignition, null on non-fires).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import polars as pl
from sklearn import metrics  # type: ignore[import-untyped]

from firepipe.core.training.dataset import (
    PROFILE,
    PROFILE_SEPARATOR,
    SPLIT,
    SPLITS,
    require_columns,
    source_device,
)

ALARM_COLUMNS = ("device_id", "ts", "score")
SPLIT_COLUMNS = (
    *ALARM_COLUMNS,
    "scenario",
    "scenario_family",
    "is_fire",
    "label",
    "seconds_since_ignition",
)
NON_FIRE_FAMILIES = ("nuisance", "baseline")
SECONDS_PER_HOUR = 3600.0
DEVICE_HOURS_PER_RATE = 1000.0  # the unit: false alarms per 1,000 device-hours
# Persistences tried by `choose_operating_point`, in seconds: even numbers because the NIST
# replays step at 2 s (5 s in one test, where 10, 20 and 30 fall on samples), up to 30 s, the
# rise lag of the gold features (firepipe.core.features.RISE_LAG_S); longer delays would
# throw away the lead over commercial alarms the detector exists for.
PERSISTENCE_OPTIONS_S = (0, 2, 4, 6, 10, 20, 30)
# Percentile of the time-to-detection tail reported beside the median (the p90).
TAIL_PERCENTILE = 90.0
_TIME_TOLERANCE_S = 1e-6  # float seconds from microsecond timestamps
# An operating point per channel profile is chosen only on a profile with at least this many
# non-fire validation devices (simulated ones: noisy copies of one device count once); the
# others keep the detector's one point. Its highest non-fire score is the maximum of that many
# devices', so a new device of the profile scores above it with a chance of about 1 in (n + 1).
MIN_PROFILE_DEVICES = 10

# ml/evaluation's report of the test split seen through every channel profile, and its entry
# for all profiles together (promotion's false-alarm rate).
PROFILES_REPORT = "test_profiles"
ALL_PROFILES = "all"

Point = tuple[float, float]  # (threshold, persistence_s)
ProfilePoints = Mapping[str, Point]  # channel profile name -> its own operating point


def check_operating_point(threshold: float, persistence_s: float) -> None:
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if not (math.isfinite(persistence_s) and persistence_s >= 0):
        raise ValueError(f"persistence_s must be >= 0 seconds, got {persistence_s!r}")


def seconds_of(ts: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Timestamps as float seconds since the epoch; numbers are already seconds."""
    if isinstance(dtype, pl.Datetime):
        return ts.dt.epoch("us").cast(pl.Float64) / 1e6
    if dtype.is_numeric():
        return ts.cast(pl.Float64)
    raise ValueError(f"ts must be a timestamp or seconds, got {dtype}")


def scored_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame sorted by (device_id, ts) with `t` (float seconds); refuses null or NaN
    scores and repeated readings, which would make alarm times ambiguous."""
    require_columns(frame, ALARM_COLUMNS, "alarm scores")
    score = frame["score"].cast(pl.Float64)
    if score.null_count() or score.is_nan().any():
        raise ValueError("scores must not be null or NaN: score every reading")
    rows = frame.with_columns(
        score.alias("score"), seconds_of(pl.col("ts"), frame.schema["ts"]).alias("t")
    ).sort("device_id", "ts")
    if rows.select(pl.struct("device_id", "ts").is_duplicated().any()).item():
        raise ValueError("a device has two readings at one ts")
    return rows


def _sounding_rows(frame: pl.DataFrame, threshold: float, persistence_s: float) -> pl.DataFrame:
    """`scored_rows` with `run` (one id per device's stretch of scores on one side of the
    threshold) and `sounding`: the score has been >= threshold for persistence_s seconds."""
    check_operating_point(threshold, persistence_s)
    above = pl.col("score") >= threshold
    new_run = (above != above.shift(1)) | (pl.col("device_id") != pl.col("device_id").shift(1))
    held_s = pl.col("t") - pl.col("t").min().over("run")
    return (
        scored_rows(frame)
        .with_columns(new_run.fill_null(True).cum_sum().alias("run"))
        .with_columns((above & (held_s >= persistence_s - _TIME_TOLERANCE_S)).alias("sounding"))
    )


def alarm_sounding(frame: pl.DataFrame, threshold: float, persistence_s: float) -> pl.Series:
    """Per row of `frame` (device_id, ts, score), in the frame's own order: whether the alarm
    sounds at that reading, i.e. the device's score has stayed >= threshold for persistence_s
    seconds up to it."""
    rows = _sounding_rows(frame.with_row_index("_row"), threshold, persistence_s)
    return rows.sort("_row")["sounding"].alias("alarm")


def alarm_onsets(
    frame: pl.DataFrame,
    threshold: float,
    persistence_s: float,
    profile_points: ProfilePoints | None = None,
) -> pl.DataFrame:
    """device_id, alarm_ts: one row per alarm episode, at its first sounding reading (a run of
    high readings shorter than persistence_s raises no alarm); each device at its operating
    point (`at_points`)."""
    parts = at_points(frame, threshold, persistence_s, profile_points)
    return pl.concat(
        [_onsets(part, t, p) for part, t, p in parts],
        how="vertical_relaxed",
    )


def _onsets(frame: pl.DataFrame, threshold: float, persistence_s: float) -> pl.DataFrame:
    return (
        _sounding_rows(frame, threshold, persistence_s)
        .filter("sounding")
        .group_by("run", maintain_order=True)
        .agg(pl.col("device_id").first(), pl.col("ts").first().alias("alarm_ts"))
        .select("device_id", "alarm_ts")
    )


def sustained_scores(frame: pl.DataFrame, persistence_s: float) -> pl.DataFrame:
    """device_id, ts, sustained: the highest threshold at which an alarm would be sounding at
    each reading with this persistence (the least score since the last reading at or before
    t - persistence_s; -inf before the device has been up that long). An alarm sounds at a
    reading exactly when its sustained score reaches the threshold, so one pass over this
    column answers every threshold at once."""
    check_operating_point(0.0, persistence_s)
    rows = scored_rows(frame)
    if persistence_s == 0:
        return rows.select("device_id", "ts", pl.col("score").alias("sustained"))
    window_us = max(1, round(persistence_s * 1e6))
    # the rolling window needs a time axis: numeric seconds become microseconds since 0
    axis = (pl.col("t") * 1e6).round().cast(pl.Int64).cast(pl.Datetime("us")).alias("axis")
    rows = rows.with_columns(axis)
    recent = pl.col("score").rolling_min_by("axis", f"{window_us}us", closed="both")
    rows = rows.with_columns(recent.over("device_id").alias("recent"))
    looked_up = rows.with_columns(
        (pl.col("axis") - pl.duration(microseconds=window_us)).alias("back")
    ).join_asof(
        rows.select("device_id", "axis", pl.col("score").alias("score_back")),
        left_on="back",
        right_on="axis",
        by="device_id",
        strategy="backward",
        check_sortedness=False,
    )
    sustained = (
        pl.when(pl.col("score_back").is_null())
        .then(float("-inf"))
        .otherwise(pl.min_horizontal("recent", "score_back"))
    )
    return looked_up.select("device_id", "ts", sustained.alias("sustained"))


def device_hours(frame: pl.DataFrame) -> pl.DataFrame:
    """device_id, hours: each device's span from first to last reading plus one typical
    (median) step, so N readings at 1 Hz count as N seconds."""
    rows = scored_rows(frame) if "t" not in frame.columns else frame
    return rows.group_by("device_id").agg(
        (
            (pl.col("t").max() - pl.col("t").min() + pl.col("t").diff().median().fill_null(0.0))
            / SECONDS_PER_HOUR
        ).alias("hours")
    )


def detection_times(
    frame: pl.DataFrame,
    threshold: float,
    persistence_s: float,
    profile_points: ProfilePoints | None = None,
) -> pl.DataFrame:
    """One row per fire device: device_id, scenario, scenario_family, detected,
    time_to_detection_s (seconds after ignition of its first alarm at or after ignition; null
    when it never alarmed after ignition) and pre_ignition_alarms (alarms that began before)."""
    require_columns(frame, SPLIT_COLUMNS, "detection times")
    onsets = alarm_onset_times(frame, threshold, persistence_s, profile_points)
    return _detections(frame, onsets)


def _detections(frame: pl.DataFrame, onsets: pl.DataFrame) -> pl.DataFrame:
    """`detection_times` from the split's `alarm_onset_times`."""
    fires = (
        frame.filter(pl.col("is_fire"))
        .group_by("device_id", maintain_order=True)
        .agg(pl.col("scenario").first(), pl.col("scenario_family").first())
    )
    after = pl.col("onset_s") >= 0
    per_device = onsets.group_by("device_id").agg(
        pl.col("onset_s").filter(after).min().alias("time_to_detection_s"),
        (~after).sum().cast(pl.Int64).alias("pre_ignition_alarms"),
    )
    return (
        fires.join(per_device, on="device_id", how="left")
        .with_columns(
            pl.col("time_to_detection_s").is_not_null().alias("detected"),
            pl.col("pre_ignition_alarms").fill_null(0),
        )
        .select(
            "device_id",
            "scenario",
            "scenario_family",
            "detected",
            "time_to_detection_s",
            "pre_ignition_alarms",
        )
        .sort("device_id")
    )


def at_points(
    frame: pl.DataFrame,
    threshold: float,
    persistence_s: float,
    profile_points: ProfilePoints | None = None,
) -> list[tuple[pl.DataFrame, float, float]]:
    """The frame's rows with the operating point that judges them: each device at the point of
    its channel profile (PROFILE) when `profile_points` has one, else at (threshold,
    persistence_s). Empty parts are left out (an empty frame is one part at the one point);
    a device must keep one profile."""
    check_operating_point(threshold, persistence_s)
    for point in (profile_points or {}).values():
        check_operating_point(*point)
    if not profile_points:
        return [(frame, threshold, persistence_s)]
    require_columns(frame, ("device_id", PROFILE), "operating points per channel profile")
    profile = pl.col(PROFILE).cast(pl.String)
    mixed = frame.group_by("device_id").agg(profile.n_unique().alias("n")).filter(pl.col("n") > 1)
    if mixed.height:
        raise ValueError(
            f"{mixed.height} device(s) change channel profile between readings, e.g. "
            f"{mixed['device_id'][0]!r}: a device has one profile"
        )
    named = frame.with_columns(profile.fill_null("").alias("_point"))
    others = named.filter(~pl.col("_point").is_in(list(profile_points)))
    parts = [(others, threshold, persistence_s)]
    parts += [(named.filter(pl.col("_point") == name), *p) for name, p in profile_points.items()]
    return [(part.drop("_point"), t, p) for part, t, p in parts if part.height] or [
        (frame, threshold, persistence_s)
    ]


def row_thresholds(threshold: float, profile_points: ProfilePoints | None) -> pl.Expr:
    """Each row's threshold: that of its channel profile's (PROFILE) own point, else
    `threshold` (a profile without a point of its own, or none)."""
    own = {name: t for name, (t, _) in (profile_points or {}).items()}
    profile = pl.col(PROFILE).cast(pl.String)
    return profile.replace_strict(own, default=threshold, return_dtype=pl.Float64)


def alarm_onset_times(
    frame: pl.DataFrame,
    threshold: float,
    persistence_s: float,
    profile_points: ProfilePoints | None = None,
) -> pl.DataFrame:
    """device_id, alarm_ts, onset_s (seconds since ignition at the onset; null on non-fires);
    each device at its operating point (`at_points`)."""
    onsets = alarm_onsets(frame, threshold, persistence_s, profile_points)
    ignition = frame.select(
        "device_id",
        pl.col("ts").alias("alarm_ts"),
        pl.col("seconds_since_ignition").cast(pl.Float64).alias("onset_s"),
    )
    return onsets.join(ignition, on=["device_id", "alarm_ts"], how="left")


def time_summary(times: pl.Series, devices: int) -> dict[str, float | int | None]:
    """Median and p90 over the detected devices, and the share detected."""
    detected = times.drop_nulls().to_numpy().astype(np.float64)
    return {
        "devices": devices,
        "detected_share": detected.size / devices if devices else None,
        "median_s": float(np.median(detected)) if detected.size else None,
        "p90_s": float(np.percentile(detected, TAIL_PERCENTILE)) if detected.size else None,
    }


def evaluate_split(
    frame: pl.DataFrame,
    threshold: float,
    persistence_s: float,
    profile_points: ProfilePoints | None = None,
) -> dict[str, Any]:
    """Metrics of one split (module docstring for the columns), each device at its operating
    point (`at_points`)."""
    require_columns(frame, SPLIT_COLUMNS, "evaluation")
    check_operating_point(threshold, persistence_s)
    if frame.is_empty():
        raise ValueError("evaluation: the frame has no readings")
    rows = scored_rows(frame)
    label = rows["label"].cast(pl.Boolean).fill_null(False).to_numpy()
    score = rows["score"].to_numpy()
    both_classes = 0 < int(label.sum()) < label.size
    onsets = alarm_onset_times(rows, threshold, persistence_s, profile_points)
    own = row_thresholds(threshold, profile_points) if profile_points else pl.lit(threshold)
    predicted = rows.select(pl.col("score") >= own).to_series().to_numpy()
    devices = (
        rows.group_by("device_id")
        .agg(pl.col("is_fire").first(), pl.col("scenario_family").first())
        .join(device_hours(rows), on="device_id")
        .join(onsets.group_by("device_id").len("alarms"), on="device_id", how="left")
        .with_columns(pl.col("alarms").fill_null(0))
    )
    rates = {
        family: _false_alarm_rate(devices.filter(pl.col("scenario_family") == family))
        for family in NON_FIRE_FAMILIES
    }
    detections = _detections(rows, onsets)
    return {
        "readings": rows.height,
        "devices": devices.height,
        "roc_auc": float(metrics.roc_auc_score(label, score)) if both_classes else None,
        "pr_auc": float(metrics.average_precision_score(label, score)) if both_classes else None,
        "f1": float(metrics.f1_score(label, predicted, zero_division=0.0)),
        "false_alarms_per_1000_device_hours": _false_alarm_rate(devices.filter(~pl.col("is_fire"))),
        **{f"{family}_false_alarms_per_1000_device_hours": r for family, r in rates.items()},
        "false_alarms": int(devices.filter(~pl.col("is_fire"))["alarms"].sum()),
        "pre_ignition_alarms": int(detections["pre_ignition_alarms"].sum()),
        "time_to_detection": time_summary(detections["time_to_detection_s"], detections.height),
        "time_to_detection_by_family": _by(detections, "scenario_family"),
        "time_to_detection_by_scenario": _by(detections, "scenario"),
    }


def _false_alarm_rate(devices: pl.DataFrame) -> float | None:
    hours = float(devices["hours"].sum())
    if hours <= 0:
        return None
    return float(devices["alarms"].sum()) / hours * DEVICE_HOURS_PER_RATE


def _by(detections: pl.DataFrame, key: str) -> dict[str, dict[str, float | int | None]]:
    out = {}
    for (name,), part in detections.sort(key).group_by([key], maintain_order=True):
        out[str(name)] = time_summary(part["time_to_detection_s"], part.height)
    return out


def evaluate(
    frame: pl.DataFrame,
    threshold: float,
    persistence_s: float,
    profile_points: ProfilePoints | None = None,
) -> dict[str, dict[str, Any]]:
    """`evaluate_split` of every split in the frame's `split` column, train first."""
    return {
        split: evaluate_split(
            frame.filter(pl.col(SPLIT) == split), threshold, persistence_s, profile_points
        )
        for split in splits_in(frame)
    }


def evaluate_profiles(
    views: pl.DataFrame,
    threshold: float,
    persistence_s: float,
    profile_points: ProfilePoints | None = None,
) -> dict[str, dict[str, Any]]:
    """`evaluate_split` of each channel profile's devices in `views` (PROFILE), and of them
    all together under ALL_PROFILES; each device at its profile's operating point."""
    require_columns(views, (PROFILE,), "evaluation per channel profile")
    profile = pl.col(PROFILE).cast(pl.String)
    names = views.select(profile.unique().sort()).to_series().drop_nulls().to_list()
    point = (threshold, persistence_s, profile_points)
    report = {name: evaluate_split(views.filter(profile == name), *point) for name in names}
    report[ALL_PROFILES] = evaluate_split(views, *point)
    return report


def splits_in(frame: pl.DataFrame) -> list[str]:
    """The values of the frame's split column: SPLITS' order first, then any other sorted."""
    require_columns(frame, (SPLIT,), "splits")
    present = set(frame[SPLIT].drop_nulls().unique().to_list())
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


def flat_metrics(report: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics as one level of "a/b/c" -> float (MLflow metrics, Dagster metadata);
    entries that are None (not measurable on this data) are left out. A channel profile's "+"
    becomes ".", since MLflow's metric names take letters, digits and _ - . / and space only."""
    flat: dict[str, float] = {}
    for key, value in report.items():
        name = f"{prefix}{key}".replace(PROFILE_SEPARATOR, ".")
        if isinstance(value, Mapping):
            flat.update(flat_metrics(value, f"{name}/"))
        elif isinstance(value, bool | int | float) and value is not None:
            flat[name] = float(value)
    return flat


def choose_operating_point(
    validation: pl.DataFrame, persistence_options: Iterable[float] = PERSISTENCE_OPTIONS_S
) -> tuple[float, float]:
    """(threshold, persistence_s): of the points that raise no alarm on any non-fire validation
    device nor before ignition on a fire device, the one that detects fires soonest.

    For each persistence, the lowest silent threshold lies just above the highest sustained
    score of those silent stretches (M); the threshold is placed halfway between M and the
    next sustained fire score above it, so validation behaves exactly as at the lowest silent
    threshold while keeping the widest margin. The persistences are then ranked by the median
    time to detection with undetected fires counted as never (so a point that misses most
    fires cannot win on the few it catches), then the detected share, the p90, and the
    shorter persistence.
    """
    require_columns(validation, SPLIT_COLUMNS, "operating point")
    options = _persistence_options(persistence_options)
    fire = validation["is_fire"].cast(pl.Boolean)
    if not bool(fire.any()):
        raise ValueError("validation has no fire devices: no detection time to optimise")
    if bool(fire.all()):
        raise ValueError("validation has no non-fire devices: false alarms cannot be checked")
    point = _best_point(validation, options)
    if point is None:
        raise ValueError(
            "no threshold stays silent on every non-fire validation device (and before "
            f"ignition) and still detects a fire; persistences tried: {options}"
        )
    return point


def _persistence_options(persistence_options: Iterable[float]) -> list[float]:
    options = sorted(set(persistence_options))
    if not options:
        raise ValueError("choosing an operating point needs at least one persistence option")
    return options


def _best_point(validation: pl.DataFrame, options: list[float]) -> tuple[float, float] | None:
    """`choose_operating_point`'s point on validation with fire and non-fire devices, or None
    when no threshold is silent and detects a fire."""
    best: tuple[tuple[float, float, float, float], float, float] | None = None
    for persistence_s in options:
        threshold = _silent_threshold(validation, persistence_s)
        if threshold is None:
            continue
        times = detection_times(validation, threshold, persistence_s)["time_to_detection_s"]
        never = times.fill_null(float("inf")).to_numpy().astype(np.float64)
        key = (
            float(np.median(never)),
            -float(np.isfinite(never).mean()),
            float(np.percentile(never, TAIL_PERCENTILE, method="higher")),
            float(persistence_s),
        )
        # A point that detects under half the fires (an infinite median) still counts, last:
        # a silent detector that catches few fires is a candidate that evaluation and the
        # champion rules judge, not a failed run.
        if best is None or key < best[0]:
            best = (key, threshold, float(persistence_s))
    return None if best is None else (best[1], best[2])


def profile_devices(validation: pl.DataFrame) -> pl.DataFrame:
    """channel_profile, fire_devices, non_fire_devices: the simulated devices of each profile
    (noisy copies of one device count once), sorted by profile."""
    require_columns(validation, ("device_id", "is_fire", PROFILE), "devices per profile")
    source = source_device(pl.col("device_id"))
    fire = pl.col("is_fire").cast(pl.Boolean)
    return (
        validation.group_by(pl.col(PROFILE).cast(pl.String))
        .agg(
            source.filter(fire).n_unique().alias("fire_devices"),
            source.filter(~fire).n_unique().alias("non_fire_devices"),
        )
        .sort(PROFILE)
    )


def choose_profile_points(
    validation: pl.DataFrame,
    min_devices: int = MIN_PROFILE_DEVICES,
    persistence_options: Iterable[float] = PERSISTENCE_OPTIONS_S,
) -> dict[str, Point]:
    """An operating point per channel profile (PROFILE): `choose_operating_point` on the
    profile's own validation devices. A profile with fewer than `min_devices` non-fire devices
    (`profile_devices`), no fire device, or no silent threshold that detects a fire gets none:
    it keeps the detector's one point, which is silent on every profile's devices."""
    if min_devices < 1:
        raise ValueError(f"min_devices must be at least 1, got {min_devices}")
    require_columns(validation, SPLIT_COLUMNS, "operating points per channel profile")
    options = _persistence_options(persistence_options)
    points: dict[str, Point] = {}
    for row in profile_devices(validation).iter_rows(named=True):
        if row["non_fire_devices"] < min_devices or row["fire_devices"] == 0:
            continue
        own = validation.filter(pl.col(PROFILE).cast(pl.String) == row[PROFILE])
        point = _best_point(own, options)
        if point is not None:
            points[row[PROFILE]] = point
    return points


def _silent_threshold(validation: pl.DataFrame, persistence_s: float) -> float | None:
    """The threshold described in `choose_operating_point`, or None if no fire reading's
    sustained score rises above every silent stretch's."""
    sustained = sustained_scores(validation.select(ALARM_COLUMNS), persistence_s).join(
        validation.select("device_id", "ts", "is_fire", "seconds_since_ignition"),
        on=["device_id", "ts"],
    )
    burning = (pl.col("is_fire") & (pl.col("seconds_since_ignition") >= 0)).fill_null(False)
    silent = sustained.filter(~burning)["sustained"]
    ceiling = float(silent.max()) if silent.len() else float("-inf")  # type: ignore[arg-type]
    fire_values = sustained.filter(burning & (pl.col("sustained") > ceiling))["sustained"]
    if fire_values.is_empty():
        return None
    lowest_fire = float(fire_values.min())  # type: ignore[arg-type]
    middle = (ceiling + lowest_fire) / 2.0
    return middle if math.isfinite(ceiling) and middle > ceiling else lowest_fire
