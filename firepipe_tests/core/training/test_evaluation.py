"""Evaluation metrics on hand-built score frames whose right answers are stated in each test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firepipe.core.readings import TIMESTAMP
from firepipe.core.training import evaluation as ev

START = datetime(2026, 1, 1, tzinfo=UTC)


def scores(rows: list[tuple[str, float, float]]) -> pl.DataFrame:
    """(device, seconds after START, score) -> device_id, ts, score."""
    return pl.DataFrame(
        {
            "device_id": [d for d, _, _ in rows],
            "ts": [START + timedelta(seconds=s) for _, s, _ in rows],
            "score": [float(x) for _, _, x in rows],
        },
        schema={"device_id": pl.String(), "ts": TIMESTAMP, "score": pl.Float64()},
    )


def onset_seconds(onsets: pl.DataFrame) -> list[tuple[str, float]]:
    return [
        (d, (ts - START).total_seconds()) for d, ts in onsets.select("device_id", "alarm_ts").rows()
    ]


def device(
    name: str,
    scenario: str,
    family: str,
    score: np.ndarray,
    ignition_s: float | None = None,
    step_s: float = 1.0,
) -> pl.DataFrame:
    """One device's rows at `step_s` from START; fire devices ignite at `ignition_s`."""
    t = np.arange(score.size) * step_s
    since = t - ignition_s if ignition_s is not None else np.full(t.size, np.nan)
    is_fire = ignition_s is not None
    return pl.DataFrame(
        {
            "device_id": name,
            "ts": pl.Series([START + timedelta(seconds=float(s)) for s in t], dtype=TIMESTAMP),
            "scenario": scenario,
            "scenario_family": family,
            "is_fire": is_fire,
            "label": pl.Series(is_fire & (since >= 0)),
            "seconds_since_ignition": pl.Series(since, nan_to_null=True),
            "score": score.astype(np.float64),
        }
    )


# --- alarm onsets -------------------------------------------------------------------------

IRREGULAR = [
    # run 1: 0..3 s high; a low reading at 7 s; run 2: 8..20 s high (gaps of 4 and 7 s)
    *[("a", s, x) for s, x in [(0, 0.9), (1, 0.9), (3, 0.5), (7, 0.1)]],
    *[("a", s, x) for s, x in [(8, 0.9), (12, 0.9), (13, 0.9), (20, 0.9)]],
    # device b is high from its first reading: a's high run must not carry over into it
    *[("b", s, 0.6) for s in (0, 2, 4)],
]


@pytest.mark.parametrize(
    ("persistence_s", "expected"),
    [
        (0, [("a", 0), ("a", 8), ("b", 0)]),
        # run 1 has been high 3 s at 3 s; run 2 4 s at 12 s; b 4 s at 4 s
        (3, [("a", 3), ("a", 12), ("b", 4)]),
        # run 1 lasts only 3 s: no alarm; run 2 reaches 5 s at 13 s; b never reaches 5 s
        (5, [("a", 13)]),
        (13, []),
    ],
)
def test_alarm_onsets_follow_persistence_on_irregular_sampling(
    persistence_s: int, expected: list[tuple[str, float]]
) -> None:
    frame = scores(IRREGULAR)
    onsets = ev.alarm_onsets(frame, threshold=0.5, persistence_s=persistence_s)
    assert onset_seconds(onsets) == [(d, float(s)) for d, s in expected]
    # row order does not matter
    shuffled = ev.alarm_onsets(frame.sample(fraction=1.0, shuffle=True, seed=3), 0.5, persistence_s)
    assert onset_seconds(shuffled) == onset_seconds(onsets)


