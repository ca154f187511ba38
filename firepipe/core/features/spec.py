"""Gold features, declared once as data and compiled to polars (here), numba kernels
(firepipe.core.features.kernels) and PySpark (firepipe.core.features.spark).

A feature spec is a list of small records; its hash names the feature version, so a change of
window, statistic, channel or threshold is a new version that can be told apart in the lake.
The spec travels as JSON (`FeatureSpec.to_json` / `from_json`) to the Spark job.

Semantics, the same in every engine (the parity tests hold them to 1e-6):
- Input is silver: 1 Hz per device, gap rows (is_gap true, channels null) inside gaps up to
  MAX_FILLED_GAP_S, longer gaps with no rows. Output is one row per non-gap reading, ID_COLUMNS
  then the features (Float32), sorted by (device_id, ts).
- A rolling window at time t is (t - window_s, t]: this second and the window_s - 1 before it.
  Statistics are over the non-null values in it (null when there are none); std has ddof=1 and
  is null with fewer than two values.
- A difference is the value minus the reading exactly lag_s earlier (null when that second has
  no reading or a null one); rate of rise is the same difference per minute.
- A rise is the mean over the trailing window_s minus the mean over the trailing baseline_s
  (null when either window holds no value): how far the channel stands above its recent
  level, whatever that level (a sensor's zero offset cancels out).
- A ratio is numerator / denominator, null when the denominator is 0 or null.
- The smoke-vs-heat lag is causal: a channel "rose" at second s when its lag-s difference at s
  reached its threshold; its onset at t is the earliest such s in (t - window_s, t]. The feature
  is onset(heat) - onset(smoke) in seconds: positive when smoke rose first (smouldering),
  negative when heat did (clean flaming fuels), null when either has not risen in the window.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import polars as pl

from firepipe.core.features import kernels
from firepipe.core.lake import quality
from firepipe.core.readings import CHANNEL_NAMES

Statistic = Literal["mean", "std", "min", "max"]
STATISTICS: tuple[str, ...] = get_args(Statistic)
ID_COLUMNS: tuple[str, ...] = ("site_id", "device_id", "ts", "scenario", "is_fire")
SPEC_FORMAT_VERSION = 1  # bumped when the JSON layout changes (not the features)
# Iceberg snapshot properties gold's commit writes, so the spec travels with the data: the spec
# as JSON, and the id of the silver snapshot the features were computed from.
FEATURE_SPEC_PROPERTY = "firepipe.feature-spec"
SILVER_SNAPSHOT_PROPERTY = "firepipe.silver-snapshot-id"

# Smoke-vs-heat onsets. A rise of 0.5 %/m in 30 s is a third of UL 217's most sensitive smoke
# alarm point (0.5 %/ft = 1.64 %/m), so the onset precedes any alarm; 1 degC in 30 s (2 degC/min)
# is a quarter of the NFPA 72 rate-of-rise heat detector's 15 degF/min (8.3 degC/min).
SMOKE_RISE_PCT_PER_M = 0.5
HEAT_RISE_C = 1.0
RISE_LAG_S = 30
LAG_WINDOW_S = 300


def _positive(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive whole number of seconds, got {value!r}")


@dataclass(frozen=True)
class Rolling:
    """A statistic of a channel over the trailing `window_s` seconds, this second included."""

    channel: str
    statistic: Statistic
    window_s: int

    def __post_init__(self) -> None:
        _positive(self.window_s, f"{self.channel} rolling window_s")
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")

    @property
    def name(self) -> str:
        return f"{self.channel}__{self.statistic}_{self.window_s}s"


@dataclass(frozen=True)
class Difference:
    """The change of a channel since its reading `lag_s` seconds earlier (null without one)."""

    channel: str
    lag_s: int

    def __post_init__(self) -> None:
        _positive(self.lag_s, f"{self.channel} difference lag_s")

    @property
    def name(self) -> str:
        return f"{self.channel}__diff_{self.lag_s}s"


@dataclass(frozen=True)
class RateOfRise:
    """The change of a channel over the last `lag_s` seconds, per minute."""

    channel: str
    lag_s: int

    def __post_init__(self) -> None:
        _positive(self.lag_s, f"{self.channel} rate-of-rise lag_s")

    @property
    def name(self) -> str:
        return f"{self.channel}__rise_per_min_{self.lag_s}s"


@dataclass(frozen=True)
class Rise:
    """The channel's mean over the trailing `window_s` seconds minus its mean over the trailing
    `baseline_s` seconds (module docstring)."""

    channel: str
    window_s: int = RISE_LAG_S
    baseline_s: int = LAG_WINDOW_S

    def __post_init__(self) -> None:
        _positive(self.window_s, f"{self.channel} rise window_s")
        _positive(self.baseline_s, f"{self.channel} rise baseline_s")
        if self.window_s >= self.baseline_s:
            raise ValueError(
                f"{self.channel} rise: window_s ({self.window_s}) must be shorter than "
                f"baseline_s ({self.baseline_s})"
            )

    @property
    def name(self) -> str:
        return f"{self.channel}__rise_{self.window_s}s_over_{self.baseline_s}s"


@dataclass(frozen=True)
class Ratio:
    """numerator / denominator at the same second, null when the denominator is 0 or null."""

    numerator: str
    denominator: str

    @property
    def name(self) -> str:
        return f"{self.numerator}__per__{self.denominator}"


@dataclass(frozen=True)
class SmokeHeatLag:
    """Seconds by which smoke's onset led heat's within the trailing window (module docstring)."""

    window_s: int = LAG_WINDOW_S
    rise_lag_s: int = RISE_LAG_S
    smoke_rise: float = SMOKE_RISE_PCT_PER_M
    heat_rise: float = HEAT_RISE_C
    smoke_channel: str = "smoke_obscuration_pct_per_m"
    heat_channel: str = "temperature_c"

    def __post_init__(self) -> None:
        _positive(self.window_s, "smoke-heat lag window_s")
        _positive(self.rise_lag_s, "smoke-heat lag rise_lag_s")
        if not (self.smoke_rise > 0 and self.heat_rise > 0):
            raise ValueError("smoke_rise and heat_rise must be positive")

    @property
    def name(self) -> str:
        return f"smoke_heat_lag_{self.window_s}s"


Feature = Rolling | Difference | RateOfRise | Rise | Ratio | SmokeHeatLag
KINDS: dict[str, type[Feature]] = {
    k.__name__: k for k in (Rolling, Difference, RateOfRise, Rise, Ratio, SmokeHeatLag)
}


@dataclass(frozen=True)
class FeatureSpec:
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"feature spec declares {', '.join(repeated)} more than once")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def channels(self) -> tuple[str, ...]:
        """Every input channel the spec reads, sorted."""
        return tuple(sorted({c for f in self.features for c in input_channels(f)}))

    def _records(self) -> list[dict[str, Any]]:
        return [{"kind": type(f).__name__, **asdict(f)} for f in self.features]

    def hash(self) -> str:
        blob = json.dumps(self._records(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({"version": SPEC_FORMAT_VERSION, "features": self._records()})

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"feature spec is not JSON: {e}") from e
        if not isinstance(document, dict) or document.get("version") != SPEC_FORMAT_VERSION:
            raise ValueError(
                f"feature spec JSON must be an object with version {SPEC_FORMAT_VERSION}"
            )
        return cls(tuple(_feature(record) for record in document.get("features", [])))


def gold_properties(spec: FeatureSpec, silver_snapshot_id: int) -> dict[str, str]:
    """The snapshot properties of a gold commit: its spec and the silver snapshot it read, so
    any reader of a gold version (training, time travel) takes the spec from the data."""
    return {
        FEATURE_SPEC_PROPERTY: spec.to_json(),
        SILVER_SNAPSHOT_PROPERTY: str(silver_snapshot_id),
    }


def spec_from_properties(properties: Mapping[str, str]) -> FeatureSpec:
    """The feature spec a gold snapshot was computed with, from its snapshot properties."""
    text = properties.get(FEATURE_SPEC_PROPERTY)
    if text is None:
        raise ValueError(
            f"the snapshot has no {FEATURE_SPEC_PROPERTY!r} property: it was written before "
            "gold stored its feature spec; rematerialise gold to record one"
        )
    return FeatureSpec.from_json(text)


def _feature(record: Any) -> Feature:
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        raise ValueError(f"feature record {record!r} has no known kind (one of {list(KINDS)})")
    kind = KINDS[record["kind"]]
    arguments = {k: v for k, v in record.items() if k != "kind"}
    expected = {f.name for f in fields(kind)}
    if set(arguments) - expected:
        raise ValueError(f"{kind.__name__} has no field(s) {sorted(set(arguments) - expected)}")
    try:
        return kind(**arguments)
    except TypeError as e:
        raise ValueError(f"{kind.__name__} record {record!r}: {e}") from e


def input_channels(feature: Feature) -> tuple[str, ...]:
    if isinstance(feature, Ratio):
        return (feature.numerator, feature.denominator)
    if isinstance(feature, SmokeHeatLag):
        return (feature.smoke_channel, feature.heat_channel)
    return (feature.channel,)


def benchmark_spec(
    channels: tuple[str, ...] = CHANNEL_NAMES,
    windows_s: tuple[int, ...] = (30, 300),
    statistics: tuple[Statistic, ...] = ("mean", "std", "max"),
    difference_lag_s: int = 60,
) -> FeatureSpec:
    """Rolling statistics and the difference of every channel: the `firepipe bench lake` set."""
    rolling = [Rolling(c, s, w) for c in channels for w in windows_s for s in statistics]
    return FeatureSpec((*rolling, *(Difference(c, difference_lag_s) for c in channels)))


def default_spec(
    channels: tuple[str, ...] = CHANNEL_NAMES,
    windows_s: tuple[int, ...] = (30, 300),
    statistics: tuple[Statistic, ...] = ("mean", "std", "max"),
    difference_lag_s: int = 60,
) -> FeatureSpec:
    """The gold set: the benchmark set, plus the 30 s rate of rise of heat, smoke and CO, every
    channel's 30 s mean minus its 300 s mean (`Rise`), the CO/CO2 ratio (high in smouldering,
    low in clean flaming combustion) and the smoke-heat lag."""
    base = benchmark_spec(channels, windows_s, statistics, difference_lag_s)
    rates = [RateOfRise(c, RISE_LAG_S) for c in _RISE_CHANNELS if c in channels]
    extras: list[Feature] = [*rates, *(Rise(c) for c in channels)]
    if {"co_ppm", "co2_ppm"} <= set(channels):
        extras.append(Ratio("co_ppm", "co2_ppm"))
    if {"smoke_obscuration_pct_per_m", "temperature_c"} <= set(channels):
        extras.append(SmokeHeatLag())
    return FeatureSpec((*base.features, *extras))


_RISE_CHANNELS = ("temperature_c", "smoke_obscuration_pct_per_m", "co_ppm")


def require_columns(columns: Collection[str], spec: FeatureSpec) -> None:
    """Refuse readings (a polars or a Spark frame's columns) that lack a column the spec needs."""
    missing = [c for c in (*ID_COLUMNS, *spec.channels) if c not in columns]
    if missing:
        raise ValueError(f"readings lack column(s) {missing} that the feature spec needs")


def earlier_lags(spec: FeatureSpec) -> dict[int, tuple[str, ...]]:
    """lag_s -> the channels whose reading lag_s seconds earlier some feature needs."""
    wanted: dict[int, set[str]] = {}
    for f in spec.features:
        if isinstance(f, Difference | RateOfRise):
            wanted.setdefault(f.lag_s, set()).add(f.channel)
        elif isinstance(f, SmokeHeatLag):
            wanted.setdefault(f.rise_lag_s, set()).update(input_channels(f))
    return {lag: tuple(sorted(c)) for lag, c in sorted(wanted.items())}


def earlier_name(channel: str, lag_s: int) -> str:
    return f"{channel}__at_minus_{lag_s}s"


def _change(channel: str, lag_s: int) -> pl.Expr:
    return pl.col(channel).cast(pl.Float64) - pl.col(earlier_name(channel, lag_s))


def _reference_expr(feature: Feature) -> pl.Expr:
    if isinstance(feature, Rolling):
        x = pl.col(feature.channel).cast(pl.Float64)
        rolling = getattr(x, f"rolling_{feature.statistic}_by")
        return rolling("ts", f"{feature.window_s}s").over("device_id")  # type: ignore[no-any-return]
    if isinstance(feature, Difference):
        return _change(feature.channel, feature.lag_s)
    if isinstance(feature, RateOfRise):
        return _change(feature.channel, feature.lag_s) * (60.0 / feature.lag_s)
    if isinstance(feature, Rise):
        return _reference_expr(Rolling(feature.channel, "mean", feature.window_s)) - (
            _reference_expr(Rolling(feature.channel, "mean", feature.baseline_s))
        )
    if isinstance(feature, Ratio):
        den = pl.col(feature.denominator).cast(pl.Float64)
        return pl.when(den != 0).then(pl.col(feature.numerator).cast(pl.Float64) / den)

    def onset(channel: str, rise: float) -> pl.Expr:
        seconds = pl.col("ts").dt.epoch("us").cast(pl.Float64) / 1e6
        rose = pl.when(_change(channel, feature.rise_lag_s) >= rise).then(seconds)
        return rose.rolling_min_by("ts", f"{feature.window_s}s").over("device_id")

    return onset(feature.heat_channel, feature.heat_rise) - onset(
        feature.smoke_channel, feature.smoke_rise
    )


def reference_features(readings: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """The naive polars baseline: `rolling_*_by(...).over("device_id")` and joins on ts + lag.

    Kept as the reference the fast path and Spark are held to, and as the benchmark's baseline.
    """
    require_columns(readings.columns, spec)
    ordered = readings.sort("device_id", "ts")
    for lag_s, channels in earlier_lags(spec).items():
        earlier = ordered.select(
            "device_id",
            pl.col("ts") + pl.duration(seconds=lag_s),
            *(pl.col(c).cast(pl.Float64).alias(earlier_name(c, lag_s)) for c in channels),
        )
        ordered = ordered.join(earlier, on=["device_id", "ts"], how="left", maintain_order="left")
    out = ordered.with_columns(_reference_expr(f).alias(f.name) for f in spec.features)
    if "is_gap" in out.columns:
        out = out.filter(~pl.col("is_gap"))
    return out.select(*ID_COLUMNS, *(pl.col(n).cast(pl.Float32) for n in spec.names))


# Rows per group of the fast path: its output columns are float32 arrays of ~2 M values (8 MB,
# under glibc's 32 MB most for memory it recycles itself rather than mapping afresh: mallopt(3)
# M_MMAP_THRESHOLD), and the groups times the channels are the tasks its threads share.
GROUP_ROWS = 2_000_000
US_PER_S = 1_000_000
_UNWANTED = np.empty(0, dtype=np.float32)  # an output a kernel is not asked for


def device_batches(rows_per_device: pl.DataFrame, max_rows: int) -> list[list[str]]:
    """Devices (columns device_id, len) in order, cut into batches of whole devices holding at
    most `max_rows` rows each (a device with more rows than that is a batch of its own): the
    units in which gold reads silver, so memory follows the batch, not the table."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    batches: list[list[str]] = []
    rows = 0
    for device, count in rows_per_device.select("device_id", "len").iter_rows():
        if not batches or rows + count > max_rows:
            batches.append([])
            rows = 0
        batches[-1].append(device)
        rows += count
    return batches


def features_by_device_batch(
    readings: pl.LazyFrame, spec: FeatureSpec, max_rows: int = GROUP_ROWS
) -> Iterator[pl.DataFrame]:
    """`compute_features` of a lazy scan of silver, one batch of whole devices
    (`device_batches`) at a time: only one batch's readings and features are in memory, and a
    scan of device-sorted Parquet skips the row groups of other devices. A scan with no rows
    yields one empty frame, so the features' schema is still known."""
    per_device = readings.group_by("device_id").len().sort("device_id").collect()
    for devices in device_batches(per_device, max_rows) or [[]]:
        # No name holds the batch's readings while its features are out with the caller.
        yield compute_features(readings.filter(pl.col("device_id").is_in(devices)).collect(), spec)


def compute_features(
    readings: pl.DataFrame, spec: FeatureSpec, *, group_rows: int = GROUP_ROWS, threads: int = 0
) -> pl.DataFrame:
    """Per-device features of silver readings: the production path, equal to
    `reference_features` (to 1e-6 relative, 1e-6 absolute floor) and several times faster.

    Single-pass numba kernels (firepipe.core.features.kernels) over the non-gap readings sorted
    by (device_id, ts), one task per channel and group of about `group_rows` rows of whole
    devices, on `threads` threads (0: one per core), written straight into float32 columns
    that become the frame's columns without a copy. Input whose timestamps are not whole
    seconds, or that repeats a (device_id, ts), goes through the reference.
    """
    require_columns(readings.columns, spec)
    rows = readings.lazy()
    if "is_gap" in readings.columns:  # gap rows hold no values: no window or lag sees them
        rows = rows.filter(~pl.col("is_gap").fill_null(False))
    out = rows.select(*ID_COLUMNS, *(c for c in spec.channels if c not in ID_COLUMNS)).collect()
    layout = _layout(out)
    if layout is None and out.height:
        out = out.sort("device_id", "ts")
        layout = _layout(out)
    if layout is None:
        return reference_features(readings, spec)
    ts, starts = layout
    names = spec.names
    column = {name: i for i, name in enumerate(names)}
    values = _channel_values(out, spec.channels)
    groups = kernels.row_groups(starts[:-1], out.height, group_rows)
    results = [[np.empty(end - begin, dtype=np.float32) for _ in names] for begin, end in groups]
    tasks: list[Callable[[], None]] = []
    for (begin, end), result in zip(groups, results, strict=True):
        bounds = starts[np.searchsorted(starts, begin) : np.searchsorted(starts, end) + 1]
        for channel, of_channel in _by_channel(spec).items():
            outputs = [(f, result[column[f.name]]) for f in of_channel]
            tasks.append(partial(_channel_kernels, ts, values[channel], bounds, outputs))
        for lag in (f for f in spec.features if isinstance(f, SmokeHeatLag)):
            tasks.append(
                partial(
                    kernels.smoke_heat_lag,
                    ts,
                    values[lag.smoke_channel],
                    values[lag.heat_channel],
                    bounds,
                    lag.rise_lag_s,
                    lag.window_s,
                    lag.smoke_rise,
                    lag.heat_rise,
                    result[column[lag.name]],
                )
            )
    _run(tasks, threads or os.cpu_count() or 1)
    for f in (f for f in spec.features if isinstance(f, Ratio)):
        ratio = _ratio(out, f)
        for (begin, end), result in zip(groups, results, strict=True):
            result[column[f.name]][:] = ratio[begin:end]
    # One chunk per group, not copied together: each group's columns are arrays of at most
    # GROUP_ROWS float32 values, which malloc can serve and take back without the kernel.
    chunks = [
        pl.DataFrame([pl.Series(n, result[i], nan_to_null=True) for i, n in enumerate(names)])
        for result in results
    ]
    features = pl.concat(chunks, rechunk=False)
    return pl.concat([out.select(ID_COLUMNS), features], how="horizontal")


_ChannelFeature = Rolling | Difference | RateOfRise | Rise


def _by_channel(spec: FeatureSpec) -> dict[str, list[_ChannelFeature]]:
    """channel -> its rolling statistics, differences, rates of rise and rises."""
    by_channel: dict[str, list[_ChannelFeature]] = {}
    for f in spec.features:
        if isinstance(f, _ChannelFeature):
            by_channel.setdefault(f.channel, []).append(f)
    return by_channel


def _channel_kernels(
    ts: npt.NDArray[np.int64],
    x: npt.NDArray[np.floating],
    starts: npt.NDArray[np.int64],
    outputs: list[tuple[_ChannelFeature, npt.NDArray[np.float32]]],
) -> None:
    """Every feature of one channel over one group: the statistics of a window share one
    pass. A rise subtracts two means kept in float64 (float32 means of a large level, such as
    CO2's 450 ppm, would lose the small rise to rounding); a window's float32 mean, when the
    spec asks for it too, is that float64 mean rounded."""
    windows: dict[int, dict[str, npt.NDArray[np.float32]]] = {}
    means64: dict[int, npt.NDArray[np.float64]] = {}
    rises: list[tuple[Rise, npt.NDArray[np.float32]]] = []
    for f, result in outputs:
        if isinstance(f, Rolling):
            windows.setdefault(f.window_s, {})[f.statistic] = result
        elif isinstance(f, Rise):
            rises.append((f, result))
            for window_s in (f.window_s, f.baseline_s):
                if window_s not in means64:
                    means64[window_s] = np.empty(result.size, dtype=np.float64)
                windows.setdefault(window_s, {})
        else:
            per = 1.0 if isinstance(f, Difference) else 60.0 / f.lag_s
            kernels.change(ts, x, starts, f.lag_s, per, result)
    for window_s, wanted in windows.items():
        mean, std, high, low = (wanted.get(s, _UNWANTED) for s in ("mean", "std", "max", "min"))
        mean64 = means64.get(window_s)
        scratch = kernels.window_scratch(window_s)
        kernels.rolling_window(
            ts, x, starts, window_s, mean if mean64 is None else mean64, std, high, low, scratch
        )
        if mean64 is not None and mean.size:
            mean[:] = mean64
    for f, result in rises:
        np.subtract(means64[f.window_s], means64[f.baseline_s], out=result, casting="same_kind")


def _run(tasks: list[Callable[[], None]], workers: int) -> None:
    """The tasks on `workers` threads (the kernels release the GIL)."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(min(workers, len(tasks))) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


def _ratio(rows: pl.DataFrame, feature: Ratio) -> npt.NDArray[np.float64]:
    den = rows[feature.denominator].cast(pl.Float64).to_numpy()
    num = rows[feature.numerator].cast(pl.Float64).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den != 0, num / den, np.nan)


def _layout(rows: pl.DataFrame) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """Epoch seconds of every row, and the row of every device's first reading followed by
    the row count. None when the rows are not sorted by (device_id, ts) with ts strictly
    increasing per device, or not on whole seconds (or there are none)."""
    if rows.height == 0:
        return None
    micros = pl.col("ts").dt.epoch("us")
    checked = rows.select(
        (pl.col("device_id").is_sorted() & (micros % US_PER_S == 0).all()).alias("ok"),
        pl.col("device_id").rle_id().alias("device"),  # one string pass, not two
        (micros // US_PER_S).alias("seconds"),
    )
    if not checked["ok"][0]:
        return None
    seconds = checked["seconds"].to_numpy()
    starts = np.flatnonzero(np.diff(checked["device"].to_numpy())) + 1
    step = np.diff(seconds)
    step[starts - 1] = 1  # a device's first reading may be at any time
    if not (step > 0).all():
        return None
    return seconds, np.concatenate([[0], starts, [rows.height]]).astype(np.int64)


def _channel_values(
    readings: pl.DataFrame, channels: tuple[str, ...]
) -> dict[str, npt.NDArray[np.floating]]:
    """Every channel as a float numpy array with NaN where null (filled by polars, so the
    arrays are polars' own buffers, not fresh numpy copies)."""
    exprs = []
    for c in channels:
        dtype = readings.schema[c]
        target = dtype if dtype in (pl.Float32, pl.Float64) else pl.Float64
        exprs.append(pl.col(c).cast(target).fill_null(pl.lit(float("nan"), dtype=target)))
    filled = readings.select(exprs)
    return {c: filled[c].to_numpy() for c in channels}


@dataclass(frozen=True)
class ColumnShift:
    column: str
    ks_complement: float | None  # 1 = the same distribution (SDMetrics KSComplement)
    mean_before: float | None
    mean_after: float | None


@dataclass(frozen=True)
class FeatureDiff:
    """What changed between two versions of a feature table."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    type_changed: tuple[str, ...]
    shifts: tuple[ColumnShift, ...]  # numeric columns in both, least similar first
    rows_before: int
    rows_after: int


def diff_features(
    before: pl.LazyFrame, after: pl.LazyFrame, *, sample_rows: int = 200_000, seed: int = 0
) -> FeatureDiff:
    """Columns added, removed or retyped, and the distribution shift of every shared numeric
    column, on seeded samples of at most `sample_rows` rows of each version."""
    old, new = before.collect_schema(), after.collect_schema()
    shared = [c for c in new.names() if c in old]
    numeric = [c for c in shared if old[c].is_numeric() and new[c].is_numeric()]
    old_rows = quality.seeded_sample(before, sample_rows, seed=seed, columns=numeric)
    new_rows = quality.seeded_sample(after, sample_rows, seed=seed, columns=numeric)
    shifts = []
    for column in numeric:
        a, b = old_rows[column], new_rows[column]
        both = a.drop_nulls().len() > 0 and b.drop_nulls().len() > 0
        shifts.append(
            ColumnShift(
                column,
                quality.ks_complement(a.to_numpy(), b.to_numpy()) if both else None,
                _mean(a),
                _mean(b),
            )
        )
    shifts.sort(key=lambda s: (s.ks_complement is None, s.ks_complement or 0.0))
    return FeatureDiff(
        added=tuple(c for c in new.names() if c not in old),
        removed=tuple(c for c in old.names() if c not in new),
        type_changed=tuple(c for c in shared if old[c] != new[c]),
        shifts=tuple(shifts),
        rows_before=int(before.select(pl.len()).collect().item()),
        rows_after=int(after.select(pl.len()).collect().item()),
    )


def _mean(values: pl.Series) -> float | None:
    mean = values.cast(pl.Float64).drop_nans().mean()
    return float(mean) if isinstance(mean, int | float) else None
