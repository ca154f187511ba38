"""The fast path of gold features: numpy kernels over cache-sized tiles of a dense 1 Hz grid.

Silver is on a 1 Hz grid per device, so a window of w seconds is w slots of a dense array in
which every device segment (a run of readings whose gaps are no longer than the spec's reach)
occupies the seconds from its first to its last reading, missing seconds as NaN, and is preceded
by `reach` + 1 empty slots so no window or lag reaches into the previous segment.

The grid is never built whole: it is cut into tiles of `tile` slots, each loaded with the
`history` slots before it (the reach, so every window of the tile is complete), and every
kernel writes into a fixed set of preallocated float64 buffers (`Workspace`, one per thread)
that stay in cache and are reused for every tile and channel. Whole-column temporaries would
each pay first-touch page faults, which cost far more than the arithmetic on these machines.
On a tile:

- mean/std come from prefix sums centred on the tile's mean (so the sums stay small and a
  variance is not the difference of two huge numbers) that restart in the empty slots before
  every segment (so a segment's sums hold its own values only); windows whose spread is so
  small against the sums that rounding could show are recomputed two-pass (about 1 in 10^5
  on the benchmark data). The counts of values per window are shared by the channels of a
  tile that miss the same seconds;
- max/min by doubling: m_k[i] = max over (i - k, i] for k = 1, 2, 4, ...; a window w is
  max(m_k[i], m_k[i - w + k]) for the largest power of two k <= w (the two spans overlap,
  which max and min do not mind);
- a difference at lag L is x[i] - x[i - L]; the smoke-heat onset is the doubling minimum of
  the slot index where the channel rose.

numpy releases the GIL inside each call, so tiles run on several threads. Input that is not on
whole seconds or repeats a (device, ts) goes through the reference (firepipe.core.features).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
# A window's sum of squared deviations below 1e-7 of the prefix sums it is the difference of
# may carry a rounding error above ~1e-9 (float64 epsilon 2.2e-16 x 1e7 x a few): recomputed.
ILL_CONDITIONED = 1e-7
REFINE_BATCH = 4_096  # windows recomputed at a time (4,096 x 300 values = 10 MB)
# Slots per tile: 64 K float64 slots are 512 KiB a buffer, so the dozen buffers a thread works
# in stay in this machine kind's 32 MiB shared L3 (lscpu). Measured on 2 M readings of the
# benchmark set: 64 K beat 8 K, 16 K and 32 K (fewer numpy calls a reading) and tied 128 K.
TILE_SLOTS = 65_536


@dataclass(frozen=True)
class ChannelJob:
    """What one channel contributes: its values (one per input row, NaN where null) and the
    features asked of it, each as (window or lag, index of the output column)."""

    values: npt.NDArray[np.floating]
    mean: Sequence[tuple[int, int]] = ()
    std: Sequence[tuple[int, int]] = ()
    max: Sequence[tuple[int, int]] = ()
    min: Sequence[tuple[int, int]] = ()
    diff: Sequence[tuple[int, int]] = ()
    rise: Sequence[tuple[int, int]] = ()  # difference per minute


@dataclass(frozen=True)
class OnsetLagJob:
    """onset(heat) - onset(smoke) over `window` slots (firepipe.core.features.SmokeHeatLag)."""

    smoke: npt.NDArray[np.floating]
    heat: npt.NDArray[np.floating]
    smoke_rise: float
    heat_rise: float
    rise_lag: int
    window: int
    column: int


@dataclass(frozen=True)
class Plan:
    """Where the rows of a device group sit on the dense grid."""

    positions: I64  # slot of every input row, increasing
    out_positions: I64  # slot of every output (non-gap) row, increasing
    segment_starts: I64  # slot of the first row of every segment, increasing
    history: int  # slots before a tile that its windows and lags reach
    tile: int = TILE_SLOTS

    @property
    def tiles(self) -> int:
        end = int(self.positions[-1]) + 1 if self.positions.size else 0
        return -(-end // self.tile)


@dataclass
class Workspace:
    """One thread's buffers for one tile (history + tile slots), reused for every tile."""

    history: int
    tile: int
    x: F64 = field(init=False)
    buffers: list[F64] = field(init=False)
    prefix: list[F64] = field(init=False)
    nan: npt.NDArray[np.bool_] = field(init=False)
    flag: npt.NDArray[np.bool_] = field(init=False)
    # The counts of values per window depend only on where the values are missing, mostly the
    # same for every channel of a tile: kept for the last mask seen, in `counted`.
    counted: npt.NDArray[np.bool_] = field(init=False)
    counted_tile: int = field(init=False, default=-1)
    counted_windows: set[int] = field(init=False, default_factory=set)
    counts: dict[int, tuple[F64, F64, npt.NDArray[np.bool_]]] = field(init=False)

    def __post_init__(self) -> None:
        size = self.history + self.tile
        self.x = np.empty(size)
        self.buffers = [np.empty(size) for _ in range(10)]
        self.prefix = [np.empty(size + 1) for _ in range(3)]
        self.nan = np.empty(size, dtype=bool)
        self.flag = np.empty(self.tile, dtype=bool)
        self.counted = np.empty(size, dtype=bool)
        self.counts = {}

    def window_counts(self, w: int) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
        """Values in each tile slot's trailing `w` slots, that less one with NaN where fewer
        than two (a std's denominator), and where fewer than two, from the count prefix."""
        if w not in self.counts:
            self.counts[w] = (np.empty(self.tile), np.empty(self.tile), np.empty(self.tile, bool))
        n, den, few = self.counts[w]
        h, size = self.history, self.x.size
        pn = self.prefix[0]
        np.subtract(pn[h + 1 : size + 1], pn[h + 1 - w : size + 1 - w], out=n)
        np.subtract(n, 1.0, out=den)
        np.less(den, 0.5, out=few)
        np.copyto(den, np.nan, where=few)
        return n, den, few


