"""The scoring engine: alarms by evaluation's rule at each profile's operating point, model
swaps that keep the devices' readings, bounded memory and refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from firepipe.core.features.spec import FeatureSpec, Rolling
from firepipe.core.serving.engine import Reading, RejectedReadingsError, ScoringEngine
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