def test_alarm_onsets_on_numeric_seconds_and_at_a_higher_threshold() -> None:
    frame = scores(IRREGULAR).with_columns(
        (pl.col("ts").dt.epoch("us") / 1e6 - START.timestamp()).alias("ts")
    )
    onsets = ev.alarm_onsets(frame, threshold=0.7, persistence_s=0)
    # 0.5 at 3 s ends a's first run; b (0.6) never reaches 0.7
    assert onsets.rows() == [("a", 0.0), ("a", 8.0)]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(1, 5), min_size=1, max_size=40),
    # one value per reading: the first at 0 s and one after each step
    values=st.lists(st.sampled_from([0.1, 0.4, 0.5, 0.7, 0.9]), min_size=41, max_size=41),
    persistence_s=st.sampled_from([0, 1, 2, 4, 7]),
    threshold=st.sampled_from([0.4, 0.5, 0.8]),
)
def test_sustained_scores_agree_with_alarm_onsets(
    steps: list[int], values: list[float], persistence_s: int, threshold: float
) -> None:
    """An alarm sounds exactly where the sustained score reaches the threshold, so its onsets
    are the first readings of each such stretch."""
    t = np.concatenate([[0], np.cumsum(steps)])
    frame = scores([("d", float(s), values[i]) for i, s in enumerate(t)])
    sustained = ev.sustained_scores(frame, persistence_s)
    sounding = (sustained["sustained"] >= threshold).to_list()
    assert ev.alarm_sounding(frame, threshold, persistence_s).to_list() == sounding
    starts = [i for i, on in enumerate(sounding) if on and (i == 0 or not sounding[i - 1])]
    expected = [("d", float(t[i])) for i in starts]
    assert onset_seconds(ev.alarm_onsets(frame, threshold, persistence_s)) == expected


def test_alarm_sounding_per_reading_in_the_frame_order() -> None:
    """The readings where the alarm sounds, answered in the caller's row order (as serving
    needs): with 3 s persistence, a from 3 s until the low reading at 7 s, again from 12 s;
    b from 4 s."""
    frame = scores(IRREGULAR).with_row_index("i").sample(fraction=1.0, shuffle=True, seed=5)
    flags = ev.alarm_sounding(frame.drop("i"), threshold=0.5, persistence_s=3)
    sounding = frame.filter(flags.to_numpy()).sort("i")
    expected = [("a", 3.0), ("a", 12.0), ("a", 13.0), ("a", 20.0), ("b", 4.0)]
    assert onset_seconds(sounding.rename({"ts": "alarm_ts"})) == expected
    assert flags.dtype == pl.Boolean
    assert flags.len() == frame.height


def test_bad_scores_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ev.alarm_onsets(scores([("a", 0, float("nan"))]), 0.5, 0)
    with pytest.raises(ValueError, match="two readings at one ts"):
        ev.alarm_onsets(scores([("a", 0, 0.1), ("a", 0, 0.2)]), 0.5, 0)
    with pytest.raises(ValueError, match="lacks column"):
        ev.alarm_onsets(scores([("a", 0, 0.1)]).drop("score"), 0.5, 0)
    with pytest.raises(ValueError, match="persistence_s"):
        ev.alarm_onsets(scores([("a", 0, 0.1)]), 0.5, -1)


# --- one split ----------------------------------------------------------------------------


def spikes(n: int, at: list[int], width: int = 3, base: float = 0.05) -> np.ndarray:
    x = np.full(n, base)
    for i in at:
        x[i : i + width] = 0.95
    return x


def ramp(n: int, ignition_s: int, detect_after_s: int | None) -> np.ndarray:
    """0.05 until `detect_after_s` after ignition, then 0.95 (never when None)."""
    x = np.full(n, 0.05)
    if detect_after_s is not None:
        x[ignition_s + detect_after_s :] = 0.95
    return x


@pytest.fixture
def split_frame() -> pl.DataFrame:
    half_hour = 1800
    return pl.concat(
        [
            # nuisance: 2 alarm episodes over 2 x 0.5 h = 1 h -> 2,000 per 1,000 device-hours
            device("n1", "cooking_frying", "nuisance", spikes(half_hour, [100, 900])),
            device("n2", "shower_steam", "nuisance", spikes(half_hour, [])),
            # baseline: 1 episode in 1 h -> 1,000 per 1,000 device-hours
            device("b1", "clean_baseline", "baseline", spikes(2 * half_hour, [50])),
            # flaming_fast detected 10, 20 and 30 s after ignition at 60 s, and one never
            *[
                device(f"f{i}", "flaming_fast", "flaming", ramp(300, 60, d), ignition_s=60)
                for i, d in enumerate([10, 20, 30, None])
            ],
            # smouldering detected 100 s after ignition, after an alarm before ignition
            device(
                "s1",
                "smouldering_cotton",
                "smouldering",
                np.maximum(ramp(400, 100, 100), spikes(400, [20])),
                ignition_s=100,
            ),
        ]
    )


