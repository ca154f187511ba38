"""Online features: gold's features of one reading, from the device's recent readings.

A device's readings are held as silver would hold them: floored to the second, one per second
(the last write wins), sorted by time. Gold's features of a reading look back a bounded time
(`lookback_s`: the longest window or lag of the spec), and its windows trail the reading, so the
features of a reading need only the readings of the `lookback_s` seconds before it, and a
reading that arrives later than others (out of order) is computed from what came before it in
time, exactly as gold computes it. Gap rows hold no values and no feature sees them, so the
buffer needs none.

`features` computes readings' features directly from their windows (two-pass sums in float64,
then float32 as gold stores them), the semantics of `spec.reference_features`; the parity tests
hold it to gold's `compute_features` to 1e-6. A window's statistics are computed once per
reading and every feature on it reads them; the sums of a channel run in time order (the
rounding gold's parity and the engine's answers rest on), four channels side by side; where a
smoke-heat lag's smoke and heat rose is found once per call for all its readings.
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

# Operation codes of a compiled spec (one row of `FeaturePlan.ops` per feature); a statistic's
# code is also its row in a span's statistics.
_MEAN, _STD, _MAX, _MIN, _CHANGE, _RISE, _RATIO, _LAG = range(8)
_STATISTIC_OPS = {"mean": _MEAN, "std": _STD, "max": _MAX, "min": _MIN}
CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNEL_NAMES)}
N_CHANNELS = len(CHANNEL_NAMES)
# A span's statistics beyond mean and max, asked for only where a feature reads them.
_WANTS_STD, _WANTS_MIN = 1 << _STD, 1 << _MIN


@dataclass(frozen=True)
class FeaturePlan:
    """A feature spec as arrays the kernel reads. Per feature, `ops`: op, channel, other
    channel, seconds, more seconds, span, and a rise's baseline span or a smoke-heat lag's
    number among the lags; `params`: factor or threshold, other threshold. Per span (a
    distinct stretch of seconds some feature reads back: a window of w seconds, or a lag of l
    seconds as the window of l + 1 whose first second it reads), `spans`: seconds, the bits of
    the channels whose statistics it needs, the bits of the statistics (1 << op)."""

    names: tuple[str, ...]
    ops: I64
    params: F64
    spans: I64
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
    ops = np.zeros((len(spec.features), 7), dtype=np.int64)
    params = np.zeros((len(spec.features), 2), dtype=np.float64)
    spans: dict[int, list[int]] = {}  # seconds -> [channel bits, statistic bits]

    def span(seconds: int, channel: int = -1, op: int = _MEAN) -> int:
        entry = spans.setdefault(seconds, [0, 0])
        if channel >= 0:
            entry[0] |= 1 << channel
            entry[1] |= 1 << op
        return list(spans).index(seconds)

    for i, f in enumerate(spec.features):
        if isinstance(f, Rolling):
            op, a = _STATISTIC_OPS[f.statistic], CHANNEL_INDEX[f.channel]
            ops[i] = (op, a, 0, f.window_s, 0, span(f.window_s, a, op), 0)
        elif isinstance(f, Difference | RateOfRise):
            ops[i] = (_CHANGE, CHANNEL_INDEX[f.channel], 0, f.lag_s, 0, span(f.lag_s + 1), 0)
            params[i, 0] = 1.0 if isinstance(f, Difference) else 60.0 / f.lag_s
        elif isinstance(f, Rise):
            a = CHANNEL_INDEX[f.channel]
            short, base = span(f.window_s, a), span(f.baseline_s, a)
            ops[i] = (_RISE, a, 0, f.window_s, f.baseline_s, short, base)
        elif isinstance(f, Ratio):
            ops[i] = (_RATIO, CHANNEL_INDEX[f.numerator], CHANNEL_INDEX[f.denominator], 0, 0, 0, 0)
        else:
            smoke, heat = CHANNEL_INDEX[f.smoke_channel], CHANNEL_INDEX[f.heat_channel]
            lag = int((ops[:i, 0] == _LAG).sum())  # its onsets' row in the kernel
            ops[i] = (_LAG, smoke, heat, f.window_s, f.rise_lag_s, span(f.window_s), lag)
            params[i] = (f.smoke_rise, f.heat_rise)
    table = np.array([(s, *e) for s, e in spans.items()], dtype=np.int64).reshape(-1, 3)
    return FeaturePlan(spec.names, ops, params, table, lookback_s(spec))


@compiled
def _first_after(ts: I64, end: int, t: int) -> int:
    """The first row in ts[:end] (sorted) with ts > t."""
    return int(np.searchsorted(ts[:end], t, side="right"))


@compiled
def _add(
    acc: tuple[int, float, float, float], v: float, low: bool
) -> tuple[int, float, float, float]:
    """A reading into (count, sum, max, min if `low`) of a channel: NaN (null) counts for
    nothing; sums from 0.0 are never -0.0, so adding 0.0 leaves them as they were; max and min
    start at -inf and inf and keep the first of equal values."""
    n, total, high, least = acc
    present = v == v
    return (
        n + present,
        total + (v if present else 0.0),
        v if v > high else high,
        v if low and v < least else least,
    )


@compiled
def _sums4(
    x: F32, begin: int, end: int, channels: I64, low: bool
) -> tuple[tuple[int, float, float, float], ...]:
    """`_add` over rows [begin, end) of four channels; inlined with `low` a constant, the min
    costs nothing where no feature wants it."""
    c0, c1, c2, c3 = channels[0], channels[1], channels[2], channels[3]
    a0 = a1 = a2 = a3 = (0, 0.0, -np.inf, np.inf)
    for k in range(begin, end):
        a0 = _add(a0, np.float64(x[k, c0]), low)
        a1 = _add(a1, np.float64(x[k, c1]), low)
        a2 = _add(a2, np.float64(x[k, c2]), low)
        a3 = _add(a3, np.float64(x[k, c3]), low)
    return a0, a1, a2, a3


@compiled
def _square(m2: float, v: float, mean: float) -> float:
    return m2 + ((v - mean) * (v - mean) if v == v else 0.0)


@compiled
def _stats4(x: F32, begin: int, end: int, channels: I64, wants: int, out: F64) -> None:
    """Mean, max, and std and min where `wants` asks for them, of four channels (repeat one to
    have fewer) over rows [begin, end) into out[statistic, channel], which holds NaN: a channel
    without a reading keeps it, as does a std of fewer than two. Each channel's sums run over
    the rows in order, as gold's reference sums them; four channels side by side keep the core
    busy."""
    c0, c1, c2, c3 = channels[0], channels[1], channels[2], channels[3]
    if wants & _WANTS_MIN:
        a0, a1, a2, a3 = _sums4(x, begin, end, channels, True)
    else:
        a0, a1, a2, a3 = _sums4(x, begin, end, channels, False)
    m0, m1, m2, m3 = _put(out, c0, a0), _put(out, c1, a1), _put(out, c2, a2), _put(out, c3, a3)
    if not wants & _WANTS_STD:
        return
    q0 = q1 = q2 = q3 = 0.0
    for k in range(begin, end):
        q0 = _square(q0, np.float64(x[k, c0]), m0)
        q1 = _square(q1, np.float64(x[k, c1]), m1)
        q2 = _square(q2, np.float64(x[k, c2]), m2)
        q3 = _square(q3, np.float64(x[k, c3]), m3)
    _put_std(out, c0, a0[0], q0)
    _put_std(out, c1, a1[0], q1)
    _put_std(out, c2, a2[0], q2)
    _put_std(out, c3, a3[0], q3)


@compiled
def _put(out: F64, c: int, acc: tuple[int, float, float, float]) -> float:
    """Channel c's mean, max and min into `out` (kept NaN without a reading); its mean."""
    n, total, high, low = acc
    if not n:
        return np.nan
    mean = total / n
    out[_MEAN, c], out[_MAX, c], out[_MIN, c] = mean, high, low
    return mean


