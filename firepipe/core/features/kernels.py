"""The fast path of gold features: single-pass numba kernels over readings sorted by
(device_id, ts).

Every kernel takes one device group: `ts` (int64 epoch seconds, strictly increasing within a
device), a channel's values (float32 or float64, NaN where null), `starts` (the row of every
device's first reading, then the group's end) and preallocated float32 outputs (rolling_window's
mean may be float64, where a rise subtracts two means) with one value per row from
`starts[0]` on. Windows are time windows (t - w, t], kept by pointers that
restart at each device, so gaps and missing seconds need no grid:

- rolling_window: mean, std, max and min of one window in one pass (running sums for the
  moments, with exact two-pass recomputes where rounding could show; van Herk / Gil-Werman
  blocks for the extremes, whose sentinels are +-inf, so a window of only -inf readings has
  no max: sensors do not report infinities);
- change: a pointer to the reading exactly `lag` seconds earlier (NaN if none);
- smoke_heat_lag: FIFO rings of the rows at which smoke and heat rose, so each onset in the window
  is the oldest that has not left it.

The kernels release the GIL (nogil), so firepipe.core.features.spec runs channels and groups on
threads. Compiled code is cached beside this module (__pycache__) or, where that is read-only,
in the user's cache folder; with neither writable the kernels compile afresh in each process
(about 2.5 s for the default spec's kernels on two cores; loading them from the cache, about
0.6 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Values = npt.NDArray[np.floating[Any]]
_Kernel = TypeVar("_Kernel", bound=Callable[..., Any])

# M2 below this share of the largest running sum of squares since the last exact pass may carry
# a relative rounding error of ~eps x ops / EXACT_SHARE (float64 eps 2.2e-16; at most
# 2 x RESTART_WINDOWS x window ops): under 1e-7 for a 300 s window, inside the 1e-6 the engines
# are held to (firepipe.core.features.spec).
EXACT_SHARE = 1e-4
# Windows' worth of rows after which the sums are recomputed exactly anyway (1/64 more work).
RESTART_WINDOWS = 64


def compiled(kernel: _Kernel) -> _Kernel:
    """numba.njit with an on-disk cache, or without one where no cache folder is writable
    (numba raises at decoration then: a read-only install with a read-only home). numpy's
    error model: a division by zero gives inf/NaN rather than a check on every division."""
    try:
        return cast(_Kernel, numba.njit(cache=True, nogil=True, error_model="numpy")(kernel))
    except RuntimeError:
        return cast(_Kernel, numba.njit(nogil=True, error_model="numpy")(kernel))


@compiled
def _exact(x: Values, begin: int, end: int) -> tuple[int, float, float]:
    """Count, mean and M2 of the non-NaN x[begin:end], two-pass."""
    n, total = 0, 0.0
    for k in range(begin, end):
        v = x[k]
        if v == v:
            n += 1
            total += v
    if n == 0:
        return 0, 0.0, 0.0
    mean = total / n
    m2 = 0.0
    for k in range(begin, end):
        v = x[k]
        if v == v:
            m2 += (v - mean) * (v - mean)
    return n, mean, m2


@compiled
def rolling_window(
    ts: I64,
    x: Values,
    starts: I64,
    window: int,
    mean_out: Values,  # float32, or float64 where a rise subtracts two means
    std_out: F32,
    max_out: F32,
    min_out: F32,
    scratch: F64,
) -> None:
    """Mean, sample std (ddof=1), max and min of the non-NaN values over (t - window, t] of
    every row, in one pass that shares the window's first row; an output of size 0 is not
    wanted. NaN where the window holds no value (std: fewer than two). `scratch` is
    window_scratch(window).

    Mean and std: a running count, sum and sum of squares of the values less a centre (the
    mean at the last exact pass), so adds and removes do not wait on a division; M2 =
    q - s^2 / n is recomputed two-pass when it is small against the sums it came from, and
    every RESTART_WINDOWS windows so rounding cannot pile up.

    Max and min: van Herk / Gil-Werman over time blocks of `window` seconds from each device's
    first reading. A window reaches back into the previous block only, so its max is the
    running max of its own block so far and the max of the previous block from the window's
    first row on (that block's suffix maxima, filled backwards when it closes). Branch-light,
    unlike a monotonic deque, whose pops a random walk makes unpredictable (3x slower here).
    """
    high_suffix, low_suffix, recip = scratch[0], scratch[1], scratch[2]
    base = starts[0]
    want_mean, want_std = mean_out.size > 0, std_out.size > 0
    want_max, want_min = max_out.size > 0, min_out.size > 0
    moments = want_mean or want_std
    restart = RESTART_WINDOWS * window
    for d in range(starts.size - 1):
        left = block = previous = exact_at = starts[d]  # previous: the last block's first row
        block_end = ts[block] + window
        high, low = -np.inf, np.inf  # of the block so far
        n, centre, s, q, peak = 0, 0.0, 0.0, 0.0, 0.0
        for i in range(starts[d], starts[d + 1]):
            t = ts[i]
            if t >= block_end:
                high, low = -np.inf, np.inf
                for r in range(i - 1, block - 1, -1):
                    v = np.float64(x[r])
                    if v == v:
                        high, low = max(high, v), min(low, v)
                    high_suffix[r - block] = high
                    low_suffix[r - block] = low
                previous, block = block, i
                block_end += window * ((t - block_end) // window + 1)
                high, low = -np.inf, np.inf
            oldest = t - window
            while ts[left] <= oldest:
                v = np.float64(x[left])
                left += 1
                if moments and v == v:
                    n -= 1
                    delta = v - centre
                    s -= delta
                    q -= delta * delta
            v = np.float64(x[i])
            o = i - base
            if v == v:
                high, low = max(high, v), min(low, v)
            if want_max or want_min:
                top, bottom = high, low
                if left < block:  # the window starts in the previous block
                    top = max(top, high_suffix[left - previous])
                    bottom = min(bottom, low_suffix[left - previous])
                if want_max:
                    max_out[o] = top if top > -np.inf else np.nan
                if want_min:
                    min_out[o] = bottom if bottom < np.inf else np.nan
            if not moments:
                continue
            if v == v:
                n += 1
                delta = v - centre
                s += delta
                q += delta * delta
            mean_value = std_value = np.nan
            if n == 0:
                s = q = 0.0
            else:
                m2 = q - s * s * recip[n]
                if n >= 2 and (m2 < peak * EXACT_SHARE or i - exact_at >= restart):
                    n, centre, m2 = _exact(x, left, i + 1)
                    s, q, peak, exact_at = 0.0, m2, m2, i
                peak = max(peak, q)  # branch-free: q rises and falls at random
                mean_value = centre + s * recip[n]
                if n >= 2:
                    # float32 square root: the output is float32, and sqrtss is about twice
                    # as fast as sqrtsd (within one float32 rounding of the float64 root).
                    std_value = np.sqrt(np.float32(m2 * recip[n - 1]))
            if want_mean:
                mean_out[o] = mean_value
            if want_std:
                std_out[o] = std_value


def window_scratch(window: int) -> F64:
    """rolling_window's scratch: two blocks' suffix extremes, and 1 / n for n <= window (a
    multiplication is several times cheaper than a division)."""
    scratch = np.empty((3, window + 1))
    with np.errstate(divide="ignore"):
        scratch[2] = 1.0 / np.arange(window + 1)
    return scratch


@compiled
def change(ts: I64, x: Values, starts: I64, lag: int, per: float, out: F32) -> None:
    """(x - the reading exactly `lag` seconds earlier) * `per`; NaN without that reading."""
    base = starts[0]
    for d in range(starts.size - 1):
        j = starts[d]
        for i in range(starts[d], starts[d + 1]):
            then = ts[i] - lag
            while ts[j] < then:
                j += 1
            # x as float64 before the subtraction, as the reference casts (float32 input).
            earlier, now = np.float64(x[j]), np.float64(x[i])
            out[i - base] = (now - earlier) * per if ts[j] == then else np.nan


@compiled
def smoke_heat_lag(
    ts: I64,
    smoke: Values,
    heat: Values,
    starts: I64,
    rise_lag: int,
    window: int,
    smoke_rise: float,
    heat_rise: float,
    out: F32,
) -> None:
    """onset(heat) - onset(smoke) in seconds (firepipe.core.features.SmokeHeatLag): a channel
    rose at a row when its change over `rise_lag` seconds reached its threshold; its onset is
    the first such row in (t - window, t]."""
    slots = 1  # a power of two >= window: a window holds at most `window` rows
    while slots < window:
        slots <<= 1
    rings, mask = np.empty((2, slots), dtype=np.int64), slots - 1
    base = starts[0]
    for d in range(starts.size - 1):
        j = starts[d]
        heads = np.zeros(2, dtype=np.int64)
        tails = np.zeros(2, dtype=np.int64)
        for i in range(starts[d], starts[d + 1]):
            oldest = ts[i] - window
            for c in range(2):
                while heads[c] < tails[c] and ts[rings[c, heads[c] & mask]] <= oldest:
                    heads[c] += 1
            then = ts[i] - rise_lag
            while ts[j] < then:
                j += 1
            if ts[j] == then:
                # NaN changes compare false: no rise without both readings.
                if np.float64(heat[i]) - np.float64(heat[j]) >= heat_rise:
                    rings[0, tails[0] & mask] = i
                    tails[0] += 1
                if np.float64(smoke[i]) - np.float64(smoke[j]) >= smoke_rise:
                    rings[1, tails[1] & mask] = i
                    tails[1] += 1
            if heads[0] < tails[0] and heads[1] < tails[1]:
                onset_heat = ts[rings[0, heads[0] & mask]]
                onset_smoke = ts[rings[1, heads[1] & mask]]
                out[i - base] = np.float64(onset_heat - onset_smoke)
            else:
                out[i - base] = np.nan


def row_groups(starts: I64, rows: int, target_rows: int) -> list[tuple[int, int]]:
    """[start, end) row ranges cut only at `starts` (rows where a device begins), each about
    `target_rows` (at least one device)."""
    groups, begin = [], 0
    for start in starts[1:].tolist():
        if start - begin >= target_rows:
            groups.append((begin, start))
            begin = start
    if begin < rows:
        groups.append((begin, rows))
    return groups
