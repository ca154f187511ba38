"""The scoring engine behind the inference service: raw readings in, one prediction each out.

Each reading joins its device's recent readings (`online.DeviceReadings`), gets gold's features
(`online.point_features`), is scored by the model's scorer and alarms by the rule evaluation
and the real-fire replay use (`evaluation.alarm_sounding`): the score has stayed at or above the
threshold of the device's operating point for `persistence_s` seconds. A device's operating
point is that of its channel profile, the channels it has reported since the engine first held
it (a device that never sends CO has no CO sensor).

A reading silver would quarantine (a value outside its channel's range, a time in the future)
or one too late to score online refuses the whole request before anything changes. Answers are
never revised: a late reading changes the features of readings after it, which were already
answered (gold computes them again when the readings land).

Memory is bounded: a device holds the readings its features and its alarm rule can still read
(`horizon_s`), at most `max_devices` devices are held (the least recently heard from go first)
and a device not heard from for `idle_s` seconds is forgotten.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from firepipe.core.lake.standardise import MAX_CLOCK_SKEW_S
from firepipe.core.readings import CHANNELS
from firepipe.core.serving import online
from firepipe.core.serving.scoring import ServingModel
from firepipe.core.training.dataset import profile_name

# How far behind its device's newest reading a reading may arrive and still be scored: half of
# silver's longest filled gap, and longer than any reordering a message broker does.
LATE_S = 300
MAX_DEVICES = 10_000
IDLE_S = 3_600.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_SKEW = timedelta(seconds=MAX_CLOCK_SKEW_S)


class RejectedReadingsError(ValueError):
    """Readings the engine will not score (nothing of the request was applied)."""


@dataclass(frozen=True, slots=True)
class Reading:
    device_id: str
    ts: datetime  # aware
    values: dict[str, float]  # the channels sent with a value, by CHANNEL_NAMES' names
    ts_text: str  # as sent, echoed back


@dataclass(frozen=True, slots=True)
class Prediction:
    device_id: str
    ts: str
    score: float
    alarm: bool
    model_version: str


@dataclass(frozen=True)
class _Compiled:
    """What the engine derives from a model once: its feature plan and column order."""

    model: ServingModel
    plan: online.FeaturePlan
    columns: np.ndarray  # the plan's column of each of the detector's features
    keep_rows: int  # rows the alarm rule may walk back through
    points: dict[int, tuple[float, int]] = field(default_factory=dict)  # by channel bits

    @classmethod
    def of(cls, model: ServingModel) -> _Compiled:
        detector = model.detector
        plan = online.compile_plan(detector.require_feature_spec())
        columns = np.array([plan.names.index(n) for n in detector.feature_names], dtype=np.intp)
        persistence = [detector.persistence_s, *(p for _, p in detector.profile_points.values())]
        return cls(model, plan, columns, max(persistence) + 1)

    def point(self, seen: int) -> tuple[float, int]:
        if seen not in self.points:
            channels = [c.name for i, c in enumerate(CHANNELS) if seen >> i & 1]
            profile = profile_name(channels) if channels else None
            self.points[seen] = self.model.detector.operating_point(profile)
        return self.points[seen]


def _second(ts: datetime) -> int:
    """The reading's second since the epoch (floored, as silver floors it)."""
    return (ts - _EPOCH) // _SECOND


