"""Gold features, declared once as data and compiled to polars expressions.

A feature spec is a list of small records; its hash names the feature version, so a change of
window, statistic or channel is a new version that can be told apart in the lake.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

import polars as pl

from firepipe.core import quality
from firepipe.core.readings import CHANNEL_NAMES

Statistic = Literal["mean", "std", "min", "max"]
ID_COLUMNS: tuple[str, ...] = ("site_id", "device_id", "ts", "scenario", "is_fire")


@dataclass(frozen=True)
class Rolling:
    """A statistic of a channel over the trailing `window_s` seconds, this second included."""

    channel: str
    statistic: Statistic
    window_s: int

    @property
    def name(self) -> str:
        return f"{self.channel}__{self.statistic}_{self.window_s}s"


@dataclass(frozen=True)
class Difference:
    """The change of a channel since its reading `lag_s` seconds earlier (null without one)."""

    channel: str
    lag_s: int

    @property
    def name(self) -> str:
        return f"{self.channel}__diff_{self.lag_s}s"


Feature = Rolling | Difference


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

    def hash(self) -> str:
        canonical = [{"kind": type(f).__name__, **asdict(f)} for f in self.features]
        blob = json.dumps(canonical, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def default_spec(
    channels: tuple[str, ...] = CHANNEL_NAMES,
    windows_s: tuple[int, ...] = (30, 300),
    statistics: tuple[Statistic, ...] = ("mean", "std", "max"),
    difference_lag_s: int = 60,
) -> FeatureSpec:
    rolling = [Rolling(c, s, w) for c in channels for w in windows_s for s in statistics]
    return FeatureSpec((*rolling, *(Difference(c, difference_lag_s) for c in channels)))


def _rolling(feature: Rolling) -> pl.Expr:
    rolling = getattr(pl.col(feature.channel), f"rolling_{feature.statistic}_by")
    return rolling("ts", f"{feature.window_s}s").over("device_id")  # type: ignore[no-any-return]


def compute_features(readings: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Per-device features of readings, returned sorted by (device_id, ts).

    Windows and differences are in time, not rows: a device with gaps, or one that reports
    every 5 s, gets the change against its reading exactly `lag_s` seconds earlier (null when
    it has none) and statistics over the readings inside each window.
    """
    ordered = readings.sort("device_id", "ts")
    rolling = [_rolling(f).alias(f.name) for f in spec.features if isinstance(f, Rolling)]
    differences = [f for f in spec.features if isinstance(f, Difference)]
    channels = sorted({f.channel for f in differences})
    out = ordered.select(*ID_COLUMNS, *channels, *rolling)
    for lag_s in sorted({f.lag_s for f in differences}):
        lagged = [f for f in differences if f.lag_s == lag_s]
        earlier = ordered.select(
            "device_id",
            pl.col("ts") + pl.duration(seconds=lag_s),
            *(pl.col(f.channel).alias(f"{f.name}__earlier") for f in lagged),
        )
        out = out.join(earlier, on=["device_id", "ts"], how="left", maintain_order="left")
        out = out.with_columns(
            (pl.col(f.channel) - pl.col(f"{f.name}__earlier")).alias(f.name) for f in lagged
        )
    return out.select(*ID_COLUMNS, *spec.names).with_columns(pl.col(spec.names).cast(pl.Float32))


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
