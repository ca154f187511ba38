"""The training set: gold features of synthetic devices, labelled, split without leakage.

Leakage rules. A device's readings are one fire (or one nuisance) seen second by second, so rows
of one device are never independent: every split takes whole devices. Field, NIST and landed
readings carry no trustworthy labels and are what the detector is judged on, so only
TRAINING_SOURCES rows enter any split. A family hold-out keeps whole scenarios out of training
and validation, to test on fires the detector has never seen.

Randomness is a keyed hash of (purpose, seed, device id), not a generator: a device's split and
channel profile do not depend on which other devices are in the frame or in what order, so a
training set rebuilt on more data keeps every earlier device where it was (the exception is a
family too small for its hash draws to reach every split, `assign_splits`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import polars as pl

from firepipe.core.features.spec import ID_COLUMNS, FeatureSpec, input_channels
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.simulation import scenarios as sc

LABEL = "label"  # Boolean: a fire burns at this reading (is_fire & seconds_since_ignition >= 0)
SPLIT = "split"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
FAMILY = "scenario_family"
SECONDS_SINCE_IGNITION = "seconds_since_ignition"
PROFILE = "channel_profile"
PROFILE_SEPARATOR = "+"
COPY_MARK = "~noise"  # a noisy copy's id: <device_id>~noise<k> (firepipe.core.training.augment)
VIEW_MARK = "@"  # a device seen through one channel profile: <device_id>@<profile>
TRAINING_SOURCES: tuple[str, ...] = ("synthetic",)  # field/NIST/landed never enter a split
SplitKind = Literal["device", "time_blocked", "family_holdout"]
SPLIT_KINDS: tuple[str, ...] = get_args(SplitKind)
SILVER_COLUMNS: tuple[str, ...] = ("device_id", "ts", "source", SECONDS_SINCE_IGNITION)

_T, _V, _S = "temperature_c", "smoke_obscuration_pct_per_m", "co2_ppm"
# The channel sets a device may have. Each profile observed on a NIST station is here (counts of
# the 36 stations in firepipe/data/nist_smoke_alarms, from nist.read_tests), so the detector
# trains on every situation `firepipe evaluate-real` puts it in.
CHANNEL_PROFILES: tuple[tuple[str, ...], ...] = (
    CHANNEL_NAMES,  # firepipe's own multi-sensor device: all 8 channels
    (_T, _V, "co_ppm", _S),  # NIST stations with a working gas analyser (13)
    (_T, _V, "co_ppm"),  # photo + heat + CO combination alarms (UL 217 with UL 2034); NIST (3)
    (_T, _V, _S),  # NIST stations whose CO trace failed screening (4)
    (_T, _V),  # NIST stations without a gas analyser (14): the commonest real case
    (_T, "co_ppm", _S),  # a NIST station whose smoke meter failed screening (SDC10-C)
    (_T,),  # a heat detector; NIST SDC10-E, where only the thermocouple passed screening
    (_V,),  # a plain photoelectric smoke alarm, the commonest home alarm (NFPA, 2021)
)


@dataclass(frozen=True)
class SplitConfig:
    kind: SplitKind = "device"
    validation_share: float = 0.15
    test_share: float = 0.15
    holdout_scenarios: tuple[str, ...] = ()  # family_holdout: these go to test only
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ValueError(f"split kind must be one of {SPLIT_KINDS}, got {self.kind!r}")
        for name, share in (("validation", self.validation_share), ("test", self.test_share)):
            if not (math.isfinite(share) and 0.0 <= share < 1.0):
                raise ValueError(f"{name}_share must be within [0, 1), got {share}")
        if self.validation_share + self.test_share >= 1.0:
            raise ValueError("validation_share + test_share must leave a share for training")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if (self.kind == "family_holdout") != bool(self.holdout_scenarios):
            raise ValueError("holdout_scenarios are given exactly when kind is 'family_holdout'")
        self.held_out()  # raises on unknown names

    @property
    def shares(self) -> tuple[float, float, float]:
        """Shares of (train, validation, test), in SPLITS order."""
        return (
            1.0 - self.validation_share - self.test_share,
            self.validation_share,
            self.test_share,
        )

    def held_out(self) -> tuple[str, ...]:
        """The held-out scenario names; a family name stands for all of its scenarios."""
        names: list[str] = []
        for name in self.holdout_scenarios:
            if name in sc.FAMILIES:
                names.extend(s.name for s in sc.in_families((name,)))
            else:
                try:
                    names.append(sc.scenario(name).name)
                except KeyError as e:
                    raise ValueError(f"holdout: {e.args[0]}; or a family: {sc.FAMILIES}") from e
        return tuple(dict.fromkeys(names))


def require_columns(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise a ValueError naming the columns of `columns` that `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}")


def training_frame(features: pl.DataFrame, silver: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Gold features of TRAINING_SOURCES readings with their label: ID_COLUMNS, scenario_family,
    seconds_since_ignition, LABEL, then the spec's features, in the order of `features`."""
    require_columns(features, [*ID_COLUMNS, *spec.names], "features")
    require_columns(silver, SILVER_COLUMNS, "silver")
    keys = ["device_id", "ts"]
    facts = silver.lazy().select(SILVER_COLUMNS)
    orphans = features.lazy().select(keys).join(facts, on=keys, how="anti").collect()
    if orphans.height:
        raise ValueError(
            f"{orphans.height} feature rows of {orphans['device_id'].n_unique()} device(s) "
            f"(e.g. {orphans['device_id'][0]}) have no silver reading: features and silver "
            "come from different data"
        )
    try:
        joined = (
            features.lazy()
            .select(*ID_COLUMNS, *spec.names)
            .join(
                facts.filter(pl.col("source").is_in(TRAINING_SOURCES)).drop("source"),
                on=keys,
                how="inner",
                validate="m:1",
                maintain_order="left",
            )
            .collect()
        )
    except pl.exceptions.ComputeError as e:
        raise ValueError(f"silver holds a (device_id, ts) more than once: {e}") from e
    _check_labels(joined)
    families = {s.name: s.family for s in sc.CATALOG}
    fire_burns = pl.col(SECONDS_SINCE_IGNITION) >= 0
    return joined.select(
        *ID_COLUMNS,
        pl.col("scenario").replace_strict(families, return_dtype=pl.String).alias(FAMILY),
        SECONDS_SINCE_IGNITION,
        (pl.col("is_fire") & fire_burns.fill_null(False)).alias(LABEL),
        *spec.names,
    )