class ScoringEngine:
    def __init__(
        self,
        model: ServingModel,
        *,
        max_devices: int = MAX_DEVICES,
        idle_s: float = IDLE_S,
        late_s: int = LATE_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_devices < 1 or idle_s <= 0 or late_s < 0:
            raise ValueError("max_devices must be >= 1, idle_s > 0 and late_s >= 0")
        self._compiled = _Compiled.of(model)
        self._devices: OrderedDict[str, tuple[online.DeviceReadings, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_devices, self._idle_s, self._late_s = max_devices, idle_s, late_s
        self._clock, self._now = clock, now

    @property
    def model(self) -> ServingModel:
        return self._compiled.model

    @property
    def model_version(self) -> str:
        return self._compiled.model.version

    @property
    def devices(self) -> int:
        return len(self._devices)

    @property
    def horizon_s(self) -> int:
        """How far before its device's newest reading a reading is still held: what the
        features (or the alarm rule's persistence) of a reading `late_s` late read back."""
        compiled = self._compiled
        return max(compiled.plan.lookback_s, compiled.keep_rows - 1) + self._late_s

    def swap(self, model: ServingModel) -> None:
        """Serve `model` from the next request on; the devices' readings are kept (they are
        raw readings, whatever model reads them), their scores are the old model's."""
        compiled = _Compiled.of(model)
        with self._lock:
            self._compiled = compiled

    def score(self, readings: Sequence[Reading]) -> list[Prediction]:
        with self._lock:
            compiled = self._compiled
            seconds = self._check(readings)
            held = [self._held(r.device_id) for r in readings]
            rows = self._place(readings, seconds, held, compiled)
            scores = compiled.model.scorer.scores(rows)
            predictions = self._predict(readings, seconds, held, scores, compiled)
            # Only now: a reading later in the request may be older than one before it.
            for device in {id(d): d for d in held}.values():
                device.trim(self.horizon_s, compiled.keep_rows)
            return predictions

    def _check(self, readings: Sequence[Reading]) -> list[int]:
        """Each reading's second; RejectedReadingsError for the first that cannot be scored."""
        latest = self._now() + _SKEW
        newest: dict[str, int] = {}
        seconds = []
        for position, reading in enumerate(readings):
            problem = _range_problem(reading.values)
            if problem is None and reading.ts > latest:
                problem = f"ts {reading.ts_text} is after now + {MAX_CLOCK_SKEW_S:g} s"
            second = _second(reading.ts)
            device = reading.device_id
            if device not in newest:
                held = self._devices.get(device)
                newest[device] = -(2**62) if held is None else held[0].newest or -(2**62)
            if problem is None and second < newest[device] - self._late_s:
                problem = (
                    f"ts {reading.ts_text} is {newest[device] - second} s before the device's "
                    f"newest reading: readings more than {self._late_s} s late are not scored "
                    "online (gold scores them once they land)"
                )
            if problem is not None:
                raise RejectedReadingsError(f"reading {position} (device {device!r}): {problem}")
            newest[device] = max(newest[device], second)
            seconds.append(second)
        return seconds

    def _held(self, device: str) -> online.DeviceReadings:
        now = self._clock()
        entry = self._devices.pop(device, None)
        readings = online.DeviceReadings() if entry is None else entry[0]
        self._devices[device] = (readings, now)
        while len(self._devices) > self._max_devices:
            self._devices.popitem(last=False)
        while self._devices:
            oldest, (_, heard) = next(iter(self._devices.items()))
            if heard >= now - self._idle_s:
                break
            del self._devices[oldest]
        return readings

    def _place(
        self,
        readings: Sequence[Reading],
        seconds: list[int],
        held: list[online.DeviceReadings],
        compiled: _Compiled,
    ) -> np.ndarray:
        """Place every reading and compute its features: the model's input rows."""
        plan = compiled.plan
        features = np.empty(len(plan.names), dtype=np.float32)
        rows = np.empty((len(readings), compiled.columns.size), dtype=np.float64)
        values = np.empty(len(CHANNELS), dtype=np.float32)
        for k, (reading, second, device) in enumerate(zip(readings, seconds, held, strict=True)):
            values.fill(np.nan)
            for name, value in reading.values.items():
                index = online.CHANNEL_INDEX[name]
                values[index] = value
                device.seen |= 1 << index
            row = device.place(second, values)
            device.scores[row] = np.nan  # not scored yet
            online.point_features(device.ts, device.x, row, plan.ops, plan.params, features)
            rows[k] = features[compiled.columns]
        return rows

    def _predict(
        self,
        readings: Sequence[Reading],
        seconds: list[int],
        held: list[online.DeviceReadings],
        scores: np.ndarray,
        compiled: _Compiled,
    ) -> list[Prediction]:
        version = compiled.model.version
        predictions = []
        for reading, second, device, score in zip(
            readings, seconds, held, scores.tolist(), strict=True
        ):
            row = int(np.searchsorted(device.ts[: device.n], second))
            device.scores[row] = score
            threshold, persistence_s = compiled.point(device.seen)
            alarm = (
                score >= threshold
                and _held_s(device, row, threshold, persistence_s) >= persistence_s
            )
            predictions.append(
                Prediction(reading.device_id, reading.ts_text, score, alarm, version)
            )
        return predictions


def _held_s(device: online.DeviceReadings, row: int, threshold: float, enough_s: int) -> int:
    """Seconds the device's scores have stayed >= threshold up to `row`, whose score is: back
    to the first of the unbroken run of such scores, or `enough_s` when it is at least that.
    A row not scored yet (NaN: a reading later in this request, earlier in time) had not
    arrived when `row` did, so it is passed."""
    first = row
    t = device.ts[row]
    for k in range(row - 1, -1, -1):
        if t - device.ts[first] >= enough_s:
            break
        score = device.scores[k]
        if score != score:
            continue
        if score < threshold:
            break
        first = k
    return int(device.ts[row] - device.ts[first])


def _range_problem(values: dict[str, float]) -> str | None:
    for channel in CHANNELS:
        value = values.get(channel.name)
        if value is not None and not (channel.min_value <= value <= channel.max_value):
            shown = "NaN" if math.isnan(value) else f"{value:g}"
            return f"{channel.name}={shown} outside [{channel.min_value:g}, {channel.max_value:g}]"
    return None
