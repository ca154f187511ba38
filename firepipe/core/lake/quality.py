"""Data-quality measures on readings, as plain functions the asset checks report.

Everything that reads a whole partition takes a polars LazyFrame and aggregates it in the
streaming engine, so memory stays bounded however many rows there are. The distribution
measures are SDMetrics' (KSComplement, CorrelationSimilarity, the Quality Report's average),
computed exactly with numpy on a seeded sample of bounded size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy.stats import binom  # type: ignore[import-untyped]

from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, KEY_COLUMNS

Frame = pl.DataFrame | pl.LazyFrame

# Tolerance between seconds_since_ignition and ts - ignition_ts: one sample period of the 1 Hz
# readings (firepipe.core.readings: one row per device per second).
SECONDS_SINCE_IGNITION_TOLERANCE_S = 1.0
# Two-sided false-alarm rate per scenario of the scenario-mix test: that of a 4-sigma normal
# band, so a correct mix of a dozen scenarios is flagged about once in 1,300 partitions. The
# band itself is exact binomial: with few devices a normal band is too wide (it lets a scenario
# of weight 0.25 vanish from 40 devices, which happens with probability 1e-5).
SCENARIO_MIX_FALSE_ALARM_RATE = 6.3e-5
_SAMPLE_KEY = "__firepipe_sample_key"

# SDMetrics scores lie in [0, 1]; 0.8 is the lower edge of the band SDMetrics users read as
# "good" (KSComplement = 1 - KS statistic, so at most a 20-point gap between the two ECDFs).
# Two batches of one family differ only by their seed, so each channel should clear it easily.
KS_COMPLEMENT_MIN = 0.8
# Rows of one device share its room (base temperature, humidity, occupancy), so a partition is
# a sample of devices more than of rows: two seeds of 24 devices gave temperature_c KS
# complements of 0.78-0.82, of 400 devices 0.95. With few devices the floor is lowered to what
# two samples of that many devices reach by chance with probability below this significance.
KS_DEVICE_SIGNIFICANCE = 0.001
# The same floor for the Quality Report's overall score (mean of KS and correlation means).
OVERALL_QUALITY_MIN = 0.8
# Rows sampled from each side for the distribution check: the KS statistic's sampling noise is
# about 1.36 * sqrt(2 / n) = 0.004 at n = 200k, far below the 0.2 allowed, and 8 float64
# channels of 200k rows are 13 MB per side.
DISTRIBUTION_SAMPLE_ROWS = 200_000
DISTRIBUTION_SAMPLE_SEED = 0


def _lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _collect(query: pl.LazyFrame) -> pl.DataFrame:
    return query.collect(engine="streaming")


def _require(names: Sequence[str], columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{what} needs column(s) {', '.join(missing)}; the frame has {names}")


# --- labels -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelReport:
    """Rows breaking each labelling rule; `inconsistent_rows` counts a row once."""

    rows: int
    inconsistent_rows: int
    null_label: int
    fire_without_ignition: int
    ignition_without_fire: int
    seconds_without_ignition: int = 0
    ignition_without_seconds: int = 0
    seconds_disagree_with_ts: int = 0


def label_problem_exprs(names: Sequence[str]) -> dict[str, pl.Expr]:
    """One boolean expression per labelling rule (true where a row breaks it).

    is_fire iff ignition_ts is set; when the frame has seconds_since_ignition, it is set iff
    ignition_ts is, and equals ts - ignition_ts (when the frame has ts) within a second.
    """
    _require(names, ("is_fire", "ignition_ts"), "label consistency")
    ignited = pl.col("ignition_ts").is_not_null()
    rules = {
        "null_label": pl.col("is_fire").is_null(),
        "fire_without_ignition": pl.col("is_fire").fill_null(False) & ~ignited,
        "ignition_without_fire": ~pl.col("is_fire").fill_null(True) & ignited,
    }
    if "seconds_since_ignition" in names:
        seconds = pl.col("seconds_since_ignition")
        rules["seconds_without_ignition"] = seconds.is_not_null() & ~ignited
        rules["ignition_without_seconds"] = seconds.is_null() & ignited
        if "ts" in names:
            elapsed_s = (pl.col("ts") - pl.col("ignition_ts")).dt.total_microseconds() / 1e6
            off = (seconds.cast(pl.Float64) - elapsed_s).abs() > SECONDS_SINCE_IGNITION_TOLERANCE_S
            rules["seconds_disagree_with_ts"] = (ignited & (off | seconds.is_nan())).fill_null(
                False
            )
    return rules


def label_report(readings: Frame) -> LabelReport:
    """Count label inconsistencies in one streaming pass."""
    lf = _lazy(readings)
    rules = label_problem_exprs(lf.collect_schema().names())
    any_rule = pl.any_horizontal(list(rules.values()))
    counts = _collect(
        lf.select(
            pl.len().alias("rows"),
            any_rule.sum().alias("inconsistent_rows"),
            *(expr.sum().alias(name) for name, expr in rules.items()),
        )
    ).row(0, named=True)
    return LabelReport(**{k: int(v) for k, v in counts.items()})


def label_inconsistencies(readings: Frame) -> int:
    """Rows whose fire label disagrees with their ignition time (a fire has one, others none)."""
    return label_report(readings).inconsistent_rows


# --- keys and finiteness -----------------------------------------------------------------------


def duplicate_key_count(readings: Frame) -> int:
    """Rows beyond the first for each (device, second), in one streaming pass."""
    lf = _lazy(readings)
    _require(lf.collect_schema().names(), KEY_COLUMNS, "duplicate_key_count")
    counts = _collect(lf.select(pl.len() - pl.struct(KEY_COLUMNS).n_unique()))
    return int(counts.item())


def non_finite_count(frame: pl.DataFrame, columns: list[str]) -> int:
    """Infinite or NaN values across `columns` (nulls are allowed: missing history)."""
    if not columns or frame.height == 0:
        return 0
    counts = frame.select(
        pl.sum_horizontal((pl.col(c).is_nan() | pl.col(c).is_infinite()).sum() for c in columns)
    )
    return int(counts.item())


# --- physical ranges ---------------------------------------------------------------------------


def range_problem_exprs() -> dict[str, pl.Expr]:
    """Per channel, true where a value lies outside its physical range or is NaN; null stays
    false (a dropout is a missing value, not an impossible one)."""
    return {
        c.name: (
            pl.col(c.name).is_nan()
            | (pl.col(c.name) < c.min_value)
            | (pl.col(c.name) > c.max_value)
        ).fill_null(False)
        for c in CHANNELS
    }


def range_violations(readings: Frame) -> dict[str, int]:
    """Values outside each channel's physical range (CHANNELS), per channel; nulls do not count."""
    lf = _lazy(readings)
    _require(lf.collect_schema().names(), CHANNEL_NAMES, "range_violations")
    exprs = range_problem_exprs()
    counts = _collect(lf.select(e.sum().alias(n) for n, e in exprs.items())).row(0, named=True)
    return {name: int(counts[name]) for name in exprs}