@compiled
def _put_std(out: F64, c: int, n: int, m2: float) -> None:
    if n >= 2:
        out[_STD, c] = np.sqrt(m2 / (n - 1))


@compiled
def _onsets(ts: I64, x: F32, lo: int, hi: int, op: I64, param: F64, out: I64) -> None:
    """For rows k in [lo, hi]: out[0 | 1, k - lo] = the first row in [k, hi] at which smoke |
    heat rose (their change over the lag reached their thresholds), hi + 1 where none. Whether
    a row rose reads only it and the rows before it, so one sweep serves every reading up to
    `hi`; the rows are sorted, so the row `lag` seconds before each only moves forward."""
    smoke, heat, lag = op[1], op[2], op[4]
    j = _first_after(ts, lo, ts[lo] - lag - 1)  # the first row at or after ts[lo] - lag
    for k in range(lo, hi + 1):
        then = ts[k] - lag
        while j < k and ts[j] < then:
            j += 1
        at = j < k and ts[j] == then
        rose = at and np.float64(x[k, smoke]) - np.float64(x[j, smoke]) >= param[0]
        out[0, k - lo] = k if rose else hi + 1
        rose = at and np.float64(x[k, heat]) - np.float64(x[j, heat]) >= param[1]
        out[1, k - lo] = k if rose else hi + 1
    for k in range(hi - 1, lo - 1, -1):
        out[0, k - lo] = min(out[0, k - lo], out[0, k + 1 - lo])
        out[1, k - lo] = min(out[1, k - lo], out[1, k + 1 - lo])