def _check_labels(rows: pl.DataFrame) -> None:
    """Every training row names a catalog scenario, agrees with its is_fire, and a fire row
    knows its time since ignition."""
    per_scenario = rows.group_by("scenario").agg(
        pl.col("is_fire").n_unique().alias("kinds"),
        pl.col("is_fire").first(),
        (pl.col("is_fire") & pl.col(SECONDS_SINCE_IGNITION).is_null()).sum().alias("untimed"),
    )
    fire = {s.name: s.is_fire for s in sc.CATALOG}
    unknown = sorted(str(n) for n in per_scenario["scenario"].to_list() if n not in fire)
    if unknown:
        raise ValueError(
            f"synthetic readings name scenario(s) {unknown} that the catalog lacks; "
            f"known: {sorted(fire)}"
        )
    for row in per_scenario.iter_rows(named=True):  # one row per scenario
        if row["kinds"] != 1 or row["is_fire"] != fire[row["scenario"]]:
            raise ValueError(f"is_fire of scenario {row['scenario']} disagrees with the catalog")
        if row["untimed"]:
            raise ValueError(
                f"{row['untimed']} fire reading(s) of {row['scenario']} lack "
                "seconds_since_ignition: their label is unknown"
            )


def stable_u64(purpose: str, seed: int, key: str) -> int:
    """64 bits that are a function of (purpose, seed, key) alone: stable across runs, machines
    and polars versions (polars' own hash is not)."""
    return int.from_bytes(hashlib.blake2b(f"{purpose}:{seed}:{key}".encode()).digest()[:8])