class TileWriter:
    """Copies a tile's results (float64, over the tile's slots) into the float32 columns."""

    def __init__(self, results: list[F32], base: int, slots: I64, rows: tuple[int, int]) -> None:
        self.results = results
        self.begin, self.end = base + rows[0], base + rows[1]
        count = rows[1] - rows[0]
        contiguous = count == 0 or int(slots[-1]) - int(slots[0]) == count - 1
        self.span = slice(int(slots[0]), int(slots[0]) + count) if count else slice(0, 0)
        self.slots = None if contiguous else slots

    def __call__(self, column: int, values: F64, offset: float = 0.0) -> None:
        """results[column] = values + offset at the tile's output rows."""
        target = self.results[column][self.begin : self.end]
        picked = values[self.span] if self.slots is None else values[self.slots]
        if offset:
            np.add(picked, offset, out=target)
        else:
            target[...] = picked


def compute_tiles(
    plan: Plan,
    channels: Sequence[ChannelJob],
    lags: Sequence[OnsetLagJob],
    results: list[F32],
    out_base: int,
    workers: int,
) -> None:
    """Every feature of every channel for the rows of `plan`, written into `results` (float32
    columns) from row `out_base` on, tiles spread over `workers` threads."""
    counter = itertools.count()
    lock = threading.Lock()

    def worker() -> None:
        workspace = Workspace(plan.history, plan.tile)
        while True:
            with lock:
                k = next(counter)
            if k >= plan.tiles:
                return
            _tile(plan, k, workspace, channels, lags, results, out_base)

    run_threaded([worker] * max(1, min(workers, plan.tiles)), workers)