# --- scenario mix ------------------------------------------------------------------------------


def scenario_device_counts(readings: Frame) -> dict[str, int]:
    """Distinct devices per scenario (rows with a null scenario are left to the schema check)."""
    lf = _lazy(readings)
    _require(lf.collect_schema().names(), ("scenario", "device_id"), "scenario mix")
    counts = _collect(
        lf.select("scenario", "device_id")
        .drop_nulls("scenario")
        .group_by("scenario")
        .agg(pl.col("device_id").drop_nulls().n_unique().alias("devices"))
    )
    return dict(sorted(zip(counts["scenario"].to_list(), counts["devices"].to_list(), strict=True)))


@dataclass(frozen=True)
class MixDeviation:
    """One scenario's devices against the range a correct mix yields but for rare chance."""

    scenario: str
    devices: int
    observed_share: float
    expected_share: float
    allowed_devices: tuple[int, int]

    @property
    def within(self) -> bool:
        low, high = self.allowed_devices
        return low <= self.devices <= high


@dataclass(frozen=True)
class MixComparison:
    devices: int
    scenarios: list[MixDeviation]

    @property
    def out_of_tolerance(self) -> list[str]:
        return [d.scenario for d in self.scenarios if not d.within]


def allowed_device_range(
    devices: int, share: float, false_alarm_rate: float = SCENARIO_MIX_FALSE_ALARM_RATE
) -> tuple[int, int]:
    """The central range of Binomial(devices, share) holding all but `false_alarm_rate` of it.

    Devices draw their scenario independently, so a scenario's count is binomial; a generator
    that allocates devices exactly lands in the middle of the range.
    """
    tail = false_alarm_rate / 2
    return int(binom.ppf(tail, devices, share)), int(binom.isf(tail, devices, share))


