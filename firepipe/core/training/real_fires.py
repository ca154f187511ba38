"""Real fires: replay the NIST home smoke alarm tests through a detector, station by station,
and compare its alarm with the commercial alarms that hung there (`firepipe evaluate-real`).

Causality: a station's features come from `compute_features` over that station's own readings
only, and every gold feature looks back (trailing windows, exact-lag differences), so the
score at t depends on nothing after t. A detector's score of a row depends on that row alone,
so a station's rows are scored in one batch. (Screening which of a station's instruments to
trust reads the whole trace: that is a verdict on the instrument, made once, not a look at the
fire's future.)

Warm-up: a deployed detector has read its room for long before a fire starts, but the NIST
records start at ignition. Replayed from their first row, every trailing window would be empty
at ignition, and a detector could alarm in the first seconds on a station's level alone (an
offset CO analyser, say), which would read as a detection. So each station gets `warm_up_s`
of history (WARM_UP_S by default): the median of each channel over the record's first
WARM_UP_BASIS_S, held at the record's own time step. A median, not the first reading: a
meter's one-sample spike (SDC33-A's smoke meter reads 2.1 %/m at 0 s and 0.5 two seconds
later) held for five minutes would be a smoke event that never happened. Nothing is invented
but the constancy, and an alarm in it is an alarm before ignition.

Alarms: the model's alarm at a station is its first alarm that starts at or after ignition;
one that starts before ignition is a false alarm, never a detection: the summary's
`pre_ignition_alarms` counts the stations with one. A station where the model never alarms
counts as late. Real alarms that never went off count as later than any time when the median
is taken. Stations with no commercial alarm (F in the NIST home) are replayed and shown, but
not compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from firepipe.core.features.spec import ID_COLUMNS, FeatureSpec, compute_features
from firepipe.core.lake import units
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.realdata import nist
from firepipe.core.realdata.nist import NistTest
from firepipe.core.training.dataset import PROFILE, profile_name, require_columns
from firepipe.core.training.dataset import SECONDS_SINCE_IGNITION as SINCE
from firepipe.core.training.evaluation import (
    ProfilePoints,
    alarm_onsets,
    check_operating_point,
    row_thresholds,
)
from firepipe.core.training.models import Detector

ScoreFn = Callable[[pl.DataFrame], np.ndarray]

SCORE_SCHEMA: dict[str, pl.DataType] = {
    "test": pl.String(),
    "station": pl.String(),
    PROFILE: pl.String(),
    "seconds": pl.Float64(),
    "score": pl.Float64(),
}
STATION_SCHEMA: dict[str, pl.DataType] = {
    "test": pl.String(),
    "station": pl.String(),
    PROFILE: pl.String(),  # the channels the station measured (dataset.profile_name)
    "threshold": pl.Float64(),  # of the operating point the station was replayed at
    "model_alarm_s": pl.Float64(),
    "first_alarm_s": pl.Float64(),
    "median_alarm_s": pl.Float64(),
    "real_alarms": pl.Int64(),
    "lead_over_median_s": pl.Float64(),
    "no_later_than_median": pl.Boolean(),
    "no_later_than_first": pl.Boolean(),
    "pre_ignition_alarm": pl.Boolean(),
    "real_alarm_s": pl.List(pl.Float64()),
}

# The reference detector: a rise of the ceiling smoke optical density by 0.02 /m, or of
# the ceiling temperature by 5 degC, over the station's first row. Its score is the larger
# rise as a fraction of its limit, so it alarms at a threshold of 1 with no persistence.
FIXED_SMOKE_RISE_OD_PER_M = 0.02
FIXED_HEAT_RISE_C = 5.0
FIXED_THRESHOLD = 1.0
FIXED_PERSISTENCE_S = 0
# History given to each station before ignition (see the module's doc): five minutes fill the
# longest window of the default features (300 s).
WARM_UP_S = 300.0
MAX_WARM_UP_S = 3600.0  # an hour of history: more only costs replay time
# The stretch of each record whose median is held: the first 10 s, before smoke reaches any
# station (the earliest commercial alarm went off 20 s after ignition).
WARM_UP_BASIS_S = 10.0
# Summary keys that are the model's settings, not the replay's results.
SETTINGS: tuple[str, ...] = ("threshold", "persistence_s", "profile_points")


def with_warm_up(own: pl.DataFrame, warm_up_s: float) -> pl.DataFrame:
    """One station's readings (sorted by ts) after `warm_up_s` of their channels' medians over
    the record's first WARM_UP_BASIS_S (the other columns as in the first row), on the record's
    own time grid extended back (so a lag feature finds its reading exactly lag_s earlier) and
    ending at the last grid point before ignition (or before the first reading, when the
    record starts before ignition): rows at negative seconds_since_ignition."""
    if not 0 <= warm_up_s <= MAX_WARM_UP_S:  # NaN fails too
        raise ValueError(
            f"warm_up_s must be a number of seconds in [0, {MAX_WARM_UP_S:g}], got {warm_up_s}"
        )
    if warm_up_s == 0:
        return own
    if own.height < 2:
        raise ValueError(f"a warm-up needs the record's time step: {own.height} reading(s)")
    step_s = (own["ts"][1] - own["ts"][0]).total_seconds()
    if not step_s > 0:
        raise ValueError(f"the record's first two readings are {step_s} s apart: no time step")
    first_s = float(own[SINCE][0])
    steps = math.ceil(warm_up_s / step_s)
    # k steps before the first reading, from the first k that falls before ignition
    nearest = max(1, math.floor(first_s / step_s) + 1)
    back_s = pl.int_range(nearest + steps - 1, nearest - 1, -1) * step_s
    basis = own.filter(pl.col(SINCE) < first_s + WARM_UP_BASIS_S)
    channels = [c for c in CHANNEL_NAMES if c in own.columns]
    quiet = own.head(1).with_columns(
        pl.lit(basis[c].median(), dtype=own.schema[c]).alias(c) for c in channels
    )
    held = quiet.select(pl.all().repeat_by(steps).explode())
    return pl.concat(
        [
            held.with_columns(
                pl.col("ts") - pl.duration(microseconds=(back_s * 1e6).round().cast(pl.Int64)),
                (pl.col(SINCE) - back_s).cast(own.schema[SINCE]),
            ),
            own,
        ]
    )


def station_scores(
    test: NistTest, spec: FeatureSpec | None, score_fn: ScoreFn, warm_up_s: float = WARM_UP_S
) -> pl.DataFrame:
    """test, station, channel_profile (the channels the station measured), seconds (after
    ignition), score: one row per station and time step, from `warm_up_s` before ignition
    (`with_warm_up`).

    `score_fn` gets one station's frame (ID columns, seconds_since_ignition, the channels and
    the spec's features, none without a spec, sorted by ts) and returns one score per row."""
    readings = test.readings()
    frames = []
    for station in test.stations:
        device = test.device_id(station)
        own = with_warm_up(readings.filter(pl.col("device_id") == device).sort("ts"), warm_up_s)
        rows = own.select(*ID_COLUMNS, SINCE, *CHANNEL_NAMES)
        if spec is not None:  # features for the readings they are computed at (not gap rows)
            rows = compute_features(own, spec).join(
                rows.drop(set(ID_COLUMNS) - {"device_id", "ts"}),
                on=["device_id", "ts"],
                how="left",
            )
        rows = rows.sort("ts")
        scores = np.asarray(score_fn(rows), dtype=np.float64)
        if scores.shape != (rows.height,):
            raise ValueError(
                f"score function returned shape {scores.shape} for {rows.height} readings "
                f"of {test.name} station {station}"
            )
        frames.append(
            pl.DataFrame(
                {
                    "test": test.name,
                    "station": station,
                    PROFILE: measured_profile(own),
                    "seconds": rows[SINCE].cast(pl.Float64),
                    "score": scores,
                },
                schema=SCORE_SCHEMA,
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=SCORE_SCHEMA)


def measured_profile(readings: pl.DataFrame) -> str | None:
    """The channel profile of a station's readings: the channels with at least one reading
    (None when it has none)."""
    present = [c for c in CHANNEL_NAMES if c in readings.columns and readings[c].count()]
    return profile_name(present) if present else None


@dataclass(frozen=True)
class RealFireReport:
    stations: pl.DataFrame  # STATION_SCHEMA, one row per replayed station
    summary: dict[str, Any]
    scores: pl.DataFrame  # SCORE_SCHEMA, for the timelines plot
    threshold: float
    persistence_s: float

    def as_json(self) -> dict[str, Any]:
        tests = []
        for (test,), part in self.stations.group_by(["test"], maintain_order=True):
            tests.append(
                {"test": test, "stations": part.drop("test").to_dicts()},
            )
        return {"tests": tests, "summary": self.summary}

    def table(self) -> str:
        """A plain text table for the terminal: one line per station, then the summary."""
        header = (
            f"{'test':<7}{'station':<8}{'thresh':>7}{'model_s':>8}{'first_s':>8}{'median_s':>9}"
            f"{'alarms':>7}{'lead_s':>8}  {'<=median':<9}{'<=first':<8}{'pre-ign':<7}"
        )
        lines = [header, "-" * len(header)]
        for row in self.stations.iter_rows(named=True):
            lines.append(
                f"{row['test']:<7}{row['station']:<8}{row['threshold']:>7.3f}"
                f"{_cell(row['model_alarm_s']):>8}"
                f"{_cell(row['first_alarm_s']):>8}{_cell(row['median_alarm_s']):>9}"
                f"{row['real_alarms']:>7}{_cell(row['lead_over_median_s']):>8}  "
                f"{_cell(row['no_later_than_median']):<9}{_cell(row['no_later_than_first']):<8}"
                f"{_cell(row['pre_ignition_alarm']):<7}"
            )
        lines.append("")
        lines.extend(f"{key}: {_cell(value)}" for key, value in self.summary.items())
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 and value != 0 else f"{value:.0f}"
    return str(value)


def evaluate_real(
    tests: Sequence[NistTest],
    activations: pl.DataFrame,
    spec: FeatureSpec | None,
    score_fn: ScoreFn,
    threshold: float,
    persistence_s: float,
    warm_up_s: float = WARM_UP_S,
    profile_points: ProfilePoints | None = None,
) -> RealFireReport:
    """Replay every test, each station after `warm_up_s` of its held start, and compare the
    model's alarm at each station with the real ones (`activations` as
    `firepipe.core.nist.read_activation_times` returns them). `spec`: the features `score_fn`
    reads (None: it reads the channels only). Each station alarms at the operating point of
    the channels it measured (`profile_points`), else at (threshold, persistence_s)."""
    check_operating_point(threshold, persistence_s)
    if not tests:
        raise ValueError("no NIST tests to replay")
    require_columns(activations, ["test", "station", "activation_s"], "the activation table")
    scores = pl.concat([station_scores(t, spec, score_fn, warm_up_s) for t in tests])
    model = model_alarms(scores, threshold, persistence_s, profile_points)
    stations = real_fire_stations(model, activations)
    summary = {
        **summarise(stations, threshold, persistence_s),
        "profile_points": {name: list(point) for name, point in (profile_points or {}).items()},
        "warm_up_s": warm_up_s,
        "warm_up_basis_s": WARM_UP_BASIS_S,
    }
    return RealFireReport(stations, summary, scores, threshold, persistence_s)


def model_alarms(
    scores: pl.DataFrame,
    threshold: float,
    persistence_s: float,
    profile_points: ProfilePoints | None = None,
) -> pl.DataFrame:
    """test, station, channel_profile, threshold (the station's, `evaluation.at_points`),
    model_alarm_s (first onset at or after ignition), pre_ignition_alarm."""
    keyed = scores.select(
        pl.concat_str("test", "station", separator="\x1f").alias("device_id"),
        "test",
        "station",
        PROFILE,
        pl.col("seconds").alias("ts"),
        "score",
    )
    onsets = alarm_onsets(keyed, threshold, persistence_s, profile_points)
    station_threshold = row_thresholds(threshold, profile_points).alias("threshold")
    per_station = onsets.group_by("device_id").agg(
        pl.col("alarm_ts").filter(pl.col("alarm_ts") >= 0).min().alias("model_alarm_s"),
        (pl.col("alarm_ts") < 0).any().alias("pre_ignition_alarm"),
    )
    return (
        keyed.select("device_id", "test", "station", PROFILE, station_threshold)
        .unique(maintain_order=True)
        .join(per_station, on="device_id", how="left")
        .with_columns(pl.col("pre_ignition_alarm").fill_null(False))
        .drop("device_id")
    )


def real_fire_stations(model: pl.DataFrame, activations: pl.DataFrame) -> pl.DataFrame:
    """The model's alarm beside the commercial alarms' first and median times."""
    real = activations.group_by("test", "station").agg(
        pl.col("activation_s").drop_nulls().sort().alias("real_alarm_s"),
        pl.col("activation_s").drop_nulls().min().alias("first_alarm_s"),
        # never-activated alarms are later than any time (+inf), then the median
        pl.col("activation_s").fill_null(float("inf")).median().alias("median_all"),
    )
    joined = model.join(real, on=["test", "station"], how="left").with_columns(
        pl.when(pl.col("median_all").is_finite()).then("median_all").alias("median_alarm_s"),
        pl.col("real_alarm_s").list.len().fill_null(0).cast(pl.Int64).alias("real_alarms"),
        pl.col("real_alarm_s").fill_null(pl.lit([], dtype=pl.List(pl.Float64))),
    )
    compared = pl.col("median_all").is_not_null()
    alarmed = pl.col("model_alarm_s").is_not_null()

    def no_later_than(reference: str) -> pl.Expr:
        # a model that never alarmed is late; any alarm beats a real one that never came
        beaten = alarmed & (pl.col("model_alarm_s") <= pl.col(reference)).fill_null(False)
        return pl.when(pl.col(reference).is_null()).then(alarmed).otherwise(beaten)

    return (
        joined.with_columns(
            (pl.col("median_alarm_s") - pl.col("model_alarm_s")).alias("lead_over_median_s"),
            pl.when(compared).then(no_later_than("median_alarm_s")).alias("no_later_than_median"),
            pl.when(compared).then(no_later_than("first_alarm_s")).alias("no_later_than_first"),
        )
        .select(list(STATION_SCHEMA))
        .cast(STATION_SCHEMA)  # type: ignore[arg-type]
        .sort("test", "station")
    )


def summarise(stations: pl.DataFrame, threshold: float, persistence_s: float) -> dict[str, Any]:
    """The issue's summary over the stations that had commercial alarms."""
    compared = stations.filter(pl.col("no_later_than_median").is_not_null())
    n = compared.height
    # a station where the model never alarmed has lost by more than any lead: -inf
    leads = (
        compared.filter(pl.col("median_alarm_s").is_not_null())["lead_over_median_s"]
        .fill_null(float("-inf"))
        .to_numpy()
        .astype(np.float64)
    )
    median_lead = float(np.median(leads)) if leads.size else None
    return {
        "stations": n,
        "stations_replayed": stations.height,
        "share_no_later_than_median_alarm": _share(compared["no_later_than_median"]),
        "share_no_later_than_first_alarm": _share(compared["no_later_than_first"]),
        "median_lead_s": median_lead
        if median_lead is not None and np.isfinite(median_lead)
        else None,
        "pre_ignition_alarms": int(stations["pre_ignition_alarm"].sum()),
        "stations_without_model_alarm": int(compared["model_alarm_s"].null_count()),
        "threshold": threshold,
        "persistence_s": persistence_s,
    }


def _share(flags: pl.Series) -> float | None:
    return float(flags.cast(pl.Float64).mean()) if flags.len() else None  # type: ignore[arg-type]


def fixed_threshold_scores(rows: pl.DataFrame) -> np.ndarray:
    """The reference detector's score for one station's rows (sorted by ts): the larger of the
    smoke optical density rise / 0.02 /m and the temperature rise / 5 degC since the rows'
    first (after a warm-up, the held start); 0 where the station lacks both channels."""
    smoke_pct = rows["smoke_obscuration_pct_per_m"].cast(pl.Float64).to_numpy()
    density = units.optical_density_per_m(smoke_pct)
    rises = [
        _rise(density) / FIXED_SMOKE_RISE_OD_PER_M,
        _rise(rows["temperature_c"].cast(pl.Float64).to_numpy()) / FIXED_HEAT_RISE_C,
    ]
    return np.asarray(np.nan_to_num(np.fmax(*rises), nan=0.0, posinf=np.inf), dtype=np.float64)


def _rise(values: np.ndarray) -> np.ndarray:
    present = np.flatnonzero(np.isfinite(values))
    if present.size == 0:
        return np.full(values.shape, np.nan)
    return np.asarray(values - values[present[0]], dtype=np.float64)


def replay_detector(
    tests: Sequence[NistTest],
    activations: pl.DataFrame,
    detector: Detector,
    warm_up_s: float = WARM_UP_S,
) -> RealFireReport:
    """`detector` replayed at its own operating points, on the features of its own spec
    (`Detector.require_feature_spec`: one saved without its spec is refused)."""
    return evaluate_real(
        tests,
        activations,
        detector.require_feature_spec(),
        detector.scores,
        detector.threshold,
        detector.persistence_s,
        warm_up_s,
        detector.profile_points,
    )


@dataclass(frozen=True)
class NistReplay:
    model: RealFireReport
    baseline: RealFireReport  # the fixed-threshold reference, replayed the same way


def replay_nist(folder: Path, detector: Detector, warm_up_s: float = WARM_UP_S) -> NistReplay:
    """The NIST replay of ml/evaluation and `firepipe evaluate-real`: every test in `folder`
    (NIST_Smoke_Alarms_*.csv and Activation_Times.csv) through `detector` and through the
    fixed-threshold reference (a fraction of a second more). Bad data raises
    nist.NistDataError; a detector without its spec or a warm-up out of range, ValueError."""
    if not 0 <= warm_up_s <= MAX_WARM_UP_S:  # NaN fails too
        raise ValueError(f"warm_up_s must be in [0, {MAX_WARM_UP_S:g}] seconds, got {warm_up_s}")
    detector.require_feature_spec()  # before reading the tests: the cheaper refusal first
    tests = nist.read_tests(folder)
    activations = nist.read_activation_times(folder)
    return NistReplay(
        replay_detector(tests, activations, detector, warm_up_s),
        fixed_threshold_baseline(tests, activations, warm_up_s),
    )


def fixed_threshold_baseline(
    tests: Sequence[NistTest], activations: pl.DataFrame, warm_up_s: float = WARM_UP_S
) -> RealFireReport:
    """The issue's reference, reported like the model: a fixed threshold on the measured rises
    (over the warm-up's held start: each channel's median over the record's first 10 s)."""
    return evaluate_real(
        tests,
        activations,
        None,  # it reads the channels, no feature
        fixed_threshold_scores,
        FIXED_THRESHOLD,
        FIXED_PERSISTENCE_S,
        warm_up_s,
    )