def unit_hash(device_ids: pl.Series, purpose: str, seed: int) -> pl.Series:
    """A uniform number in [0, 1) per id, a function of (purpose, seed, id) alone
    (`stable_u64`)."""
    values = [  # the top 53 bits: exact in a float64, so never rounded up to 1.0
        (stable_u64(purpose, seed, i) >> 11) / 2.0**53
        for i in device_ids.to_list()  # one per device, not per row
    ]
    return pl.Series("_u", values, dtype=pl.Float64)


def quotas(devices: int, shares: Sequence[float]) -> list[int]:
    """Devices per split for these shares, by largest remainder; when there are at least as
    many devices as splits with a share, each such split gets one, taken from the largest."""
    raw = [devices * s for s in shares]
    counts = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[: devices - sum(counts)]:
        counts[i] += 1
    wanted = [i for i, s in enumerate(shares) if s > 0]
    if devices >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                counts[max(range(len(counts)), key=lambda j: counts[j])] -= 1
                counts[i] = 1
    return counts


def assign_splits(frame: pl.DataFrame, config: SplitConfig) -> pl.DataFrame:
    """`frame` with SPLIT: every device in exactly one split.

    device: a device goes to test when its hash is below test_share, to validation when below
    test_share + validation_share, else to train; per scenario family, a split these draws left
    without a device of a family that has a device for each split gets them by rank of hash
    (quotas), so every split sees fires and nuisances.
    time_blocked: within each family, devices by first ts (ties by hash): the earliest
    train share to train, then validation, the latest to test. Per family, because one
    generation run starts all its devices at once, and a global cut would leave whole families
    out of test whenever runs were made family by family.
    family_holdout: devices of the held-out scenarios go to test; the others as in `device`, so
    test still holds nuisances and baselines to count false alarms on.
    """
    require_columns(frame, ["device_id", "ts", "scenario", FAMILY], "frame")
    devices = (
        frame.group_by("device_id")
        .agg(
            pl.col("ts").min().alias("_first_ts"),
            pl.col("scenario").n_unique().alias("_scenarios"),
            pl.col("scenario").first(),
            pl.col(FAMILY).first(),
        )
        .sort("device_id")
    )
    mixed = devices.filter((pl.col("_scenarios") > 1) | pl.col(FAMILY).is_null())
    if mixed.height:
        raise ValueError(
            f"{mixed.height} device(s) (e.g. {mixed['device_id'][0]}) have more than one "
            "scenario or no scenario family: a device must be one labelled scenario"
        )
    devices = devices.with_columns(unit_hash(devices["device_id"], "split", config.seed))
    if config.kind == "time_blocked":
        split = _by_rank(devices, config.shares, ["_first_ts", "_u"], SPLITS)
    elif config.kind == "device":
        split = _by_device(devices, config.shares)
    else:
        held = pl.col("scenario").is_in(config.held_out())
        if not devices.select(held.any()).item():
            raise ValueError(
                f"no device of the held-out scenarios {config.held_out()}: "
                "the hold-out would test nothing"
            )
        split = pl.concat(
            [
                _by_device(devices.filter(~held), config.shares).select("device_id", SPLIT),
                devices.filter(held).select("device_id", pl.lit("test").alias(SPLIT)),
            ]
        )
    return frame.drop(SPLIT, strict=False).join(
        split.select("device_id", SPLIT), on="device_id", how="left", maintain_order="left"
    )