def compare_scenario_mix(
    device_counts: Mapping[str, int],
    expected_shares: Mapping[str, float],
    *,
    false_alarm_rate: float = SCENARIO_MIX_FALSE_ALARM_RATE,
) -> MixComparison:
    """Observed devices per scenario against the binomial range of the expected shares.

    A scenario the expectation does not name has expected share 0 and so an allowed range of
    (0, 0): a single device of it is out of tolerance (a flaming device in a nuisance partition).
    """
    total_expected = sum(expected_shares.values())
    if any(p < 0 for p in expected_shares.values()) or not math.isclose(total_expected, 1.0):
        raise ValueError(f"expected shares must be >= 0 and sum to 1, got {dict(expected_shares)}")
    if any(n < 0 for n in device_counts.values()):
        raise ValueError(f"device counts must be >= 0, got {dict(device_counts)}")
    n = sum(device_counts.values())
    rows = []
    for name in sorted(set(device_counts) | set(expected_shares)):
        p = min(expected_shares.get(name, 0.0), 1.0)
        k = device_counts.get(name, 0)
        allowed = allowed_device_range(n, p, false_alarm_rate)
        rows.append(MixDeviation(name, k, k / n if n else 0.0, p, allowed))
    return MixComparison(devices=n, scenarios=rows)


# --- distributions (SDMetrics) -----------------------------------------------------------------


def _finite_values(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[~np.isnan(array)]


def ks_complement(real: npt.ArrayLike, synthetic: npt.ArrayLike) -> float:
    """SDMetrics KSComplement: 1 - D, D the two-sample Kolmogorov-Smirnov statistic (the largest
    gap between the two empirical CDFs). Nulls and NaN are dropped first."""
    a = np.sort(_finite_values(real))
    b = np.sort(_finite_values(synthetic))
    if a.size == 0 or b.size == 0:
        raise ValueError(f"KS complement needs values on both sides, got {a.size} and {b.size}")
    # The ECDFs only change at observed values, so the supremum is reached at one of them.
    support = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, support, side="right") / a.size
    cdf_b = np.searchsorted(b, support, side="right") / b.size
    return float(1.0 - np.max(np.abs(cdf_a - cdf_b)))


def ks_critical_gap(n: int, m: int, alpha: float) -> float:
    """The KS statistic two samples of sizes n and m exceed with probability `alpha` when they
    come from one distribution (asymptotic: c(alpha) sqrt((n + m) / (n m)),
    c(alpha) = sqrt(-ln(alpha / 2) / 2); Smirnov, via scipy.stats.kstwobign)."""
    if n < 1 or m < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n, m >= 1 and alpha in (0, 1), got {n}, {m}, {alpha}")
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def distribution_floors(candidate_devices: int, reference_devices: int) -> tuple[float, float]:
    """The KS-complement floor and the overall-score floor of a comparison between samples of
    these many devices: KS_COMPLEMENT_MIN and OVERALL_QUALITY_MIN, lowered to what two samples
    of few devices reach by chance (KS_DEVICE_SIGNIFICANCE)."""
    devices = (candidate_devices, reference_devices)
    chance_gap = ks_critical_gap(*devices, KS_DEVICE_SIGNIFICANCE) if all(devices) else 1.0
    ks_floor = min(KS_COMPLEMENT_MIN, 1.0 - chance_gap)
    # The overall score averages the same device-limited KS scores, so it gets the same slack.
    return ks_floor, min(OVERALL_QUALITY_MIN, ks_floor)


