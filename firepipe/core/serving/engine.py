"""The scoring engine behind the inference service: raw readings in, one prediction each out.

Each reading joins its device's recent readings (`online.DeviceReadings`), gets gold's features
(`online.features`), is scored by the model's scorer and alarms by the rule evaluation and the
real-fire replay use (`evaluation.alarm_sounding`): the score has stayed at or above the
threshold of the device's operating point for `persistence_s` seconds. A device's operating
point is that of its channel profile: the channels it was declared to have (`profiles`, e.g. a
replayed NIST station's instruments), else the channels it has reported since the engine first
held it (a device that never sends CO has no CO sensor). A prediction is `warm` once the
device's held readings cover the features' lookback (a device learned recently, e.g. after a
worker restart, has partial windows).

A reading silver would quarantine (a value outside its channel's range, a time in the future)
or one too late to score online refuses the whole request before anything changes. Answers are
never revised: a late reading changes the features of readings after it, which were already
answered (gold computes them again when the readings land).

A device's readings that arrive in increasing time after its newest (the common case) are
placed and featurised in one kernel call; others (out of order, a second sent twice) one by
one, each from what had arrived before it. Both give the same numbers.

Readings come in columns (`score_columns`: the service's bodies, the agents' messages; no
Python object per reading on the way in or out) or as `Reading` objects (`score`, put in
columns and scored by the same code).

Memory is bounded: a device holds the readings its features and its alarm rule can still read
(`horizon_s`), at most `max_devices` devices are held (the least recently heard from go first)
and a device not heard from for `idle_s` seconds is forgotten.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from firepipe.core.lake.standardise import MAX_CLOCK_SKEW_S
from firepipe.core.readings import CHANNEL_NAMES, CHANNELS
from firepipe.core.serving import online
from firepipe.core.serving.scoring import ServingModel
from firepipe.core.training.dataset import profile_name

# How far behind its device's newest reading a reading may arrive and still be scored: half of
# silver's longest filled gap, and longer than any reordering a message broker does.
LATE_S = 300
MAX_DEVICES = 10_000
IDLE_S = 3_600.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_US_PER_S = 1_000_000
_SKEW = timedelta(seconds=MAX_CLOCK_SKEW_S)
_LOW = np.array([c.min_value for c in CHANNELS])
_HIGH = np.array([c.max_value for c in CHANNELS])
_NEVER = -(2**62)
_NO_ROWS = np.empty(0, dtype=np.int64)


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
    threshold: float  # of the operating point the alarm was decided at
    warm: bool  # the device's held readings cover the features' lookback


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware time, exactly."""
    return (moment - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class ReadingColumns:
    """Readings in columns, as the engine scores them: reading i is `device_id[i]`'s at
    `ts_us[i]` (`ts_text[i]` as sent) with `values[i]` by `online.CHANNEL_INDEX`, NaN where a
    channel was not sent. `problems`: by position, what makes a reading unscoreable that the
    values cannot show (an unknown channel, a NaN sent), in `_range_problem`'s words."""

    device_id: list[str]
    ts_text: list[str]
    ts_us: online.I64
    values: online.F64  # (n, N_CHANNELS)
    problems: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.device_id)
        if not (len(self.ts_text) == self.ts_us.size == n == self.values.shape[0]):
            raise ValueError("reading columns of different lengths")
        if self.values.shape[1:] != (online.N_CHANNELS,):
            raise ValueError(f"values must be (n, {online.N_CHANNELS}), got {self.values.shape}")

    def __len__(self) -> int:
        return len(self.device_id)

    @classmethod
    def of(cls, readings: Sequence[Reading]) -> ReadingColumns:
        index, width = online.CHANNEL_INDEX, online.N_CHANNELS
        flat = [math.nan] * (len(readings) * width)
        problems = {}
        for position, reading in enumerate(readings):
            base = position * width
            for name, value in reading.values.items():
                if name not in index or value != value:
                    problems[position] = _range_problem(reading.values) or f"{name}={value!r}"
                    break
                flat[base + index[name]] = value
        return cls(
            [r.device_id for r in readings],
            [r.ts_text for r in readings],
            np.array([epoch_us(r.ts) for r in readings], dtype=np.int64),
            np.array(flat, dtype=np.float64).reshape(len(readings), width),
            problems,
        )

    @classmethod
    def concat(cls, parts: Sequence[ReadingColumns]) -> ReadingColumns:
        """The readings of `parts`, one after another."""
        problems: dict[int, str] = {}
        offset = 0
        for part in parts:
            problems |= {offset + k: problem for k, problem in part.problems.items()}
            offset += len(part)
        return cls(
            [d for part in parts for d in part.device_id],
            [t for part in parts for t in part.ts_text],
            np.concatenate([part.ts_us for part in parts]),
            np.concatenate([part.values for part in parts]).reshape(offset, online.N_CHANNELS),
            problems,
        )