def _by_device(devices: pl.DataFrame, shares: tuple[float, float, float]) -> pl.DataFrame:
    _, validation, test = shares
    u = pl.col("_u")
    hashed = devices.with_columns(
        pl.when(u < test)
        .then(pl.lit("test"))
        .when(u < test + validation)
        .then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
        .alias(SPLIT)
    )
    wanted = [s for s, share in zip(SPLITS, shares, strict=True) if share > 0]
    counts = hashed.group_by(FAMILY).agg(
        pl.len().alias("_n"), *(pl.col(SPLIT).eq(s).sum().alias(s) for s in wanted)
    )
    short = counts.filter(
        pl.col("_n") >= len(wanted), pl.any_horizontal(pl.col(s) == 0 for s in wanted)
    )[FAMILY].to_list()
    if not short:
        return hashed
    # Ranked from the lowest hash, in the draws' own order (test, validation, train), so the
    # devices that move are those nearest the boundaries.
    repaired = _by_rank(devices.filter(pl.col(FAMILY).is_in(short)), shares, ["_u"], SPLITS[::-1])
    return pl.concat([hashed.filter(~pl.col(FAMILY).is_in(short)), repaired], how="diagonal")


def _by_rank(
    devices: pl.DataFrame,
    shares: tuple[float, float, float],
    order_by: list[str],
    sequence: tuple[str, ...],
) -> pl.DataFrame:
    """Within each family, devices in `order_by` order fill the splits of `sequence` in turn,
    each to its quota."""
    share_of = dict(zip(SPLITS, shares, strict=True))
    ends = []
    for family, n in devices.group_by(FAMILY).len().iter_rows():  # one row per family
        counts = quotas(n, [share_of[s] for s in sequence])
        ends.append((family, counts[0], counts[0] + counts[1]))
    limits = pl.DataFrame(ends, schema=[FAMILY, "_end0", "_end1"], orient="row")
    rank = pl.int_range(pl.len()).over(FAMILY)
    return (
        devices.sort(FAMILY, *order_by)
        .with_columns(rank.alias("_rank"))
        .join(limits, on=FAMILY)
        .with_columns(
            pl.when(pl.col("_rank") < pl.col("_end0"))
            .then(pl.lit(sequence[0]))
            .when(pl.col("_rank") < pl.col("_end1"))
            .then(pl.lit(sequence[1]))
            .otherwise(pl.lit(sequence[2]))
            .alias(SPLIT)
        )
    )


def class_balance(frame: pl.DataFrame) -> pl.DataFrame:
    """Per split x scenario family (every pair, zeros included): devices, rows, positives and
    positive_share (null without rows)."""
    require_columns(frame, ["device_id", SPLIT, FAMILY, LABEL], "frame")
    counts = frame.group_by(SPLIT, FAMILY).agg(
        pl.col("device_id").n_unique().cast(pl.Int64).alias("devices"),
        pl.len().cast(pl.Int64).alias("rows"),
        pl.col(LABEL).sum().cast(pl.Int64).alias("positives"),
    )
    present = frame[FAMILY].unique().to_list()
    families = [f for f in sc.FAMILIES if f in present] + sorted(
        str(f) for f in present if f not in sc.FAMILIES
    )
    grid = pl.DataFrame({SPLIT: SPLITS}).join(pl.DataFrame({FAMILY: families}), how="cross")
    return (
        grid.join(counts, on=[SPLIT, FAMILY], how="left", maintain_order="left")
        .with_columns(pl.col("devices", "rows", "positives").fill_null(0))
        .with_columns(
            pl.when(pl.col("rows") > 0)
            .then(pl.col("positives") / pl.col("rows"))
            .alias("positive_share")
        )
    )


def profile_name(channels: Iterable[str]) -> str:
    """A channel set's name: its channels in CHANNEL_NAMES' order, joined by "+" (the PROFILE
    column's values, and the key of a detector's operating point per profile)."""
    have = set(channels)
    unknown = sorted(have - set(CHANNEL_NAMES))
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}; known: {', '.join(CHANNEL_NAMES)}")
    if not have:
        raise ValueError("a channel profile needs at least one channel")
    return PROFILE_SEPARATOR.join(c for c in CHANNEL_NAMES if c in have)


