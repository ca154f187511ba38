"""Online features = gold's features: streams replayed reading by reading through the scoring
engine agree with gold computed by the lake's own path (bronze -> `to_silver` ->
`compute_features`) over the readings that had arrived, to 1e-6; with gaps, long silences,
out-of-order and repeated readings, on synthetic devices and on NIST stations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firepipe.core.features.kernels import compiled
from firepipe.core.features.spec import (
    STATISTICS,
    Difference,
    FeatureSpec,
    RateOfRise,
    Ratio,
    Rise,
    Rolling,
    SmokeHeatLag,
    compute_features,
    default_spec,
)
from firepipe.core.lake.standardise import to_silver
from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, SYNTHETIC_SCHEMA
from firepipe.core.realdata import nist
from firepipe.core.serving import online
from firepipe.core.serving.engine import LATE_S, Reading, ScoringEngine
from firepipe.core.serving.scoring import ServingModel
from firepipe.core.training.models import Detector
from firepipe_tests.core.features.feature_sample import silver_sample

NIST_DIR = Path(__file__).parents[3] / "firepipe" / "data" / "nist_smoke_alarms"
SPEC = default_spec()


class RecordingScorer:
    """Scores every row 0 and keeps the rows: the engine's feature rows, as the model gets them."""

    backend = "recording"

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def scores(self, x: np.ndarray) -> np.ndarray:
        self.rows.extend(x.copy())
        return np.zeros(x.shape[0])


def recording_engine(spec: FeatureSpec) -> tuple[ScoringEngine, RecordingScorer]:
    detector = Detector(
        algorithm="logistic",
        feature_names=spec.names,
        feature_spec_hash=spec.hash(),
        params={},
        feature_spec=spec,
    )
    scorer = RecordingScorer()
    far_future = datetime(2100, 1, 1, tzinfo=UTC)
    return ScoringEngine(ServingModel(detector, scorer, "test"), now=lambda: far_future), scorer


def stream(readings: pl.DataFrame, seed: int, disorder: float) -> pl.DataFrame:
    """The readings in an arrival order: time order per device, interleaved across devices, a
    `disorder` share of them delayed by up to 10 s (out of order), and that share again sent a
    second time later with other values (repeats; the last write wins); `arrival` numbers
    them."""
    rng = np.random.default_rng(seed)
    rows = readings.filter(~pl.col("is_gap")) if "is_gap" in readings.columns else readings
    seconds = rows["ts"].dt.epoch("s").to_numpy().astype(np.float64)
    delay = np.where(rng.random(rows.height) < disorder, rng.uniform(1, 10, rows.height), 0.0)
    order = np.argsort(seconds + delay + rng.uniform(0, 0.5, rows.height), kind="stable")
    arrived = rows[order]
    repeat = np.flatnonzero(rng.random(arrived.height) < disorder)
    again = arrived[repeat].with_columns(
        (pl.col(c.name) * pl.lit(1.0 + rng.uniform(-0.1, 0.1), pl.Float32)).clip(
            c.min_value, c.max_value
        )
        for c in CHANNELS
    )
    later = np.minimum(repeat + rng.integers(1, 10, repeat.size), arrived.height)
    position = np.concatenate([np.arange(arrived.height, dtype=np.float64), later - 0.5])
    both = pl.concat([arrived, again]).with_columns(pl.Series("_at", position))
    return both.sort("_at", maintain_order=True).drop("_at").with_row_index("arrival")


def bronze(arrived: pl.DataFrame) -> pl.DataFrame:
    """Arrived readings as bronze synthetic rows, in arrival order (silver keeps the last)."""
    missing = {c: t for c, t in SYNTHETIC_SCHEMA.items() if c not in arrived.columns}
    return arrived.with_columns(pl.lit(None, t).alias(c) for c, t in missing.items()).select(
        list(SYNTHETIC_SCHEMA)
    )