@dataclass(frozen=True)
class Scored:
    """Predictions in columns: the reading at `positions[k]` among those sent was scored
    `score[k]`, and so on (see `Prediction`)."""

    positions: online.I64
    device_id: list[str]
    ts_text: list[str]
    ts_us: online.I64
    score: online.F64
    alarm: npt.NDArray[np.bool_]
    threshold: online.F64
    warm: npt.NDArray[np.bool_]
    model_version: str

    def __len__(self) -> int:
        return len(self.device_id)

    def predictions(self) -> list[Prediction]:
        version = self.model_version
        return [
            Prediction(d, t, s, a, version, h, w)
            for d, t, s, a, h, w in zip(
                self.device_id,
                self.ts_text,
                self.score.tolist(),
                self.alarm.tolist(),
                self.threshold.tolist(),
                self.warm.tolist(),
                strict=True,
            )
        ]


@dataclass(frozen=True)
class _Compiled:
    """What the engine derives from a model once: its feature plan and column order."""

    model: ServingModel
    plan: online.FeaturePlan
    columns: npt.NDArray[np.int64]  # the plan's column of each of the detector's features
    keep_rows: int  # rows the alarm rule may walk back through
    points: dict[int, tuple[float, int]] = field(default_factory=dict)  # by channel bits

    @classmethod
    def of(cls, model: ServingModel) -> _Compiled:
        detector = model.detector
        plan = online.compile_plan(detector.require_feature_spec())
        columns = np.array([plan.names.index(n) for n in detector.feature_names], dtype=np.int64)
        persistence = [detector.persistence_s, *(p for _, p in detector.profile_points.values())]
        return cls(model, plan, columns, max(persistence) + 1)

    @property
    def kernel_plan(self) -> tuple[online.I64, online.F64, online.I64]:
        return self.plan.ops, self.plan.params, self.plan.spans

    def point(self, channels: int) -> tuple[float, int]:
        """(threshold, persistence_s) of the channel profile with these bits."""
        if channels not in self.points:
            names = [c.name for i, c in enumerate(CHANNELS) if channels >> i & 1]
            profile = profile_name(names) if names else None
            self.points[channels] = self.model.detector.operating_point(profile)
        return self.points[channels]


class _Group:
    """A device's readings in a request: their indices among the readings scored (`index`),
    whether they come in increasing time after the device's newest, and once placed their
    rows."""

    __slots__ = ("index", "ordered", "rows")

    def __init__(self, index: online.I64, ordered: bool) -> None:
        self.index, self.ordered = index, ordered
        self.rows = _NO_ROWS