def distinct_devices(readings: Frame) -> int:
    lf = _lazy(readings)
    _require(lf.collect_schema().names(), ("device_id",), "distinct_devices")
    return int(_collect(lf.select(pl.col("device_id").drop_nulls().n_unique())).item())


def _pearson(x: npt.ArrayLike, y: npt.ArrayLike, side: str) -> float:
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(y, dtype=np.float64).ravel()
    if xs.size != ys.size:
        raise ValueError(f"{side} columns differ in length: {xs.size} and {ys.size}")
    complete = ~(np.isnan(xs) | np.isnan(ys))
    xs, ys = xs[complete], ys[complete]
    if xs.size < 2:
        raise ValueError(f"{side} columns have {xs.size} complete pair(s); a correlation needs 2")
    dx, dy = xs - xs.mean(), ys - ys.mean()
    denominator = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    if denominator == 0.0:
        raise ValueError(f"{side} correlation is undefined: a column is constant")
    return max(-1.0, min(1.0, float(np.dot(dx, dy)) / denominator))


def correlation_similarity(
    real_a: npt.ArrayLike, real_b: npt.ArrayLike, syn_a: npt.ArrayLike, syn_b: npt.ArrayLike
) -> float:
    """SDMetrics CorrelationSimilarity (Pearson): 1 - |r_real - r_synthetic| / 2.

    Rows where either column is null are dropped per side; a constant column has no
    correlation and is an error, as it is NaN in SDMetrics.
    """
    return 1.0 - abs(_pearson(real_a, real_b, "real") - _pearson(syn_a, syn_b, "synthetic")) / 2


def seeded_sample(
    readings: Frame, rows: int, *, seed: int, columns: Sequence[str] | None = None
) -> pl.DataFrame:
    """A uniform sample of at most `rows` rows without replacement, the same for the same data
    and seed: the rows with the smallest seeded hash of their key (a bottom-k sketch), which the
    streaming engine keeps in a heap of `rows` entries."""
    if rows < 1:
        raise ValueError(f"sample rows must be >= 1, got {rows}")
    lf = _lazy(readings)
    names = lf.collect_schema().names()
    key = [c for c in KEY_COLUMNS if c in names] or names
    keyed = lf.with_columns(pl.struct(key).hash(seed).alias(_SAMPLE_KEY))
    sample = keyed.bottom_k(rows, by=_SAMPLE_KEY)
    return _collect(sample.select(columns) if columns is not None else sample.drop(_SAMPLE_KEY))


@dataclass(frozen=True)
class DistributionReport:
    """SDMetrics-style quality of a candidate against a reference, on seeded samples.

    A score is None where it cannot be computed; `skipped` says why (a channel all-null or
    missing on a side, a constant channel for a correlation).
    """

    candidate_rows: int
    reference_rows: int
    ks_complement: dict[str, float | None]
    correlation_similarity: dict[tuple[str, str], float | None]
    skipped: dict[str, str] = field(default_factory=dict)
    # Channel -> the side(s) where it is missing or all null.
    channel_gaps: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ks_mean(self) -> float | None:
        return _mean(self.ks_complement.values())

    @property
    def correlation_mean(self) -> float | None:
        return _mean(self.correlation_similarity.values())

    @property
    def overall(self) -> float | None:
        """The Quality Report's score: the mean of column shapes and column-pair trends."""
        return _mean([self.ks_mean, self.correlation_mean])

    def to_markdown(self) -> str:
        def fmt(score: float | None) -> str:
            return "n/a" if score is None else f"{score:.3f}"

        lines = ["| measure | columns | score |", "|---|---|---|"]
        lines += [f"| KS complement | {c} | {fmt(s)} |" for c, s in self.ks_complement.items()]
        lines += [
            f"| correlation similarity | {a} ~ {b} | {fmt(s)} |"
            for (a, b), s in self.correlation_similarity.items()
        ]
        lines.append(f"| **overall** | | **{fmt(self.overall)}** |")
        lines += [f"\n- {what}: {why}" for what, why in self.skipped.items()]
        return "\n".join(lines)


def _mean(scores: Iterable[float | None]) -> float | None:
    known = [s for s in scores if s is not None]
    return sum(known) / len(known) if known else None