def gold_at_arrival(arrived: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Per arrival: gold's features of its (device, second) over the readings that had arrived
    by then. Gold of all the readings gives them, except where a reading that arrived later
    fell in the window (or the very second) of one before it: those take gold of their own
    prefix (their device's readings: features are per device)."""
    lookback = online.lookback_s(spec)

    def gold(prefix: pl.DataFrame) -> pl.DataFrame:
        return compute_features(to_silver({"synthetic": bronze(prefix)}).readings, spec)

    keyed = arrived.with_columns(pl.col("ts").dt.truncate("1s").alias("second"))
    final = gold(arrived).rename({"ts": "second"})
    expected = keyed.select("arrival", "device_id", "second").join(
        final.select("device_id", "second", *spec.names), on=["device_id", "second"], how="left"
    )
    seconds = keyed["second"].dt.epoch("s").to_numpy()
    devices = keyed["device_id"].to_numpy()
    stale = []
    for i in range(keyed.height):
        later = slice(i + 1, None)
        hit = (
            (devices[later] == devices[i])
            & (seconds[later] <= seconds[i])
            & (seconds[later] > seconds[i] - lookback - 1)
        )
        if hit.any():
            stale.append(i)
    rows = []
    for i in stale:
        prefix = keyed.head(i + 1).filter(pl.col("device_id") == devices[i])
        own = gold(prefix.drop("second")).rename({"ts": "second"})
        rows.append(
            own.filter(
                (pl.col("device_id") == devices[i]) & (pl.col("second") == keyed["second"][i])
            ).select("device_id", "second", *spec.names)
        )
    if rows:
        fixed = pl.concat(rows).with_columns(pl.Series("arrival", keyed["arrival"][stale]))
        expected = expected.update(fixed, on="arrival", include_nulls=True)
    return expected.sort("arrival")


def replay(arrived: pl.DataFrame, spec: FeatureSpec, batch: int) -> np.ndarray:
    """The engine's feature rows for the arrivals, sent `batch` readings per request."""
    engine, scorer = recording_engine(spec)
    readings = [
        Reading(
            device_id=row["device_id"],
            ts=row["ts"],
            values={c: row[c] for c in CHANNEL_NAMES if row[c] is not None},
            ts_text=row["ts"].isoformat(),
        )
        for row in arrived.iter_rows(named=True)
    ]
    for start in range(0, len(readings), batch):
        engine.score(readings[start : start + batch])
    return np.vstack(scorer.rows)


def assert_parity(arrived: pl.DataFrame, spec: FeatureSpec, batch: int = 1) -> None:
    expected = gold_at_arrival(arrived, spec)
    actual = replay(arrived, spec, batch)
    want = expected.select(spec.names).to_numpy().astype(np.float64)
    assert actual.shape == want.shape
    assert np.array_equal(np.isnan(actual), np.isnan(want)), "nulls differ"
    both = ~np.isnan(want)
    close = np.abs(actual[both] - want[both]) <= 1e-6 * np.maximum(1.0, np.abs(want[both]))
    worst = np.argmax(np.abs(actual[both] - want[both]))
    assert close.all(), (
        f"{(~close).sum()} values differ; worst {actual[both][worst]} vs {want[both][worst]}"
    )


def sample_readings(seed: int) -> pl.DataFrame:
    """silver_sample's devices (fires, null channels, a 700 s silence, a filled gap) with a
    few more seconds dropped at random, their ts moved inside the second."""
    rng = np.random.default_rng(seed)
    readings = silver_sample(devices=3, seconds=900, seed=seed).filter(~pl.col("is_gap"))
    keep = pl.Series(rng.random(readings.height) > 0.03)
    jitter = pl.Series(rng.integers(0, 1_000_000, readings.height)).cast(pl.Duration("us"))
    return readings.filter(keep).with_columns(pl.col("ts") + jitter.filter(keep))


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), disorder=st.sampled_from([0.0, 0.03, 0.1]))
def test_synthetic_devices_reading_by_reading_agree_with_gold(seed: int, disorder: float) -> None:
    assert_parity(stream(sample_readings(seed), seed, disorder), SPEC)


@pytest.mark.slow
def test_batched_requests_agree_with_gold() -> None:
    """A request of many readings (several devices, out of order inside it) answers each as if
    it had come alone."""
    assert_parity(stream(sample_readings(7), 7, 0.05), SPEC, batch=97)


@pytest.mark.slow
@pytest.mark.parametrize(
    "test_file", ["NIST_Smoke_Alarms_SDC02.csv", "NIST_Smoke_Alarms_SDC10.csv"]
)
def test_nist_stations_reading_by_reading_agree_with_gold(test_file: str) -> None:
    readings = nist.read_test(NIST_DIR / test_file).readings()
    assert readings["device_id"].n_unique() > 1
    assert_parity(stream(readings, 3, 0.03), SPEC)


def test_lookback_covers_the_longest_window_and_lag() -> None:
    # 300 s windows read 299 s back; the smoke-heat lag's 300 s window of 30 s rises, 329 s.
    assert online.lookback_s(SPEC) == 329
    assert online.lookback_s(FeatureSpec((Rolling("co_ppm", "mean", 30),))) == 29