def test_false_alarm_rates_and_detection_times_of_a_split(split_frame: pl.DataFrame) -> None:
    report = ev.evaluate_split(split_frame, threshold=0.5, persistence_s=0)
    assert report["nuisance_false_alarms_per_1000_device_hours"] == pytest.approx(2000.0)
    assert report["baseline_false_alarms_per_1000_device_hours"] == pytest.approx(1000.0)
    # all non-fire devices: 3 alarms in 2 h
    assert report["false_alarms_per_1000_device_hours"] == pytest.approx(1500.0)
    assert report["false_alarms"] == 3
    assert report["pre_ignition_alarms"] == 1
    fast = report["time_to_detection_by_scenario"]["flaming_fast"]
    assert fast == {
        "devices": 4,
        "detected_share": 0.75,
        "median_s": 20.0,
        "p90_s": pytest.approx(28.0),  # 20 + 0.8 * (30 - 20), numpy's linear percentile
    }
    assert report["time_to_detection_by_scenario"]["smouldering_cotton"]["median_s"] == 100.0
    assert report["time_to_detection_by_family"]["flaming"]["devices"] == 4
    assert report["time_to_detection"]["detected_share"] == pytest.approx(4 / 5)
    assert report["time_to_detection"]["median_s"] == 25.0  # of 10, 20, 30, 100


def test_persistence_silences_short_spikes(split_frame: pl.DataFrame) -> None:
    # spikes last 3 readings (2 s from first to last): persistence 3 s outlasts them
    report = ev.evaluate_split(split_frame, threshold=0.5, persistence_s=3)
    assert report["false_alarms"] == 0
    assert report["pre_ignition_alarms"] == 0
    assert report["time_to_detection_by_scenario"]["flaming_fast"]["median_s"] == 23.0