def _tile(
    plan: Plan,
    k: int,
    ws: Workspace,
    channels: Sequence[ChannelJob],
    lags: Sequence[OnsetLagJob],
    results: list[F32],
    out_base: int,
) -> None:
    start = k * plan.tile
    low, high = start - plan.history, start + plan.tile
    oa, ob = np.searchsorted(plan.out_positions, (start, high))
    if oa == ob:
        return
    ia, ib = np.searchsorted(plan.positions, (low, high))
    slots = plan.positions[ia:ib] - low
    contiguous = int(slots[-1]) - int(slots[0]) == ib - ia - 1
    load_span = slice(int(slots[0]), int(slots[0]) + int(ib - ia))
    write = TileWriter(results, out_base, plan.out_positions[oa:ob] - start, (int(oa), int(ob)))

    def load(values: npt.NDArray[np.floating], into: F64) -> None:
        if contiguous and ib - ia == into.size:
            into[...] = values[ia:ib]
            return
        into.fill(np.nan)
        if contiguous:
            into[load_span] = values[ia:ib]
        else:
            into[slots] = values[ia:ib]

    # Prefix sums restart in the empty slots before each segment (no window of the segment
    # reaches further back), so they hold that segment's values only.
    seg = plan.segment_starts
    sa, sb = np.searchsorted(seg, (low + plan.history + 2, high + plan.history + 1))
    cuts = [0, *(seg[sa:sb] - plan.history - 1 - low).tolist(), ws.x.size]
    for job in channels:
        load(job.values, ws.x)
        _channel(ws, job, write, cuts, k)
    for lag in lags:
        _onset_lag(ws, lag, load, write, start)


def _channel(ws: Workspace, job: ChannelJob, write: TileWriter, cuts: list[int], tile: int) -> None:
    x, h = ws.x, ws.history
    body = x[h:]
    t = ws.buffers[0][h:]
    windows = sorted({w for w, _ in (*job.mean, *job.std)})
    if windows:
        means = dict(job.mean)
        stds = dict(job.std)
        centre = _prefix_sums(ws, cuts, tile)
        for w in windows:
            mean, std = _moments(ws, w, centre)
            if w in means:
                write(means[w], mean, centre)
            if w in stds:
                write(stds[w], std)
    for statistic, pick in (("max", np.fmax), ("min", np.fmin)):
        wanted = getattr(job, statistic)
        if wanted:
            for column, values in rolling_extreme(ws, x, wanted, pick):
                write(column, values)
    for lag, column in job.diff:
        np.subtract(body, x[h - lag : x.size - lag], out=t)
        write(column, t)
    for lag, column in job.rise:
        np.subtract(body, x[h - lag : x.size - lag], out=t)
        t *= 60.0 / lag
        write(column, t)


def _prefix_sums(ws: Workspace, cuts: list[int], tile: int) -> float:
    """Prefix count, sum and sum of squares of the tile's values less its centre (NaN as 0),
    restarting at each of `cuts`; the centre is the mean of every 64th value, near enough to
    keep the sums small. Returns the centre. The counts are taken afresh only where the missing
    values are not where the previous channel's were (then the counts are the same)."""
    x, nan = ws.x, ws.nan
    n, s, q = ws.prefix
    xc = ws.buffers[1]
    with np.errstate(invalid="ignore"):
        sample = x[::64]
        sample = sample[~np.isnan(sample)]
    centre = float(sample.mean()) if sample.size else 0.0
    np.isnan(x, out=nan)
    np.subtract(x, centre, out=xc)
    np.copyto(xc, 0.0, where=nan)
    fresh = ws.counted_tile != tile or not np.array_equal(nan, ws.counted)
    if fresh:
        ws.counted[...] = nan
        ws.counted_tile = tile
        ws.counted_windows.clear()
        np.logical_not(nan, out=nan)
    n[0] = s[0] = q[0] = 0.0
    squares = ws.buffers[2]
    np.multiply(xc, xc, out=squares)
    for a, b in itertools.pairwise(cuts):
        if fresh:
            np.cumsum(nan[a:b], dtype=np.float64, out=n[a + 1 : b + 1])
        np.cumsum(xc[a:b], out=s[a + 1 : b + 1])
        np.cumsum(squares[a:b], out=q[a + 1 : b + 1])
    return centre