def test_a_reading_later_than_late_s_is_refused_and_nothing_changes() -> None:
    engine, scorer = recording_engine(SPEC)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def reading(second: int, temperature: float = 20.0) -> Reading:
        ts = start + timedelta(seconds=second)
        return Reading("d", ts, {"temperature_c": temperature}, ts.isoformat())

    engine.score([reading(s) for s in range(0, LATE_S + 10)])
    held = engine.devices
    with pytest.raises(ValueError, match=f"more than {LATE_S} s late"):
        engine.score([reading(LATE_S + 10), reading(5)])
    with pytest.raises(ValueError, match="temperature_c=5000 outside"):
        engine.score([reading(LATE_S + 11, 5000.0)])
    assert engine.devices == held
    # the refused requests placed nothing: the next second's 30 s mean is that of 30 readings
    engine.score([reading(LATE_S + 10, 50.0)])
    mean_30 = scorer.rows[-1][SPEC.names.index("temperature_c__mean_30s")]
    assert mean_30 == pytest.approx((29 * 20.0 + 50.0) / 30)


def test_a_reading_exactly_late_s_late_still_has_its_whole_window() -> None:
    """The oldest reading the engine accepts reads back the whole lookback: the buffer keeps
    the reading exactly `horizon_s` before the newest."""
    spec = FeatureSpec((Difference("temperature_c", 10), Rolling("temperature_c", "min", 11)))
    engine, scorer = recording_engine(spec)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def reading(second: int) -> Reading:
        ts = start + timedelta(seconds=second)
        return Reading("d", ts, {"temperature_c": float(second)}, ts.isoformat())

    late = 50
    newest = late + LATE_S
    engine.score([reading(s) for s in range(newest + 1) if s != late])
    engine.score([reading(late)])  # exactly LATE_S behind the newest
    difference, low = scorer.rows[-1]
    assert difference == 10.0  # its reading 10 s earlier, the oldest the window reads
    assert low == late - 10


# The kernel before per-span statistics (one window pass per feature, a binary search per row
# of a lag's onset): the engine's answers are held to it bit for bit.
@compiled
def _old_first_after(ts: np.ndarray, end: int, t: int) -> int:
    return int(np.searchsorted(ts[:end], t, side="right"))


@compiled
def _old_at(ts: np.ndarray, end: int, t: int) -> int:
    k = int(np.searchsorted(ts[:end], t, side="left"))
    return k if k < end and ts[k] == t else -1


@compiled
def _old_mean(x: np.ndarray, channel: int, begin: int, end: int) -> float:
    n, total = 0, 0.0
    for k in range(begin, end):
        v = np.float64(x[k, channel])
        if v == v:
            n += 1
            total += v
    return total / n if n else np.nan


@compiled
def _old_onset(
    ts: np.ndarray, x: np.ndarray, channel: int, begin: int, end: int, lag: int, rise: float
) -> int:
    for k in range(begin, end):
        j = _old_at(ts, k, ts[k] - lag)
        if j >= 0 and np.float64(x[k, channel]) - np.float64(x[j, channel]) >= rise:
            return k
    return -1


@compiled
def old_point_features(
    ts: np.ndarray, x: np.ndarray, row: int, ops: np.ndarray, params: np.ndarray, out: np.ndarray
) -> None:
    t = ts[row]
    end = row + 1
    for i in range(ops.shape[0]):
        op, a, b, s1, s2 = ops[i, 0], ops[i, 1], ops[i, 2], ops[i, 3], ops[i, 4]
        value = np.nan
        if op <= 3:  # mean, std, max, min
            begin = _old_first_after(ts, end, t - s1)
            if op == 0:
                value = _old_mean(x, a, begin, end)
            elif op == 1:
                mean = _old_mean(x, a, begin, end)
                n, m2 = 0, 0.0
                for k in range(begin, end):
                    v = np.float64(x[k, a])
                    if v == v:
                        n += 1
                        m2 += (v - mean) * (v - mean)
                if n >= 2:
                    value = np.sqrt(m2 / (n - 1))
            else:
                best = np.nan
                for k in range(begin, end):
                    v = np.float64(x[k, a])
                    if v == v and (best != best or (v > best if op == 2 else v < best)):
                        best = v
                value = best
        elif op == 4:  # change
            j = _old_at(ts, end, t - s1)
            if j >= 0:
                value = (np.float64(x[row, a]) - np.float64(x[j, a])) * params[i, 0]
        elif op == 5:  # rise
            short = _old_mean(x, a, _old_first_after(ts, end, t - s1), end)
            value = short - _old_mean(x, a, _old_first_after(ts, end, t - s2), end)
        elif op == 6:  # ratio
            den = np.float64(x[row, b])
            if den != 0:
                value = np.float64(x[row, a]) / den
        else:  # smoke-heat lag
            begin = _old_first_after(ts, end, t - s1)
            smoke = _old_onset(ts, x, a, begin, end, s2, params[i, 0])
            heat = _old_onset(ts, x, b, begin, end, s2, params[i, 1])
            if smoke >= 0 and heat >= 0:
                value = np.float64(ts[heat] - ts[smoke])
        out[i] = value


