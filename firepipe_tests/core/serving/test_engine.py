"""The scoring engine: alarms by evaluation's rule at each profile's operating point, model
swaps that keep the devices' readings, bounded memory and refusals."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from firepipe.core.features.spec import FeatureSpec, Rolling
from firepipe.core.serving.engine import (
    Reading,
    ReadingColumns,
    RejectedReadingsError,
    ScoringEngine,
)
from firepipe.core.serving.online import N_CHANNELS
from firepipe.core.serving.scoring import ServingModel
from firepipe.core.training import evaluation
from firepipe.core.training.models import Detector

START = datetime(2026, 3, 1, tzinfo=UTC)
SPEC = FeatureSpec((Rolling("temperature_c", "mean", 5), Rolling("co_ppm", "max", 5)))
FULL = "temperature_c+co_ppm"


class TemperatureScorer:
    """A score from the 5 s mean temperature: 0 at 20 degC, 1 at 70 degC."""

    backend = "test"

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x[:, 0] - 20.0) / 50.0, 0.0, 1.0)


def model(version: str = "m/1", persistence_s: int = 4) -> ServingModel:
    detector = Detector(
        algorithm="logistic",
        feature_names=SPEC.names,
        feature_spec_hash=SPEC.hash(),
        params={},
        threshold=0.5,
        persistence_s=persistence_s,
        # a device with a CO sensor alarms earlier and sooner
        profile_points={FULL: (0.3, 2)},
        feature_spec=SPEC,
    )
    return ServingModel(detector, TemperatureScorer(), version)


def reading(device: str, second: int, temperature: float, co: float | None = None) -> Reading:
    ts = START + timedelta(seconds=second)
    values = {"temperature_c": temperature} | ({} if co is None else {"co_ppm": co})
    return Reading(device, ts, values, ts.strftime("%Y-%m-%dT%H:%M:%SZ"))


def engine(**kwargs: object) -> ScoringEngine:
    return ScoringEngine(model(), now=lambda: START + timedelta(days=1), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("with_co", "point"), [(False, (0.5, 4)), (True, (0.3, 2))])
def test_alarms_follow_evaluations_rule_at_the_profiles_point(
    with_co: bool, point: tuple[float, int]
) -> None:
    rng = np.random.default_rng(3)
    # a fire that comes and goes, with missing seconds and a silence longer than the horizon
    seconds = [s for s in range(0, 3_000) if rng.random() > 0.1 and not 1_000 < s < 2_200]
    at = np.array(seconds)
    temperature = 20 + 60 * (np.sin(at / 40.0) > 0.3) + rng.normal(0, 5, len(seconds))
    # burning into the silence and out of it: the alarm's run goes on across it
    temperature[(at > 980) & (at < 2_210)] = 90.0
    scoring = engine()
    answers = []
    for s, t in zip(seconds, temperature.clip(-40, 1200).tolist(), strict=True):
        answers += scoring.score([reading("d", s, t, 1.0 if with_co else None)])
    frame = pl.DataFrame(
        {
            "device_id": "d",
            "ts": [START + timedelta(seconds=s) for s in seconds],
            "score": [a.score for a in answers],
        }
    )
    expected = evaluation.alarm_sounding(frame, *point).to_list()
    assert [a.alarm for a in answers] == expected
    assert 0 < sum(expected) < len(expected)  # alarms rise and clear


def test_one_prediction_per_reading_in_order_with_the_ts_as_sent() -> None:
    batch = [reading("a", 0, 20.0), reading("b", 0, 70.0), reading("a", 1, 30.0)]
    answers = engine().score(batch)
    assert [(p.device_id, p.ts) for p in answers] == [(r.device_id, r.ts_text) for r in batch]
    assert [p.score for p in answers] == pytest.approx([0.0, 1.0, 0.1])
    assert {p.model_version for p in answers} == {"m/1"}


def test_a_swap_keeps_the_devices_readings() -> None:
    scoring = engine()
    scoring.score([reading("d", s, 70.0) for s in range(4)])
    scoring.swap(model("m/2"))
    (answer,) = scoring.score([reading("d", 4, 20.0)])
    assert answer.model_version == "m/2"
    assert answer.score == pytest.approx((4 * 70.0 + 20.0) / 5 / 50.0 - 0.4)


def test_memory_is_bounded_by_devices_idleness_and_horizon() -> None:
    clock = [0.0]
    scoring = engine(max_devices=3, idle_s=60.0, clock=lambda: clock[0])
    scoring.score([reading(f"d{i}", 0, 20.0) for i in range(5)])
    assert scoring.devices == 3  # the two heard from first were dropped
    clock[0] = 61.0
    scoring.score([reading("new", 0, 20.0)])
    assert scoring.devices == 1  # the others were idle for more than 60 s
    scoring.score([reading("new", s, 20.0) for s in range(1, 5_000)])
    held = scoring._devices["new"][0]
    assert held.n <= scoring.horizon_s + 1


def test_readings_silver_would_quarantine_are_refused() -> None:
    scoring = engine()
    future = Reading("d", START + timedelta(days=2), {}, "2026-03-03T00:00:00Z")
    with pytest.raises(RejectedReadingsError, match=r"reading 1 .*after now \+ 300 s"):
        scoring.score([reading("d", 0, 20.0), future])
    with pytest.raises(RejectedReadingsError, match="co_ppm=-1 outside"):
        scoring.score([reading("d", 0, 20.0, co=-1.0)])
    assert scoring.devices == 0


def test_a_declared_profile_sets_the_operating_point_from_the_first_reading() -> None:
    """A device declared with temperature and CO alarms at that profile's point (0.3 after
    2 s) though it has sent no CO yet; the same readings undeclared alarm at the one point."""
    rng = np.random.default_rng(5)
    seconds = list(range(200))
    temperature = (20 + 60 * (np.sin(np.arange(200) / 15.0) > 0.5) + rng.normal(0, 8, 200)).clip(
        -40, 1200
    )
    scoring = engine()
    declared, undeclared = [], []
    for s, t in zip(seconds, temperature.tolist(), strict=True):
        declared += scoring.score([reading("d", s, t)], {"d": ["co_ppm", "temperature_c"]})
        undeclared += scoring.score([reading("u", s, t)])
    for answers, point in ((declared, (0.3, 2)), (undeclared, (0.5, 4))):
        frame = pl.DataFrame(
            {
                "device_id": "d",
                "ts": [START + timedelta(seconds=s) for s in seconds],
                "score": [a.score for a in answers],
            }
        )
        assert [a.alarm for a in answers] == evaluation.alarm_sounding(frame, *point).to_list()
        assert {a.threshold for a in answers} == {point[0]}
    assert [a.alarm for a in declared] != [a.alarm for a in undeclared]
    # the declaration stays with the device: a later request need not repeat it
    (later,) = scoring.score([reading("d", 200, 20.0)])
    assert later.threshold == 0.3


def test_a_profile_with_an_unknown_channel_is_refused_before_anything_changes() -> None:
    scoring = engine()
    with pytest.raises(RejectedReadingsError, match=r"profile of device 'd': unknown .*'co'"):
        scoring.score([reading("d", 0, 20.0)], {"d": ["temperature_c", "co"]})
    with pytest.raises(RejectedReadingsError, match="no channels"):
        scoring.score([reading("d", 0, 20.0)], {"d": []})
    assert scoring.devices == 0


def test_predictions_are_warm_once_the_held_readings_cover_the_lookback() -> None:
    """SPEC's 5 s windows read 4 s back: warm from 4 s after the first reading held, and again
    only 4 s after a restart (a new engine) or after the device was forgotten."""
    scoring = engine(idle_s=60.0, clock=lambda: clock[0])
    clock = [0.0]
    answers = scoring.score([reading("d", s, 20.0) for s in range(8)])
    assert [a.warm for a in answers] == [False] * 4 + [True] * 4
    (late,) = scoring.score([reading("d", 2, 20.0)])  # late, before the 4 s were held
    assert not late.warm
    restarted = engine().score([reading("d", s, 20.0) for s in range(8, 14)])
    assert [a.warm for a in restarted] == [False] * 4 + [True] * 2
    clock[0] = 61.0
    scoring.score([reading("other", 100, 20.0)])  # d, idle for 61 s, is forgotten
    assert [a.warm for a in scoring.score([reading("d", 100, 20.0)])] == [False]


def test_a_request_answers_each_reading_as_if_it_had_come_alone() -> None:
    """Runs in time order (one kernel call per device), readings out of order and seconds
    sent twice (one by one) mixed in one request: the same predictions as one per request."""
    rng = np.random.default_rng(11)
    sent = []
    for s in range(400):
        for device in ("a", "b", "c"):
            heat = 20 + 70 * (s % 90 > 50) + rng.normal(0, 5)
            late = s - int(rng.integers(1, 8)) if device == "b" and rng.random() < 0.2 else s
            co = 5.0 if device == "c" else None
            sent.append(reading(device, max(late, 0), float(np.clip(heat, -40, 1200)), co))
    alone, together = engine(), engine()
    one_by_one = [p for r in sent for p in alone.score([r])]
    batched = [p for i in range(0, len(sent), 37) for p in together.score(sent[i : i + 37])]
    assert batched == one_by_one
    # and the scores are those of the 5 s mean of what had arrived (the last write wins)
    arrived: dict[str, dict[int, float]] = {}
    for r, p in zip(sent, batched, strict=True):
        second = int((r.ts - START).total_seconds())
        held = arrived.setdefault(r.device_id, {})
        held[second] = float(np.float32(r.values["temperature_c"]))
        window = [held[k] for k in range(second - 4, second + 1) if k in held]
        assert p.score == pytest.approx(min(max((np.mean(window) - 20) / 50, 0.0), 1.0), abs=1e-6)
    assert 0 < sum(p.alarm for p in batched) < len(batched)


def test_skip_late_leaves_late_readings_to_gold() -> None:
    scoring = engine()
    scoring.score([reading("d", 400, 20.0)])
    sent = [reading("d", 401, 20.0), reading("d", 10, 20.0), reading("e", 0, 70.0)]
    scored = scoring.score_columns(ReadingColumns.of(sent), skip_late=True)
    assert scored.positions.tolist() == [0, 2]
    answers = scored.predictions()
    assert [(a.device_id, a.ts) for a in answers] == [
        ("d", "2026-03-01T00:06:41Z"),
        ("e", "2026-03-01T00:00:00Z"),
    ]
    with pytest.raises(RejectedReadingsError, match="co_ppm=-1 outside"):
        scoring.score_columns(ReadingColumns.of([reading("d", 11, 20.0, co=-1.0)]), skip_late=True)


def test_readings_in_columns_keep_what_the_values_cannot_show() -> None:
    """A NaN sent and an unknown channel are not 'not sent': refused by position, in the
    words the reading would get; columns join in order, and must be of one length."""
    scoring = engine()
    nan = Reading("d", START, {"temperature_c": math.nan}, "2026-03-01T00:00:00Z")
    smell = Reading("d", START, {"smell": 1.0}, "2026-03-01T00:00:00Z")
    columns = ReadingColumns.of([reading("d", 0, 20.0), nan, smell])
    assert columns.problems == {
        1: "temperature_c=NaN outside [-40, 1200]",
        2: "unknown channel(s) ['smell']",
    }
    with pytest.raises(RejectedReadingsError, match=r"reading 1 \(device 'd'\): temp.*=NaN"):
        scoring.score_columns(columns)
    with pytest.raises(RejectedReadingsError, match=r"reading 0 .*unknown channel.*'smell'"):
        scoring.score([smell])
    assert scoring.devices == 0
    joined = ReadingColumns.concat([ReadingColumns.of([reading("e", 0, 20.0)]), columns])
    assert joined.device_id == ["e", "d", "d", "d"]
    assert joined.problems == {2: columns.problems[1], 3: columns.problems[2]}
    scored = scoring.score_columns(ReadingColumns.of([reading("e", s, 70.0) for s in range(6)]))
    assert scored.predictions() == engine().score([reading("e", s, 70.0) for s in range(6)])
    assert scored.alarm.tolist() == [False] * 4 + [True] * 2  # 4 s at or over 0.5
    with pytest.raises(ValueError, match="different lengths"):
        ReadingColumns(["d"], [], np.array([0]), np.full((1, N_CHANNELS), np.nan))