@compiled
def _spans(ts: I64, x: F32, row: int, seen: int, spans: I64, begins: I64, stats: F64) -> None:
    """Per span: the first row it reads for reading `row` and the statistics of its channels
    (those of `seen`: the others have no value, so their statistics stay NaN)."""
    channels = np.empty(4, dtype=np.int64)
    stats[:] = np.nan
    for s in range(spans.shape[0]):
        begins[s] = _first_after(ts, row + 1, ts[row] - spans[s, 0])
        wanted, n = spans[s, 1] & seen, 0
        for c in range(N_CHANNELS):
            if wanted >> c & 1:
                channels[n] = c
                n += 1
            if n == 4 or (n > 0 and c == N_CHANNELS - 1):
                channels[n:] = channels[n - 1]
                _stats4(x, begins[s], row + 1, channels, spans[s, 2], stats[s])
                n = 0


@compiled
def _row(
    ts: I64,
    x: F32,
    row: int,
    plan: tuple[I64, F64],
    begins: I64,
    stats: F64,
    onsets: tuple[int, I64],
    out: F64,
) -> None:
    """The features of reading `row` from its spans (`_spans`) and the onsets of the lags
    (`_onsets` from row `lo` on, per lag feature), NaN where null."""
    ops, params = plan
    lo, rose = onsets
    t, end = ts[row], row + 1
    for i in range(ops.shape[0]):
        op, a, b = ops[i, 0], ops[i, 1], ops[i, 2]
        value = np.nan
        if op <= _MIN:
            value = stats[ops[i, 5], op, a]
        elif op == _CHANGE:
            j = begins[ops[i, 5]]
            if j < end and ts[j] == t - ops[i, 3]:
                value = (np.float64(x[row, a]) - np.float64(x[j, a])) * params[i, 0]
        elif op == _RISE:
            value = stats[ops[i, 5], _MEAN, a] - stats[ops[i, 6], _MEAN, a]
        elif op == _RATIO:
            den = np.float64(x[row, b])
            if den != 0:
                value = np.float64(x[row, a]) / den
        else:
            begin = begins[ops[i, 5]] - lo
            smoke, heat = rose[ops[i, 6], 0, begin], rose[ops[i, 6], 1, begin]
            if smoke <= row and heat <= row:
                value = np.float64(ts[heat] - ts[smoke])
        out[i] = value


@compiled
def features(
    ts: I64,
    x: F32,
    rows: I64,
    seen: int,
    plan: tuple[I64, F64, I64],
    columns: I64,
    out: F64,
    at: I64,
) -> int:
    """The features of readings `rows` (ts: int64 seconds, sorted, distinct; x: their channels,
    NaN where null, after the last of `rows` not read), as float32 as gold stores them, NaN
    where null: feature columns[c] of rows[r] into out[at[r], c]. `seen`: the bits of the
    channels the rows before `rows` may have a value of; returns them with those of `rows`."""
    ops, params, spans = plan
    for r in range(rows.size):
        for c in range(N_CHANNELS):
            if x[rows[r], c] == x[rows[r], c]:
                seen |= 1 << c
    if rows.size == 0:
        return seen
    begins = np.empty(spans.shape[0], dtype=np.int64)
    stats = np.empty((spans.shape[0], 4, N_CHANNELS), dtype=np.float64)
    values = np.empty(ops.shape[0], dtype=np.float64)
    # The lags' onsets from the first row their windows read for the earliest of `rows`.
    first, last = rows.min(), rows.max()
    lags = np.flatnonzero(ops[:, 0] == _LAG)
    back = 0
    for i in lags:
        back = max(back, ops[i, 3])
    lo = _first_after(ts, first + 1, ts[first] - back)
    rose = np.empty((lags.size, 2, last + 1 - lo), dtype=np.int64)
    for n in range(lags.size):
        _onsets(ts, x, lo, last, ops[lags[n]], params[lags[n]], rose[n])
    for r in range(rows.size):
        _spans(ts, x, rows[r], seen, spans, begins, stats)
        _row(ts, x, rows[r], (ops, params), begins, stats, (lo, rose), values)
        for c in range(columns.size):
            out[at[r], c] = np.float32(values[columns[c]])
    return seen