def distribution_report(
    candidate: pl.LazyFrame,
    reference: pl.LazyFrame,
    *,
    sample_rows: int,
    seed: int,
    channels: Sequence[str] = CHANNEL_NAMES,
) -> DistributionReport:
    """KS complement per channel, correlation similarity per channel pair, and their overall
    score, with the reference as SDMetrics' "real" data, each side sampled to `sample_rows`."""
    sides = {"candidate": candidate, "reference": reference}
    present = {side: set(lf.collect_schema().names()) for side, lf in sides.items()}
    skipped: dict[str, str] = {}
    gaps: dict[str, tuple[str, ...]] = {}
    usable = []
    for c in channels:
        absent = [side for side in sides if c not in present[side]]
        if absent:
            skipped[c] = f"missing from {' and '.join(absent)}"
            gaps[c] = tuple(absent)
        else:
            usable.append(c)
    # A channel of another type becomes all-null here and is reported, not a crash.
    as_float = [pl.col(c).cast(pl.Float64, strict=False) for c in usable]
    samples = {
        side: seeded_sample(lf, sample_rows, seed=seed, columns=usable).select(as_float)
        for side, lf in sides.items()
    }
    cand, ref = samples["candidate"], samples["reference"]
    ks: dict[str, float | None] = {}
    for c in usable:
        empty = [side for side, s in samples.items() if s[c].drop_nulls().drop_nans().len() == 0]
        if empty:
            skipped[c] = f"all null in {' and '.join(empty)}"
            gaps[c] = tuple(empty)
            ks[c] = None
        else:
            ks[c] = ks_complement(ref[c].to_numpy(), cand[c].to_numpy())
    pairs: dict[tuple[str, str], float | None] = {}
    for a, b in itertools.combinations([c for c in usable if ks[c] is not None], 2):
        try:
            pairs[(a, b)] = correlation_similarity(
                ref[a].to_numpy(), ref[b].to_numpy(), cand[a].to_numpy(), cand[b].to_numpy()
            )
        except ValueError as e:
            pairs[(a, b)] = None
            skipped[f"{a} ~ {b}"] = str(e)
    return DistributionReport(
        candidate_rows=cand.height,
        reference_rows=ref.height,
        ks_complement=ks,
        correlation_similarity=pairs,
        skipped=skipped,
        channel_gaps=gaps,
    )


@dataclass(frozen=True)
class DistributionVerdict:
    """A distribution report judged against the floors for the devices compared: the bronze
    check's verdict, which the action API's quality metrics report as they are."""

    report: DistributionReport
    candidate_devices: int
    reference_devices: int
    ks_floor: float
    overall_floor: float
    channels_below_floor: tuple[str, ...]
    # All-null or missing on one side only is a different distribution; on both sides there is
    # nothing to judge, so that channel is left out of the verdict.
    one_sided_nulls: tuple[str, ...]

    @property
    def passed(self) -> bool:
        overall = self.report.overall
        return (
            overall is not None
            and overall >= self.overall_floor
            and not self.channels_below_floor
            and not self.one_sided_nulls
        )


def distribution_verdict(
    candidate: pl.LazyFrame,
    reference: pl.LazyFrame,
    *,
    sample_rows: int = DISTRIBUTION_SAMPLE_ROWS,
    seed: int = DISTRIBUTION_SAMPLE_SEED,
    channels: Sequence[str] = CHANNEL_NAMES,
) -> DistributionVerdict:
    """The candidate's distribution_report against the reference, with the floors of
    distribution_floors for the devices on each side, and whether it passes them."""
    report = distribution_report(
        candidate, reference, sample_rows=sample_rows, seed=seed, channels=channels
    )
    devices = (distinct_devices(candidate), distinct_devices(reference))
    ks_floor, overall_floor = distribution_floors(*devices)
    return DistributionVerdict(
        report=report,
        candidate_devices=devices[0],
        reference_devices=devices[1],
        ks_floor=ks_floor,
        overall_floor=overall_floor,
        channels_below_floor=tuple(
            c for c, s in report.ks_complement.items() if s is not None and s < ks_floor
        ),
        one_sided_nulls=tuple(c for c, sides in report.channel_gaps.items() if len(sides) == 1),
    )