def test_ranking_metrics_match_their_definitions(split_frame: pl.DataFrame) -> None:
    report = ev.evaluate_split(split_frame, threshold=0.5, persistence_s=0)
    label = split_frame["label"].to_numpy()
    score = split_frame["score"].to_numpy()
    predicted = score >= 0.5
    tp = int((predicted & label).sum())
    fp = int((predicted & ~label).sum())
    fn = int((~predicted & label).sum())
    assert report["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # ROC-AUC: the chance a random positive outscores a random negative (ties count half)
    pos, neg = score[label], score[~label]
    wins = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert report["roc_auc"] == pytest.approx(wins)
    assert 0.0 < report["pr_auc"] < 1.0


def test_evaluate_reports_every_split_and_flattens(split_frame: pl.DataFrame) -> None:
    frame = split_frame.with_columns(
        pl.when(pl.col("device_id").is_in(["n1", "f0", "f3"]))
        .then(pl.lit("test"))
        .otherwise(pl.lit("train"))
        .alias("split")
    )
    report = ev.evaluate(frame, 0.5, 0)
    assert list(report) == ["train", "test"]
    assert report["test"]["devices"] == 3
    assert report["test"]["nuisance_false_alarms_per_1000_device_hours"] == pytest.approx(4000.0)
    assert report["test"]["baseline_false_alarms_per_1000_device_hours"] is None  # no baseline
    flat = ev.flat_metrics(report)
    assert flat["test/time_to_detection_by_scenario/flaming_fast/detected_share"] == 0.5
    assert "test/baseline_false_alarms_per_1000_device_hours" not in flat


# --- operating point ----------------------------------------------------------------------


def validation_frame(nuisance_high_s: int) -> pl.DataFrame:
    n = 300
    nuisance = np.full(n, 0.1)
    nuisance[100 : 100 + nuisance_high_s] = 0.8
    since = np.arange(n) - 60.0
    fire = np.where(since >= 0, 0.1 + 0.02 * since, 0.1)  # 0.1 at ignition, +0.02 per second
    return pl.concat(
        [
            device("n", "cooking_toasting", "nuisance", nuisance),
            device("b", "clean_baseline", "baseline", np.full(n, 0.1)),
            device("f", "flaming_medium", "flaming", np.minimum(fire, 1.0), ignition_s=60),
        ]
    )


def test_operating_point_outlasts_a_spike_rather_than_raising_the_threshold() -> None:
    """A 2 s toast spike to 0.8. With persistence 0 the threshold must clear 0.8: the fire is
    detected 36 s after ignition (0.82). With persistence 2 s the spike's sustained score is
    0.1, the threshold falls halfway to the fire's first sustained value above it (0.12 at
    3 s), so the fire is detected at 3 s; longer persistences only wait longer."""
    frame = validation_frame(nuisance_high_s=2)
    threshold, persistence_s = ev.choose_operating_point(frame, (0, 2, 4, 10))
    assert persistence_s == 2
    assert threshold == pytest.approx(0.11)
    report = ev.evaluate_split(frame, threshold, persistence_s)
    assert report["false_alarms"] == 0
    assert report["pre_ignition_alarms"] == 0
    assert report["time_to_detection"]["median_s"] == 3.0
    # the same data with persistence 0 only: just above the spike
    threshold0, _ = ev.choose_operating_point(frame, (0,))
    assert threshold0 == pytest.approx((0.8 + 0.82) / 2)
    assert ev.evaluate_split(frame, threshold0, 0)["time_to_detection"]["median_s"] == 36.0


def test_a_silent_point_that_misses_most_fires_is_still_chosen() -> None:
    # Two more fires that never rise above the spike (0.8): only one fire of three can be
    # detected silently, so no point reaches a finite median; the silent one is chosen.
    base = validation_frame(nuisance_high_s=60)
    weak = np.full(300, 0.1)
    frame = pl.concat(
        [
            base,
            device("w1", "flaming_slow", "flaming", weak, ignition_s=60),
            device("w2", "smouldering_cotton", "smouldering", weak, ignition_s=60),
        ]
    )
    threshold, persistence_s = ev.choose_operating_point(frame, (0, 2))
    report = ev.evaluate_split(frame, threshold, persistence_s)
    assert report["false_alarms"] == 0
    assert report["time_to_detection"]["detected_share"] == pytest.approx(1 / 3)


def test_no_silent_operating_point_is_a_clear_error() -> None:
    # the nuisance sits at 0.8 for 60 s: beyond every persistence, and the fire's score rises
    # above 0.8 only at 36 s; cap the fire at 0.8 so no threshold separates them
    frame = validation_frame(nuisance_high_s=60).with_columns(pl.col("score").clip(upper_bound=0.8))
    with pytest.raises(ValueError, match="no threshold stays silent"):
        ev.choose_operating_point(frame, (0, 2, 30))
    with pytest.raises(ValueError, match="no non-fire devices"):
        ev.choose_operating_point(frame.filter(pl.col("is_fire")))


# --- operating points per channel profile ---------------------------------------------------

HEAT = "temperature_c"
SMOKE = "smoke_obscuration_pct_per_m"


def with_profile(frame: pl.DataFrame, profile: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(profile).alias(ev.PROFILE))


def test_each_device_is_judged_at_its_profiles_point(split_frame: pl.DataFrame) -> None:
    """n1 (two spikes to 0.95) is a heat device whose point (0.96) lies above them; the others
    keep the one point (0.5): one false alarm fewer than at 0.5 for all, the same detections."""
    frame = split_frame.with_columns(
        pl.when(pl.col("device_id") == "n1").then(pl.lit(HEAT)).otherwise(pl.lit(SMOKE))
    ).rename({"literal": ev.PROFILE})
    points = {HEAT: (0.96, 0)}
    report = ev.evaluate_split(frame, 0.5, 0, points)
    one_point = ev.evaluate_split(frame, 0.5, 0)
    assert (one_point["false_alarms"], report["false_alarms"]) == (3, 1)
    assert report["nuisance_false_alarms_per_1000_device_hours"] == 0.0
    assert report["time_to_detection"] == one_point["time_to_detection"]
    # F1 at each row's own threshold: n1's spikes are no longer predicted fire
    label = frame["label"].to_numpy()
    threshold = np.where(frame["device_id"].to_numpy() == "n1", 0.96, 0.5)
    predicted = frame["score"].to_numpy() >= threshold
    tp, fp = int((predicted & label).sum()), int((predicted & ~label).sum())
    fn = int((~predicted & label).sum())
    assert report["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert report["f1"] > one_point["f1"]
    # A profile's persistence counts too: 3 s outlasts the 3-reading spikes of every smoke device
    calm = ev.evaluate_split(frame, 0.5, 0, {HEAT: (0.96, 0), SMOKE: (0.5, 3)})
    assert (calm["false_alarms"], calm["pre_ignition_alarms"]) == (0, 0)
    onsets = ev.alarm_onset_times(frame, 0.5, 0, {HEAT: (0.96, 0), SMOKE: (0.5, 3)})
    assert onsets.filter(pl.col("device_id") == "f0")["onset_s"].to_list() == [13.0]


def test_a_device_with_two_profiles_is_refused(split_frame: pl.DataFrame) -> None:
    frame = split_frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(HEAT)).otherwise(pl.lit(SMOKE))
    ).rename({"literal": ev.PROFILE})
    with pytest.raises(ValueError, match="change channel profile between readings"):
        ev.evaluate_split(frame, 0.5, 0, {HEAT: (0.9, 0)})
    with pytest.raises(ValueError, match="lacks"):
        ev.evaluate_split(split_frame, 0.5, 0, {HEAT: (0.9, 0)})