@dataclass
class _Request:
    """Checked readings: those to score (their positions among those sent), their seconds and
    channels (NaN where not sent), by device."""

    columns: ReadingColumns
    positions: online.I64
    seconds: online.I64
    values: online.F32
    devices: dict[str, _Group]


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

    def score(
        self, readings: Sequence[Reading], profiles: Mapping[str, Collection[str]] | None = None
    ) -> list[Prediction]:
        """One prediction per reading, in order. `profiles`: by device, the channels it has
        (e.g. a replayed station's instruments), its channel profile from its first reading on
        and until declared again; a device never declared has the channels it has sent."""
        return self.score_columns(ReadingColumns.of(readings), profiles).predictions()

    def score_columns(
        self,
        readings: ReadingColumns,
        profiles: Mapping[str, Collection[str]] | None = None,
        *,
        skip_late: bool = False,
    ) -> Scored:
        """`score` of readings in columns, the predictions in columns: no Python object per
        reading on the way. With `skip_late`, readings more than `late_s` behind their
        device's newest are left to gold instead of refusing the request (`positions` says
        which were scored)."""
        with self._lock:
            compiled = self._compiled
            declared = _declared(profiles or {})
            request = self._check(readings, skip_late)
            held = self._held(request)
            for device_id, bits in declared.items():
                if device_id in held:
                    held[device_id].declared = bits
            rows = self._place(request, held, compiled)
            scores = compiled.model.scorer.scores(rows)
            scored = self._predict(request, held, scores, compiled)
            # Only now: a reading later in the request may be older than one before it.
            horizon_s = self.horizon_s
            for device in held.values():
                device.trim(horizon_s, compiled.keep_rows)
            return scored

    def _check(self, readings: ReadingColumns, skip_late: bool) -> _Request:
        """The readings to score, grouped by device; RejectedReadingsError for the first that
        cannot be scored (`_refusal` words it: this only notices that one may exist)."""
        latest_us = epoch_us(self._now() + _SKEW)
        seconds = readings.ts_us // _US_PER_S
        values, _, outside = online.screen(readings.values, _LOW, _HIGH)
        suspect = bool(readings.problems) or outside or bool((readings.ts_us > latest_us).any())
        codes: dict[str, int] = {}
        code = np.array(
            [codes.setdefault(d, len(codes)) for d in readings.device_id], dtype=np.int64
        )
        newest = np.array([self._newest(d) for d in codes], dtype=np.int64)
        # By device, in the order sent: every device's readings after its newest and in
        # increasing time (the common case) need no reading-by-reading look.
        order = np.argsort(code, kind="stable")
        by_device, in_seconds = code[order], seconds[order]
        starts = np.flatnonzero(np.diff(by_device, prepend=-1))
        later = np.diff(in_seconds) > 0
        same = by_device[1:] == by_device[:-1]
        if bool((in_seconds[starts] > newest).all()) and bool(later[same].all()):
            positions = np.arange(len(readings), dtype=np.int64)
            bounds = [*starts.tolist(), len(readings)]
            groups = {
                device: _Group(order[bounds[k] : bounds[k + 1]], True)
                for k, device in enumerate(codes)
            }
        else:
            positions, groups, late = self._sorted_out(readings, seconds, newest, codes)
            suspect |= late and not skip_late
        if suspect:
            error = self._refusal(readings, latest_us, skip_late)
            if error is not None:
                raise error
        if positions.size < len(readings):
            values, seconds = values[positions], seconds[positions]
        return _Request(readings, positions, seconds, values, groups)

    def _sorted_out(
        self,
        readings: ReadingColumns,
        seconds: online.I64,
        newest_of: online.I64,
        codes: Mapping[str, int],
    ) -> tuple[online.I64, dict[str, _Group], bool]:
        """Reading by reading: those to score and their groups, and whether one is too
        late (more than `late_s` behind its device's newest before it)."""
        newest = newest_of.tolist()
        ordered = [True] * len(codes)
        at: list[list[int]] = [[] for _ in codes]
        positions: list[int] = []
        late = False
        for position, (device_id, second) in enumerate(
            zip(readings.device_id, seconds.tolist(), strict=True)
        ):
            k = codes[device_id]
            if second < newest[k] - self._late_s:
                late = True
                continue
            if second > newest[k]:
                newest[k] = second
            else:
                ordered[k] = False
            at[k].append(len(positions))
            positions.append(position)
        groups = {
            device: _Group(np.array(at[k], dtype=np.int64), ordered[k])
            for device, k in codes.items()
            if at[k]
        }
        return np.array(positions, dtype=np.int64), groups, late

    def _refusal(
        self, readings: ReadingColumns, latest_us: int, skip_late: bool
    ) -> RejectedReadingsError | None:
        """The refusal of the first reading that cannot be scored, if any, reading by
        reading: a value out of range (or of an unknown channel), then a time in the future,
        then too late (unless `skip_late`)."""
        newest: dict[str, int] = {}
        for position, device in enumerate(readings.device_id):
            ts_us, ts_text = int(readings.ts_us[position]), readings.ts_text[position]
            problem = readings.problems.get(position) or _row_problem(readings.values[position])
            if problem is None and ts_us > latest_us:
                problem = f"ts {ts_text} is after now + {MAX_CLOCK_SKEW_S:g} s"
            second = ts_us // _US_PER_S
            if device not in newest:
                newest[device] = self._newest(device)
            if problem is None and second < newest[device] - self._late_s:
                if skip_late:
                    continue
                problem = (
                    f"ts {ts_text} is {newest[device] - second} s before the device's "
                    f"newest reading: readings more than {self._late_s} s late are not scored "
                    "online (gold scores them once they land)"
                )
            if problem is not None:
                return RejectedReadingsError(f"reading {position} (device {device!r}): {problem}")
            newest[device] = max(newest[device], second)
        return None

    def _newest(self, device: str) -> int:
        entry = self._devices.get(device)
        newest = None if entry is None else entry[0].newest
        return _NEVER if newest is None else newest

    def _held(self, request: _Request) -> dict[str, online.DeviceReadings]:
        """The request's devices' readings, the devices now the most recently heard from (in
        the order of their last reading); the devices over `max_devices` or idle go."""
        now = self._clock()
        held = {}
        groups = request.devices
        for device in sorted(groups, key=lambda d: int(groups[d].index[-1])):
            entry = self._devices.pop(device, None)
            first = int(request.seconds[groups[device].index[0]])
            held[device] = online.DeviceReadings(first) if entry is None else entry[0]
            self._devices[device] = (held[device], now)
        while len(self._devices) > self._max_devices:
            self._devices.popitem(last=False)
        while self._devices:
            oldest, (_, heard) = next(iter(self._devices.items()))
            if heard >= now - self._idle_s:
                break
            del self._devices[oldest]
        return held

    def _place(
        self, request: _Request, held: Mapping[str, online.DeviceReadings], compiled: _Compiled
    ) -> npt.NDArray[np.float64]:
        """Place every reading and compute its features: the model's input rows."""
        rows = np.empty((request.positions.size, compiled.columns.size), dtype=np.float64)
        plan = compiled.kernel_plan
        columns = compiled.columns
        for device_id, group in request.devices.items():
            device, at = held[device_id], group.index
            if group.ordered:
                group.rows = device.append(request.seconds[at], request.values[at])
                device.seen = online.features(
                    device.ts, device.x, group.rows, device.seen, plan, columns, rows, at
                )
                continue
            for k in range(at.size):  # each from the readings that had arrived before it
                row = device.place(int(request.seconds[at[k]]), request.values[at[k]])
                one, to = np.array([row], dtype=np.int64), at[k : k + 1]
                device.seen = online.features(
                    device.ts, device.x, one, device.seen, plan, columns, rows, to
                )
            group.rows = np.searchsorted(device.ts[: device.n], request.seconds[at])
        return rows

    def _predict(
        self,
        request: _Request,
        held: Mapping[str, online.DeviceReadings],
        scores: npt.NDArray[np.float64],
        compiled: _Compiled,
    ) -> Scored:
        n = request.positions.size
        alarm, warm = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.bool_)
        threshold = np.empty(n, dtype=np.float64)
        lookback_s = compiled.plan.lookback_s
        for device_id, group in request.devices.items():
            device = held[device_id]
            at_threshold, persistence_s = compiled.point(device.declared or device.seen)
            rule = (at_threshold, persistence_s, device.first + lookback_s)
            online.outcomes(
                device.ts, device.scores, group.rows, group.index, rule, scores, alarm, warm
            )
            threshold[group.index] = at_threshold
        columns, positions = request.columns, request.positions
        if n == len(columns):
            device_ids, texts, ts_us = columns.device_id, columns.ts_text, columns.ts_us
        else:
            kept = positions.tolist()
            device_ids = [columns.device_id[p] for p in kept]
            texts = [columns.ts_text[p] for p in kept]
            ts_us = columns.ts_us[positions]
        version = compiled.model.version
        return Scored(positions, device_ids, texts, ts_us, scores, alarm, threshold, warm, version)