def parse_profile(text: str) -> str:
    """`profile_name` of "+"-separated channel names in any order ("co_ppm+temperature_c")."""
    return profile_name(part.strip() for part in text.split(PROFILE_SEPARATOR) if part.strip())


def source_device(device_id: pl.Expr) -> pl.Expr:
    """The simulated device a training row comes from: its own id, or its original's for a
    noisy copy (`<device_id>~noise<k>`, firepipe.core.training.augment)."""
    return device_id.str.split(COPY_MARK).list.first()


def profile_views(
    frame: pl.DataFrame, spec: FeatureSpec, profiles: Sequence[Sequence[str]] = CHANNEL_PROFILES
) -> pl.DataFrame:
    """Every device of `frame` seen through each of `profiles` in turn, as its own device
    `<device_id>@<profile>` with PROFILE set (`mask_channels` with that one profile): a hold-out
    that measures the detector at every channel profile on all of its devices."""
    views = [
        mask_channels(frame, spec, [profile]).with_columns(
            pl.concat_str("device_id", pl.lit(f"{VIEW_MARK}{profile_name(profile)}")),
            pl.col(PROFILE).cast(pl.String),
        )
        for profile in profiles
    ]
    return pl.concat(views)


def mask_channels(
    frame: pl.DataFrame,
    spec: FeatureSpec,
    profiles: Sequence[Sequence[str]] = CHANNEL_PROFILES,
    seed: int = 0,
    *,
    only_splits: Collection[str] | None = None,
) -> pl.DataFrame:
    """`frame` with, per device, one of `profiles` (drawn by a hash of device id and seed) in
    PROFILE, and every feature of the spec whose input channels are not all in it nulled: a
    device lacking a sensor has none of its features, so the detector learns to do without.

    With `only_splits`, rows of the other splits (by SPLIT) keep every feature, under the
    profile of all channels (a simulated device has all of them). PROFILE is an Enum."""
    if not profiles or any(not p for p in profiles):
        raise ValueError("profiles must be a non-empty list of non-empty channel lists")
    unknown = sorted({c for p in profiles for c in p} - set(CHANNEL_NAMES))
    if unknown:
        raise ValueError(f"profiles name unknown channel(s) {unknown}; known: {CHANNEL_NAMES}")
    names = [profile_name(p) for p in profiles]
    if len(set(names)) != len(names) or any(len(set(p)) != len(p) for p in profiles):
        raise ValueError("profiles must differ and name each channel once")
    require_columns(frame, ["device_id", *spec.names], "frame")
    devices = frame["device_id"].unique().sort()
    drawn = (unit_hash(devices, "channels", seed) * len(profiles)).floor().cast(pl.Int32)
    chosen = pl.DataFrame({"device_id": devices, "_profile": drawn})
    every = [*profiles]
    if profile_name(CHANNEL_NAMES) not in names:
        every.append(CHANNEL_NAMES)
        names.append(profile_name(CHANNEL_NAMES))
    profile = pl.col("_profile")
    if only_splits is not None:
        require_columns(frame, [SPLIT], "frame")
        unmasked = names.index(profile_name(CHANNEL_NAMES))
        profile = pl.when(pl.col(SPLIT).is_in(list(only_splits))).then(profile).otherwise(unmasked)
    masked = []
    for feature in spec.features:  # 61 expressions, each over all rows
        needs = set(input_channels(feature))
        keep = [i for i, p in enumerate(every) if needs <= set(p)]
        if len(keep) < len(every):
            masked.append(pl.when(pl.col("_profile").is_in(keep)).then(pl.col(feature.name)))
    return (
        frame.drop(PROFILE, strict=False)
        .join(chosen, on="device_id", how="left", maintain_order="left")
        .with_columns(profile)
        .with_columns(
            *masked,
            pl.col("_profile")
            .replace_strict(dict(enumerate(names)), return_dtype=pl.Enum(names))
            .alias(PROFILE),
        )
        .drop("_profile")
    )