SMALL_SPEC = FeatureSpec(
    (
        *(Rolling(c, s, w) for c in CHANNEL_NAMES[:3] for s in STATISTICS for w in (3, 8)),
        Rolling("co_ppm", "std", 20),
        Rolling("co_ppm", "min", 20),
        Difference("temperature_c", 2),
        Difference("co_ppm", 7),
        RateOfRise("temperature_c", 3),
        Rise("temperature_c", 3, 8),
        Rise("co_ppm", 4, 12),
        Ratio("co_ppm", "co2_ppm"),
        SmokeHeatLag(10, 2, 0.5, 0.25),
        SmokeHeatLag(6, 1, 0.25, 0.5, "co_ppm", "humidity_pct"),
    )
)
_SPECS = {"small": SMALL_SPEC, "default": SPEC}
# Sums of these run through every rounding case (thirds, huge and tiny neighbours, signed
# zeros, infinities cancelling to NaN), and their changes land on the lags' thresholds.
_VALUES = st.one_of(
    st.sampled_from([np.nan, 0.0, -0.0, 0.25, 0.5, 1.0, -0.5, 1 / 3, 1e30, -1e30, np.inf]),
    st.sampled_from([np.nan, 0.0, 0.25, 0.5, 0.75, 1.0]),
    st.floats(-1e6, 1e6, width=32),
    st.floats(-1.0, 1.0, width=32),
)


@st.composite
def windows(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A device's held readings: seconds with gaps, channels with nulls (a few never sent)."""
    n = draw(st.integers(1, 60))
    gaps = draw(st.lists(st.sampled_from([1, 1, 1, 2, 3, 9, 40]), min_size=n, max_size=n))
    ts = 1_700_000_000 + np.cumsum(gaps).astype(np.int64)
    x = np.array(draw(st.lists(_VALUES, min_size=8 * n, max_size=8 * n)), dtype=np.float32)
    x = x.reshape(n, 8)
    x[:, draw(st.lists(st.integers(0, 7), max_size=3))] = np.nan
    return ts, x


@settings(max_examples=300, deadline=None)
@given(window=windows(), spec=st.sampled_from(sorted(_SPECS)), data=st.data())
def test_features_are_bit_identical_to_the_one_window_per_feature_kernel(
    window: tuple[np.ndarray, np.ndarray], spec: str, data: st.DataObject
) -> None:
    ts, x = window
    plan = online.compile_plan(_SPECS[spec])
    old = np.empty((ts.size, len(plan.names)), dtype=np.float32)
    for row in range(ts.size):
        old_point_features(ts, x, row, plan.ops[:, :5].copy(), plan.params, old[row])
    present = int(sum(1 << c for c in range(8) if (~np.isnan(x[:, c])).any()))
    seen = data.draw(st.sampled_from([present, 0xFF]), label="seen")
    first = data.draw(st.integers(0, ts.size - 1), label="first row")
    rows = np.arange(first, ts.size, dtype=np.int64)
    columns = np.arange(len(plan.names), dtype=np.int64)
    kernel = (plan.ops, plan.params, plan.spans)
    together = np.full((ts.size, columns.size), -1.0)  # every row from `first` in one call
    online.features(ts, x, rows, seen, kernel, columns, together, rows)
    alone = np.full((ts.size, columns.size), -1.0)  # one row a call
    for row in rows:
        one = np.array([row])
        online.features(ts, x, one, seen, kernel, columns, alone, one)
    for new in (together[first:].astype(np.float32), alone[first:].astype(np.float32)):
        want = old[first:]
        assert np.array_equal(np.isnan(new), np.isnan(want))
        both = ~np.isnan(want)  # the same bits: signed zeros apart, infinities alike
        assert np.array_equal(new[both].view(np.uint32), want[both].view(np.uint32))