def _declared(profiles: Mapping[str, Collection[str]]) -> dict[str, int]:
    """The channel bits of each declared profile; RejectedReadingsError for a bad one."""
    bits = {}
    for device, channels in profiles.items():
        names = {channels} if isinstance(channels, str) else set(channels)
        unknown = sorted(names - online.CHANNEL_INDEX.keys())
        if unknown or not names:
            problem = f"unknown channel(s) {unknown}" if unknown else "no channels"
            raise RejectedReadingsError(
                f"profile of device {device!r}: {problem}; known: {', '.join(CHANNEL_NAMES)}"
            )
        bits[device] = sum(1 << online.CHANNEL_INDEX[name] for name in names)
    return bits


def _row_problem(row: online.F64) -> str | None:
    """`_range_problem` of a reading's values in columns (NaN: not sent)."""
    return _range_problem(
        {name: float(row[k]) for name, k in online.CHANNEL_INDEX.items() if row[k] == row[k]}
    )


def _range_problem(values: Mapping[str, float]) -> str | None:
    unknown = sorted(values.keys() - online.CHANNEL_INDEX.keys())
    if unknown:
        return f"unknown channel(s) {unknown}"
    for channel in CHANNELS:
        value = values.get(channel.name)
        if value is not None and not (channel.min_value <= value <= channel.max_value):
            shown = "NaN" if math.isnan(value) else f"{value:g}"
            return f"{channel.name}={shown} outside [{channel.min_value:g}, {channel.max_value:g}]"
    return None