def _moments(ws: Workspace, w: int, centre: float) -> tuple[F64, F64]:
    """Mean less the centre and sample std (ddof=1) of the trailing `w` slots of every slot of
    the tile (NaN where undefined), in two of the workspace's buffers."""
    h, size = ws.history, ws.x.size
    _, ps, pq = ws.prefix
    now, before = slice(h + 1, size + 1), slice(h + 1 - w, size + 1 - w)
    s, q, mean, m2, std = (b[h:] for b in ws.buffers[3:8])
    if w not in ws.counted_windows:
        ws.window_counts(w)
        ws.counted_windows.add(w)
    n, den, few = ws.counts[w]
    flag = ws.flag
    np.subtract(ps[now], ps[before], out=s)
    np.subtract(pq[now], pq[before], out=q)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(s, n, out=mean)  # 0/0 -> NaN where the window holds no value
        np.multiply(s, mean, out=m2)
        np.subtract(q, m2, out=m2)
        np.divide(m2, den, out=std)  # den is NaN with fewer than two values: no std
        np.sqrt(std, out=std)
        # The sums of squares the window's spread was taken from (at most twice the prefix
        # at its end): a spread that is small against them (or negative from rounding) is
        # recomputed two-pass.
        np.multiply(pq[now], 2.0 * ILL_CONDITIONED, out=q)
        np.less(m2, q, out=flag)
        np.greater(flag, few, out=flag)  # and two values or more
    if flag.any():
        _refine(ws.x, h, w, centre, np.flatnonzero(flag), mean, std)
    return mean, std


def _refine(x: F64, h: int, w: int, centre: float, rows: I64, mean: F64, std: F64) -> None:
    """Two-pass mean and std of the windows `rows` (tile slots): rare, so gathering is cheap."""
    views = np.lib.stride_tricks.sliding_window_view(x, w)
    for start in range(0, rows.size, REFINE_BATCH):
        batch = rows[start : start + REFINE_BATCH]
        values = views[batch + h - w + 1]
        count = (~np.isnan(values)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            middle = np.nansum(values, axis=1) / count
            m2 = np.nansum((values - middle[:, None]) ** 2, axis=1)
            std[batch] = np.where(count >= 2, np.sqrt(m2 / (count - 1.0)), np.nan)
        mean[batch] = middle - centre


def rolling_extreme(
    ws: Workspace, x: F64, wanted: Sequence[tuple[int, int]], pick: np.ufunc
) -> Iterator[tuple[int, F64]]:
    """(column, max or min over the trailing window) over the tile's slots for each (window,
    column) in `wanted`, ignoring NaN (np.fmax/np.fmin), by doubling spans."""
    h = ws.history
    out = ws.buffers[9][h:]
    spares = (ws.buffers[7], ws.buffers[8])  # free once _moments' results are written
    span, source = 1, x
    for w, column in sorted(wanted):
        while 2 * span <= w:
            target = spares[0] if source is not spares[0] else spares[1]
            target[:span] = source[:span]
            pick(source[span:], source[:-span], out=target[span:])
            span, source = 2 * span, target
        back = w - span
        pick(source[h:], source[h - back : source.size - back], out=out)
        yield column, out


def _onset_lag(
    ws: Workspace,
    job: OnsetLagJob,
    load: Callable[[npt.NDArray[np.floating], F64], None],
    write: TileWriter,
    start: int,
) -> None:
    onsets = []
    slot = np.arange(start - ws.history, start + ws.tile, dtype=np.float64)
    for values, rise in ((job.heat, job.heat_rise), (job.smoke, job.smoke_rise)):
        load(values, ws.x)
        change = np.full(ws.x.size, np.nan)
        change[job.rise_lag :] = ws.x[job.rise_lag :] - ws.x[: -job.rise_lag]
        with np.errstate(invalid="ignore"):
            rose = np.where(change >= rise, slot, np.nan)
        _, first = next(rolling_extreme(ws, rose, [(job.window, job.column)], np.fmin))
        onsets.append(first.copy())
    write(job.column, onsets[0] - onsets[1])


def run_threaded(tasks: list[Callable[[], None]], workers: int) -> None:
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(t) for t in tasks]:
            future.result()


def row_groups(starts: I64, rows: int, target_rows: int) -> Iterator[tuple[int, int]]:
    """[start, end) row ranges cut only at `starts` (rows where a device segment begins), each
    about `target_rows` (at least one segment)."""
    begin = 0
    for start in starts[1:]:
        if start - begin >= target_rows:
            yield begin, int(start)
            begin = int(start)
    if begin < rows:
        yield begin, rows