@compiled
def outcomes(
    ts: I64,
    held: F64,
    rows: I64,
    at: I64,
    point: tuple[float, int, int],
    scores: F64,
    alarm: npt.NDArray[np.bool_],
    warm: npt.NDArray[np.bool_],
) -> None:
    """In order, row rows[i] takes the score scores[at[i]] (`held`: the device's scores, NaN
    where not scored yet); alarm[at[i]]: the score is at least the point's threshold and the
    device's scores have stayed so for its persistence up to it (`held_s`); warm[at[i]]: its
    second is at least the point's third number (the first whose features the device's held
    readings cover)."""
    threshold, enough_s, warm_from = point
    for i in range(rows.size):
        row, score = rows[i], scores[at[i]]
        held[row] = score
        sounding = score >= threshold and held_s(ts, held, row, threshold, enough_s) >= enough_s
        alarm[at[i]], warm[at[i]] = sounding, ts[row] >= warm_from


@compiled
def screen(values: F64, low: F64, high: F64) -> tuple[F32, int, bool]:
    """Readings' channels (NaN where not sent) as float32, how many have a value and whether
    one is outside its channel's [low, high] (an infinity is)."""
    out = np.empty(values.shape, dtype=np.float32)
    count, outside = 0, False
    for i in range(values.shape[0]):
        for c in range(values.shape[1]):
            v = values[i, c]
            out[i, c] = v
            if v == v:
                count += 1
                outside |= not low[c] <= v <= high[c]
    return out, count, outside


@compiled
def held_s(ts: I64, held: F64, row: int, threshold: float, enough_s: int) -> int:
    """Seconds the scores have stayed >= threshold up to `row`, whose score is: back to the
    first of the unbroken run of such scores, or `enough_s` when it is at least that. A row not
    scored yet (NaN: a reading later in its request, earlier in time) had not arrived when
    `row` did, so it is passed."""
    first = row
    for k in range(row - 1, -1, -1):
        if ts[row] - ts[first] >= enough_s:
            break
        score = held[k]
        if score != score:
            continue
        if score < threshold:
            break
        first = k
    return int(ts[row] - ts[first])


class DeviceReadings:
    """One device's recent readings as silver holds them (one per second, sorted), with the
    score each got, the channels the device has reported since it was first held, the channels
    it was declared to have (0: none declared) and the second of the first reading held."""

    __slots__ = ("declared", "first", "n", "scores", "seen", "ts", "x")

    def __init__(self, first: int, capacity: int = 64) -> None:
        self.ts: I64 = np.empty(capacity, dtype=np.int64)
        self.x: F32 = np.empty((capacity, N_CHANNELS), dtype=np.float32)
        self.scores: F64 = np.empty(capacity, dtype=np.float64)
        self.n = 0
        self.seen = 0  # bit i: CHANNEL_NAMES[i] has had a value
        self.declared = 0
        self.first = first

    @property
    def newest(self) -> int | None:
        return int(self.ts[self.n - 1]) if self.n else None

    def place(self, second: int, values: F32) -> int:
        """Hold the reading at `second` (values: every channel, NaN where not sent) and return
        its row, not scored yet; a reading already held at that second is replaced (the last
        write wins)."""
        n = self.n
        row = n if n == 0 or second > self.ts[n - 1] else int(np.searchsorted(self.ts[:n], second))
        if row < n and self.ts[row] == second:
            self.x[row] = values
            self.scores[row] = np.nan
            return row
        if n == self.ts.size:
            self._grow(n + 1)
        if row < n:  # out of order: make room
            self.ts[row + 1 : n + 1] = self.ts[row:n]
            self.x[row + 1 : n + 1] = self.x[row:n]
            self.scores[row + 1 : n + 1] = self.scores[row:n]
        self.ts[row] = second
        self.x[row] = values
        self.scores[row] = np.nan
        self.n = n + 1
        return row

    def append(self, seconds: I64, values: F32) -> I64:
        """Hold readings after the newest, in increasing time (values: every channel, NaN where
        not sent) and return their rows, not scored yet."""
        n, m = self.n, seconds.size
        if n + m > self.ts.size:
            self._grow(n + m)
        self.ts[n : n + m] = seconds
        self.x[n : n + m] = values
        self.scores[n : n + m] = np.nan
        self.n = n + m
        return np.arange(n, n + m, dtype=np.int64)

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

    def _grow(self, rows: int) -> None:
        capacity = self.ts.size
        while capacity < rows:
            capacity *= 2
        for name in ("ts", "x", "scores"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)