def test_profile_points_are_chosen_on_each_profiles_own_devices() -> None:
    """Heat devices: a toast spike to 0.8 sets their point above it. Smoke devices: no spike,
    so their point sits low and detects the same fire at once. A third profile with too few
    non-fire devices gets no point of its own."""
    spiky = validation_frame(nuisance_high_s=2)
    quiet = validation_frame(nuisance_high_s=0).with_columns(
        pl.concat_str("device_id", pl.lit("-q"))
    )
    few = device("lonely-f", "flaming_medium", "flaming", np.linspace(0.1, 1, 300), 60)
    frame = pl.concat(
        [with_profile(spiky, HEAT), with_profile(quiet, SMOKE), with_profile(few, "co_ppm")]
    )
    points = ev.choose_profile_points(frame, min_devices=2, persistence_options=(0,))
    assert set(points) == {HEAT, SMOKE}
    assert points[HEAT] == ev.choose_operating_point(with_profile(spiky, HEAT), (0,))
    assert points[HEAT][0] == pytest.approx((0.8 + 0.82) / 2)
    assert points[SMOKE] == ev.choose_operating_point(with_profile(quiet, SMOKE), (0,))
    assert points[SMOKE][0] < 0.2
    # With a bar of 3 non-fire devices no profile qualifies (each has 2).
    assert ev.choose_profile_points(frame, min_devices=3, persistence_options=(0,)) == {}
    with pytest.raises(ValueError, match="at least 1"):
        ev.choose_profile_points(frame, min_devices=0)
    # A profile where no threshold is silent and detects a fire keeps the one point.
    inseparable = validation_frame(nuisance_high_s=60).with_columns(
        pl.col("score").clip(upper_bound=0.8), pl.concat_str("device_id", pl.lit("-i"))
    )
    mixed = pl.concat([frame, with_profile(inseparable, "co2_ppm")])
    assert set(ev.choose_profile_points(mixed, min_devices=2, persistence_options=(0,))) == {
        HEAT,
        SMOKE,
    }
    # Bad input is an error, not a detector without points.
    with pytest.raises(ValueError, match=r"lacks.*score"):
        ev.choose_profile_points(frame.drop("score"), min_devices=2)
    with pytest.raises(ValueError, match="at least one persistence option"):
        ev.choose_profile_points(frame, min_devices=2, persistence_options=())


def test_profile_devices_count_a_devices_noisy_copies_once() -> None:
    base = validation_frame(nuisance_high_s=0)
    copy = base.filter(pl.col("device_id") == "n").with_columns(
        pl.lit("n~noise0").alias("device_id")
    )
    counts = ev.profile_devices(with_profile(pl.concat([base, copy]), HEAT))
    assert counts.rows() == [(HEAT, 1, 2)]  # n and its copy once, b; one fire


def test_evaluate_profiles_reports_each_profile_and_all_together(split_frame: pl.DataFrame) -> None:
    views = pl.concat(
        [
            with_profile(split_frame, HEAT).with_columns(pl.concat_str("device_id", pl.lit("@h"))),
            with_profile(split_frame, SMOKE).with_columns(pl.concat_str("device_id", pl.lit("@s"))),
        ]
    )
    report = ev.evaluate_profiles(views, 0.5, 0, {HEAT: (0.96, 0)})
    assert list(report) == [SMOKE, HEAT, "all"]  # the profiles sorted, then all together
    assert report[HEAT]["false_alarms"] == 0
    assert report[SMOKE]["false_alarms"] == 3
    assert report["all"]["false_alarms"] == 3
    assert report["all"]["devices"] == 2 * report[SMOKE]["devices"]
    flat = ev.flat_metrics({"test_profiles": report})
    assert flat["test_profiles/temperature_c/false_alarms"] == 0.0
    assert flat["test_profiles/smoke_obscuration_pct_per_m/false_alarms"] == 3.0
    two = ev.flat_metrics({"p": {"temperature_c+co_ppm": {"x": 1.0}}})
    assert two == {"p/temperature_c.co_ppm/x": 1.0}  # MLflow takes no "+" in a metric name
