"""Online features: gold's features of one reading, from the device's recent readings.

A device's readings are held as silver would hold them: floored to the second, one per second
(the last write wins), sorted by time. Gold's features of a reading look back a bounded time
(`lookback_s`: the longest window or lag of the spec), and its windows trail the reading, so the
features of a reading need only the readings of the `lookback_s` seconds before it, and a
reading that arrives later than others (out of order) is computed from what came before it in
time, exactly as gold computes it. Gap rows hold no values and no feature sees them, so the
buffer needs none.

`point_features` computes one reading's features directly from its window (two-pass sums in
float64, then float32 as gold stores them), the semantics of `spec.reference_features`; the
parity tests hold it to gold's `compute_features` to 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firepipe.core.features.kernels import compiled
from firepipe.core.features.spec import (
    Difference,
    FeatureSpec,
    RateOfRise,
    Ratio,
    Rise,
    Rolling,
    SmokeHeatLag,
)
from firepipe.core.readings import CHANNEL_NAMES

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Operation codes of a compiled spec (one row of `FeaturePlan.ops` per feature).
_MEAN, _STD, _MAX, _MIN, _CHANGE, _RISE, _RATIO, _LAG = range(8)
_STATISTIC_OPS = {"mean": _MEAN, "std": _STD, "max": _MAX, "min": _MIN}
CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNEL_NAMES)}


@dataclass(frozen=True)
class FeaturePlan:
    """A feature spec as arrays the kernel reads: per feature (op, channel, other channel,
    seconds, more seconds) and (factor or threshold, other threshold)."""

    names: tuple[str, ...]
    ops: I64
    params: F64
    lookback_s: int


def lookback_s(spec: FeatureSpec) -> int:
    """How many seconds before a reading its features read: a window of w seconds reads back
    w - 1, a lag of l seconds reads back l."""
    back = 0
    for f in spec.features:
        if isinstance(f, Rolling):
            back = max(back, f.window_s - 1)
        elif isinstance(f, Difference | RateOfRise):
            back = max(back, f.lag_s)
        elif isinstance(f, Rise):
            back = max(back, f.baseline_s - 1)
        elif isinstance(f, SmokeHeatLag):
            back = max(back, f.window_s - 1 + f.rise_lag_s)
    return back


def compile_plan(spec: FeatureSpec) -> FeaturePlan:
    ops = np.zeros((len(spec.features), 5), dtype=np.int64)
    params = np.zeros((len(spec.features), 2), dtype=np.float64)
    for i, f in enumerate(spec.features):
        if isinstance(f, Rolling):
            ops[i] = (_STATISTIC_OPS[f.statistic], CHANNEL_INDEX[f.channel], 0, f.window_s, 0)
        elif isinstance(f, Difference):
            ops[i] = (_CHANGE, CHANNEL_INDEX[f.channel], 0, f.lag_s, 0)
            params[i, 0] = 1.0
        elif isinstance(f, RateOfRise):
            ops[i] = (_CHANGE, CHANNEL_INDEX[f.channel], 0, f.lag_s, 0)
            params[i, 0] = 60.0 / f.lag_s
        elif isinstance(f, Rise):
            ops[i] = (_RISE, CHANNEL_INDEX[f.channel], 0, f.window_s, f.baseline_s)
        elif isinstance(f, Ratio):
            ops[i] = (_RATIO, CHANNEL_INDEX[f.numerator], CHANNEL_INDEX[f.denominator], 0, 0)
        else:
            smoke, heat = CHANNEL_INDEX[f.smoke_channel], CHANNEL_INDEX[f.heat_channel]
            ops[i] = (_LAG, smoke, heat, f.window_s, f.rise_lag_s)
            params[i] = (f.smoke_rise, f.heat_rise)
    return FeaturePlan(spec.names, ops, params, lookback_s(spec))


@compiled
def _first_after(ts: I64, end: int, t: int) -> int:
    """The first row in ts[:end] (sorted) with ts > t."""
    return int(np.searchsorted(ts[:end], t, side="right"))


@compiled
def _at(ts: I64, end: int, t: int) -> int:
    """The row in ts[:end] at exactly t, else -1."""
    k = int(np.searchsorted(ts[:end], t, side="left"))
    return k if k < end and ts[k] == t else -1


@compiled
def _mean(x: F32, channel: int, begin: int, end: int) -> float:
    n, total = 0, 0.0
    for k in range(begin, end):
        v = np.float64(x[k, channel])
        if v == v:
            n += 1
            total += v
    return total / n if n else np.nan


@compiled
def _onset(ts: I64, x: F32, channel: int, begin: int, end: int, lag: int, rise: float) -> int:
    """The first row in [begin, end) whose change over `lag` seconds reached `rise`, else -1."""
    for k in range(begin, end):
        j = _at(ts, k, ts[k] - lag)
        if j >= 0 and np.float64(x[k, channel]) - np.float64(x[j, channel]) >= rise:
            return k
    return -1


@compiled
def point_features(ts: I64, x: F32, row: int, ops: I64, params: F64, out: F32) -> None:
    """The features of reading `row` (ts: int64 seconds, sorted, distinct; x: its channels,
    NaN where null; rows after `row` are not read), NaN where null."""
    t = ts[row]
    end = row + 1
    for i in range(ops.shape[0]):
        op, a, b, s1, s2 = ops[i, 0], ops[i, 1], ops[i, 2], ops[i, 3], ops[i, 4]
        value = np.nan
        if op <= _MIN:
            begin = _first_after(ts, end, t - s1)
            if op == _MEAN:
                value = _mean(x, a, begin, end)
            elif op == _STD:
                mean = _mean(x, a, begin, end)
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
                    if v == v and (best != best or (v > best if op == _MAX else v < best)):
                        best = v
                value = best
        elif op == _CHANGE:
            j = _at(ts, end, t - s1)
            if j >= 0:
                value = (np.float64(x[row, a]) - np.float64(x[j, a])) * params[i, 0]
        elif op == _RISE:
            short = _mean(x, a, _first_after(ts, end, t - s1), end)
            value = short - _mean(x, a, _first_after(ts, end, t - s2), end)
        elif op == _RATIO:
            den = np.float64(x[row, b])
            if den != 0:
                value = np.float64(x[row, a]) / den
        else:
            begin = _first_after(ts, end, t - s1)
            smoke = _onset(ts, x, a, begin, end, s2, params[i, 0])
            heat = _onset(ts, x, b, begin, end, s2, params[i, 1])
            if smoke >= 0 and heat >= 0:
                value = np.float64(ts[heat] - ts[smoke])
        out[i] = value


class DeviceReadings:
    """One device's recent readings as silver holds them (one per second, sorted), with the
    score each got and the channels the device has reported since it was first held."""

    __slots__ = ("n", "scores", "seen", "ts", "x")

    def __init__(self, capacity: int = 64) -> None:
        self.ts: I64 = np.empty(capacity, dtype=np.int64)
        self.x: F32 = np.empty((capacity, len(CHANNEL_NAMES)), dtype=np.float32)
        self.scores: F64 = np.empty(capacity, dtype=np.float64)
        self.n = 0
        self.seen = 0  # bit i: CHANNEL_NAMES[i] has had a value

    @property
    def newest(self) -> int | None:
        return int(self.ts[self.n - 1]) if self.n else None

    def place(self, second: int, values: F32) -> int:
        """Hold the reading at `second` (values: every channel, NaN where not sent) and return
        its row; a reading already held at that second is replaced (the last write wins)."""
        n = self.n
        row = n if n == 0 or second > self.ts[n - 1] else int(np.searchsorted(self.ts[:n], second))
        if row < n and self.ts[row] == second:
            self.x[row] = values
            return row
        if n == self.ts.size:
            self._grow()
        if row < n:  # out of order: make room
            self.ts[row + 1 : n + 1] = self.ts[row:n]
            self.x[row + 1 : n + 1] = self.x[row:n]
            self.scores[row + 1 : n + 1] = self.scores[row:n]
        self.ts[row] = second
        self.x[row] = values
        self.n = n + 1
        return row

    def trim(self, horizon_s: int, keep_rows: int) -> None:
        """Forget readings more than `horizon_s` seconds before the newest (one exactly that far
        back stays), keeping at least the last `keep_rows` whatever their age."""
        if not self.n:
            return
        drop = int(np.searchsorted(self.ts[: self.n], self.ts[self.n - 1] - horizon_s, "left"))
        drop = min(drop, max(0, self.n - keep_rows))
        if drop:
            kept = self.n - drop
            self.ts[:kept] = self.ts[drop : self.n]
            self.x[:kept] = self.x[drop : self.n]
            self.scores[:kept] = self.scores[drop : self.n]
            self.n = kept

    def _grow(self) -> None:
        capacity = 2 * self.ts.size
        for name in ("ts", "x", "scores"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)
