"""The training set: labels from silver, leakage-safe splits, class balance, channel masking."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firepipe.core.features.spec import (
    ID_COLUMNS,
    Difference,
    FeatureSpec,
    Ratio,
    Rolling,
    SmokeHeatLag,
    compute_features,
    default_spec,
    input_channels,
)
from firepipe.core.ingestion.extraction import FIELD_READING_SCHEMA
from firepipe.core.lake.standardise import to_silver
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.realdata import nist
from firepipe.core.simulation import scenarios as sc
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.core.training import dataset as ds
from firepipe_tests.conftest import nist_data_dir

START = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = FeatureSpec(
    (
        Rolling("temperature_c", "mean", 30),
        Difference("smoke_obscuration_pct_per_m", 60),
        Ratio("co_ppm", "co2_ppm"),
        SmokeHeatLag(),
    )
)
# Every catalog scenario, cycled through by `devices_frame`.
SCENARIOS = [s.name for s in sc.CATALOG]


def readings(
    devices: list[tuple[str, str | None, str]], seconds: int = 10, ignition_s: int = 5
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(features, silver) for devices (device_id, scenario or None for field, source): one
    reading a second from START (a device's first ts is START plus its index in minutes), fires
    ignite `ignition_s` seconds in; feature values are random."""
    rng = np.random.default_rng(0)
    silver, features = [], []
    for i, (device_id, scenario, source) in enumerate(devices):
        is_fire = sc.scenario(scenario).is_fire if scenario else None
        t = np.arange(seconds)
        ts = [START + timedelta(minutes=i, seconds=int(s)) for s in t]
        since = (t - ignition_s).astype(np.float32) if is_fire else [None] * seconds
        ids = {
            "site_id": "site-0",
            "device_id": device_id,
            "ts": ts,
            "scenario": scenario,
            "is_fire": is_fire,
        }
        silver.append(
            pl.DataFrame(
                {**ids, "source": source, "seconds_since_ignition": since},
                schema_overrides={"seconds_since_ignition": pl.Float32, "scenario": pl.String},
            ).with_columns(pl.col("is_fire").cast(pl.Boolean))
        )
        values = {n: rng.random(seconds).astype(np.float32) for n in SPEC.names}
        features.append(
            pl.DataFrame({**ids, **values}, schema_overrides={"scenario": pl.String}).with_columns(
                pl.col("is_fire").cast(pl.Boolean)
            )
        )
    return pl.concat(features), pl.concat(silver)


def devices_frame(
    count: int, scenarios: list[str] = SCENARIOS, prefix: str = "syn-0-"
) -> pl.DataFrame:
    """A training frame of `count` devices cycling through `scenarios`, two readings each."""
    ids = [f"{prefix}{i}" for i in range(count)]
    names = [scenarios[i % len(scenarios)] for i in range(count)]
    per_device = pl.DataFrame(
        {
            "device_id": ids,
            "scenario": names,
            ds.FAMILY: [sc.scenario(n).family for n in names],
            "first": [START + timedelta(hours=i % 7, seconds=i) for i in range(count)],
        }
    )
    return per_device.select(pl.all().repeat_by(2).explode()).with_columns(
        (pl.col("first") + pl.duration(seconds=pl.int_range(pl.len()).over("device_id"))).alias(
            "ts"
        ),
        (pl.int_range(pl.len()).over("device_id") == 1).alias(ds.LABEL),
    )


# --- training_frame ---------------------------------------------------------------------------


def test_training_frame_labels_synthetic_rows_and_drops_field_and_landed() -> None:
    features, silver = readings(
        [
            ("syn-0-0", "flaming_fast", "synthetic"),
            ("syn-0-1", "cooking_frying", "synthetic"),
            ("field-0", None, "field"),
            ("nist-SDC02-A", None, "field"),
        ]
    )
    # A landed correction won one second of the nuisance device in silver: its label is unknown.
    corrected = START + timedelta(minutes=1, seconds=3)
    silver = silver.with_columns(
        pl.when((pl.col("device_id") == "syn-0-1") & (pl.col("ts") == corrected))
        .then(pl.lit("landed"))
        .otherwise(pl.col("source"))
        .alias("source")
    )
    frame = ds.training_frame(features, silver, SPEC)
    assert frame.columns == [
        *ID_COLUMNS,
        ds.FAMILY,
        ds.SECONDS_SINCE_IGNITION,
        ds.LABEL,
        *SPEC.names,
    ]
    assert sorted(frame["device_id"].unique()) == ["syn-0-0", "syn-0-1"]
    assert frame.height == 19
    assert corrected not in frame.filter(device_id="syn-0-1")["ts"]
    fire = frame.filter(device_id="syn-0-0")
    # Ignition 5 s in: seconds 5..9 burn, 0..4 do not.
    assert fire[ds.LABEL].to_list() == [False] * 5 + [True] * 5
    assert fire[ds.SECONDS_SINCE_IGNITION].to_list()[:2] == [-5.0, -4.0]
    assert fire[ds.FAMILY].unique().to_list() == ["flaming"]
    nuisance = frame.filter(device_id="syn-0-1")
    assert not nuisance[ds.LABEL].any()
    assert nuisance[ds.FAMILY].unique().to_list() == ["nuisance"]
    # Feature values are carried, not recomputed.
    original = features.filter(device_id="syn-0-0")["temperature_c__mean_30s"]
    assert fire["temperature_c__mean_30s"].equals(original)


def test_training_frame_of_field_rows_only_is_empty() -> None:
    features, silver = readings([("field-0", None, "field")])
    frame = ds.training_frame(features, silver, SPEC)
    assert frame.height == 0
    assert ds.LABEL in frame.columns


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f, s: (f.drop("co_ppm__per__co2_ppm"), s), r"features lack.*co_ppm__per__co2_ppm"),
        (lambda f, s: (f, s.drop("source")), r"silver lacks.*source"),
        (
            lambda f, s: (f.with_columns(scenario=pl.lit("nist_flaming")), s),
            r"scenario\(s\) \['nist_flaming'\] that the catalog lacks",
        ),
        (
            lambda f, s: (f.with_columns(is_fire=pl.lit(False)), s),
            "is_fire of scenario flaming_fast disagrees",
        ),
        (
            lambda f, s: (f, s.with_columns(seconds_since_ignition=None)),
            "lack seconds_since_ignition",
        ),
        (lambda f, s: (f, s.filter(pl.col("ts") > START)), "1 feature rows of 1 device"),
        (lambda f, s: (f, pl.concat([s, s.head(1)])), "more than once"),
    ],
)
def test_training_frame_refuses_bad_input(change, message: str) -> None:
    features, silver = change(*readings([("syn-0-0", "flaming_fast", "synthetic")]))
    with pytest.raises(ValueError, match=message):
        ds.training_frame(features, silver, SPEC)


# --- SplitConfig and quotas -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "random"}, "split kind"),
        ({"test_share": 1.0}, "test_share"),
        ({"validation_share": -0.1}, "validation_share"),
        ({"validation_share": 0.5, "test_share": 0.5}, "leave a share"),
        ({"seed": -1}, "seed"),
        ({"kind": "family_holdout"}, "holdout_scenarios"),
        ({"holdout_scenarios": ("dust",)}, "holdout_scenarios"),
        ({"kind": "family_holdout", "holdout_scenarios": ("bonfire",)}, "bonfire"),
    ],
)
def test_split_config_refuses_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ds.SplitConfig(**kwargs)


def test_held_out_expands_families() -> None:
    config = ds.SplitConfig(kind="family_holdout", holdout_scenarios=("smouldering", "dust"))
    assert config.held_out() == ("smouldering_upholstery", "smouldering_cotton", "dust")


def test_quotas() -> None:
    assert ds.quotas(10, [0.7, 0.15, 0.15]) == [7, 2, 1]
    assert ds.quotas(3, [0.7, 0.15, 0.15]) == [1, 1, 1]  # every split gets one
    assert ds.quotas(2, [0.7, 0.15, 0.15]) == [2, 0, 0]  # too few to give each one
    assert ds.quotas(5, [0.8, 0.0, 0.2]) == [4, 0, 1]


@given(
    st.integers(0, 500),
    st.floats(0.0, 0.45),
    st.floats(0.0, 0.45),
)
def test_quotas_share_out_every_device(devices: int, validation: float, test: float) -> None:
    shares = [1 - validation - test, validation, test]
    counts = ds.quotas(devices, shares)
    assert sum(counts) == devices
    assert min(counts) >= 0
    wanted = [i for i, s in enumerate(shares) if s > 0]
    if devices >= len(wanted):
        assert all(counts[i] >= 1 for i in wanted)
    assert all(abs(c - devices * s) <= 1 + len(shares) for c, s in zip(counts, shares, strict=True))


# --- assign_splits ----------------------------------------------------------------------------


def device_splits(frame: pl.DataFrame) -> dict[str, str]:
    per_device = frame.group_by("device_id").agg(pl.col(ds.SPLIT).unique())
    assert per_device[ds.SPLIT].list.len().max() == 1, "a device in more than one split"
    return dict(zip(per_device["device_id"], per_device[ds.SPLIT].list.first(), strict=True))


def test_device_split_keeps_devices_whole_and_is_stable() -> None:
    frame = devices_frame(400)
    config = ds.SplitConfig(seed=7)
    splits = device_splits(ds.assign_splits(frame, config))
    assert len(splits) == 400
    shares = {s: list(splits.values()).count(s) / 400 for s in ds.SPLITS}
    assert 0.6 < shares["train"] < 0.8
    assert 0.08 < shares["test"] < 0.22
    # The same seed on a reordered frame, and on more devices, leaves every device where it was.
    assert device_splits(ds.assign_splits(frame.reverse(), config)) == splits
    more = pl.concat([frame, devices_frame(200, prefix="syn-1-")])
    again = device_splits(ds.assign_splits(more, config))
    assert {d: again[d] for d in splits} == splits
    # Another seed is another draw.
    other = device_splits(ds.assign_splits(frame, ds.SplitConfig(seed=8)))
    assert sum(other[d] != splits[d] for d in splits) > 100


def test_device_split_gives_every_split_each_family_it_can() -> None:
    # Three fires and four nuisances: hash draws alone often leave a split without one.
    scenarios = ["flaming_fast"] * 3 + ["dust"] * 4 + ["clean_baseline"] * 2
    frame = devices_frame(len(scenarios), scenarios)
    draws_fell_short = 0
    for seed in range(20):
        u = ds.unit_hash(pl.Series([f"syn-0-{i}" for i in range(3)]), "split", seed)
        draws_fell_short += int((u < 0.15).sum() == 0 or ((u >= 0.15) & (u < 0.3)).sum() == 0)
        split = ds.assign_splits(frame, ds.SplitConfig(seed=seed))
        by_family = split.group_by(ds.FAMILY).agg(pl.col(ds.SPLIT).n_unique())
        spread = dict(by_family.iter_rows())
        assert spread["flaming"] == 3, seed
        assert spread["nuisance"] == 3, seed
        assert spread["baseline"] <= 2  # two devices cannot fill three splits
        device_splits(split)
    assert draws_fell_short > 10  # the test exercised the quota path


def test_time_blocked_split_trains_on_the_earliest_devices() -> None:
    frame = devices_frame(140)
    split = ds.assign_splits(frame, ds.SplitConfig(kind="time_blocked", seed=3))
    device_splits(split)
    first = split.group_by("device_id", ds.FAMILY, ds.SPLIT).agg(pl.col("ts").min())
    for family in sc.FAMILIES:
        of = first.filter(pl.col(ds.FAMILY) == family)
        span = {s: of.filter(pl.col(ds.SPLIT) == s)["ts"] for s in ds.SPLITS}
        assert span["train"].max() <= span["validation"].min(), family
        assert span["validation"].max() <= span["test"].min(), family
        assert [len(span[s]) for s in ds.SPLITS] == ds.quotas(of.height, [0.7, 0.15, 0.15])


def test_family_holdout_keeps_its_scenarios_in_test_only() -> None:
    frame = devices_frame(300)
    config = ds.SplitConfig(
        kind="family_holdout", holdout_scenarios=("smouldering", "flaming_ultra_fast"), seed=1
    )
    split = ds.assign_splits(frame, config)
    splits = device_splits(split)
    held = split.filter(pl.col("scenario").is_in(config.held_out()))
    assert held.height > 0
    assert held[ds.SPLIT].unique().to_list() == ["test"]
    seen = split.filter(pl.col(ds.SPLIT) != "test")["scenario"].unique().to_list()
    assert not set(seen) & set(config.held_out())
    assert {"flaming_fast", "dust", "clean_baseline"} <= set(seen)
    # Test also holds a share of the other devices, to count false alarms on.
    test_families = split.filter(pl.col(ds.SPLIT) == "test")[ds.FAMILY].unique().to_list()
    assert {"nuisance", "baseline", "flaming", "smouldering"} <= set(test_families)
    # The devices not held out are split as the device split would (by their own hash).
    plain = device_splits(ds.assign_splits(frame, ds.SplitConfig(seed=1)))
    others = set(frame.filter(~pl.col("scenario").is_in(config.held_out()))["device_id"])
    assert sum(plain[d] == splits[d] for d in others) == len(others)


def test_family_holdout_without_its_devices_is_refused() -> None:
    frame = devices_frame(10, ["dust", "clean_baseline"])
    with pytest.raises(ValueError, match="would test nothing"):
        ds.assign_splits(
            frame, ds.SplitConfig(kind="family_holdout", holdout_scenarios=("smouldering",))
        )


def test_a_device_with_two_scenarios_is_refused() -> None:
    frame = devices_frame(4, ["dust"]).with_columns(
        pl.when(pl.col(ds.LABEL)).then(pl.lit("candle")).otherwise("scenario").alias("scenario")
    )
    with pytest.raises(ValueError, match="more than one scenario"):
        ds.assign_splits(frame, ds.SplitConfig())


# --- class_balance ----------------------------------------------------------------------------


def test_class_balance_counts_every_split_and_family() -> None:
    frame = devices_frame(6, ["flaming_fast", "dust"]).with_columns(
        pl.when(pl.col("device_id").is_in(["syn-0-0", "syn-0-1", "syn-0-2"]))
        .then(pl.lit("train"))
        .otherwise(pl.lit("test"))
        .alias(ds.SPLIT),
        pl.col(ds.LABEL) & (pl.col(ds.FAMILY) == "flaming"),
    )
    balance = ds.class_balance(frame)
    rows = {(r[ds.SPLIT], r[ds.FAMILY]): r for r in balance.iter_rows(named=True)}
    assert balance[ds.SPLIT].to_list()[:2] == ["train", "train"]
    assert len(rows) == 6
    # train: syn-0-0 and syn-0-2 are flaming (one positive reading each), syn-0-1 is dust.
    assert rows[("train", "flaming")] == {
        ds.SPLIT: "train",
        ds.FAMILY: "flaming",
        "devices": 2,
        "rows": 4,
        "positives": 2,
        "positive_share": 0.5,
    }
    assert rows[("test", "nuisance")]["devices"] == 2
    assert rows[("test", "nuisance")]["positives"] == 0
    assert rows[("validation", "flaming")]["rows"] == 0
    assert rows[("validation", "flaming")]["positive_share"] is None


# --- mask_channels ----------------------------------------------------------------------------


def test_mask_channels_nulls_the_features_of_absent_channels() -> None:
    features, silver = readings([(f"syn-0-{i}", "dust", "synthetic") for i in range(3)])
    frame = ds.training_frame(features, silver, SPEC)
    smoke_only = ds.mask_channels(frame, SPEC, profiles=[("smoke_obscuration_pct_per_m",)])
    assert smoke_only[ds.PROFILE].unique().to_list() == ["smoke_obscuration_pct_per_m"]
    assert smoke_only["smoke_obscuration_pct_per_m__diff_60s"].equals(
        frame["smoke_obscuration_pct_per_m__diff_60s"]
    )
    for gone in ("temperature_c__mean_30s", "co_ppm__per__co2_ppm", "smoke_heat_lag_300s"):
        assert smoke_only[gone].null_count() == frame.height, gone
        assert smoke_only[gone].dtype == pl.Float32
    gas = ds.mask_channels(frame, SPEC, profiles=[("co_ppm", "co2_ppm", "temperature_c")])
    assert gas["co_ppm__per__co2_ppm"].equals(frame["co_ppm__per__co2_ppm"])
    assert gas["temperature_c__mean_30s"].equals(frame["temperature_c__mean_30s"])
    assert gas["smoke_heat_lag_300s"].null_count() == frame.height


def test_a_profile_is_named_by_its_channels_in_one_order() -> None:
    assert ds.profile_name(["co_ppm", "temperature_c"]) == "temperature_c+co_ppm"
    assert ds.parse_profile(" co_ppm + temperature_c") == "temperature_c+co_ppm"
    assert [ds.profile_name(p) for p in ds.CHANNEL_PROFILES] == [
        "+".join(p) for p in ds.CHANNEL_PROFILES
    ]
    with pytest.raises(ValueError, match=r"unknown channel\(s\) \['lidar'\]"):
        ds.parse_profile("temperature_c+lidar")
    with pytest.raises(ValueError, match="at least one channel"):
        ds.parse_profile(" + ")


def test_profile_views_show_every_device_through_every_profile() -> None:
    features, silver = readings([(f"syn-0-{i}", "dust", "synthetic") for i in range(3)])
    frame = ds.training_frame(features, silver, SPEC)
    profiles = [("smoke_obscuration_pct_per_m",), ("temperature_c", "co_ppm", "co2_ppm")]
    views = ds.profile_views(frame, SPEC, profiles)
    assert views.height == 2 * frame.height
    smoke = "smoke_obscuration_pct_per_m"
    gas = "temperature_c+co_ppm+co2_ppm"
    expected_ids = {f"syn-0-{i}@{p}" for i in range(3) for p in (smoke, gas)}
    assert set(views["device_id"].unique()) == expected_ids
    assert dict(views.select("device_id", ds.PROFILE).unique().iter_rows()) == {
        d: d.split("@")[1] for d in expected_ids
    }
    # each view is `mask_channels` with its one profile, row for row
    for profile in profiles:
        name = ds.profile_name(profile)
        own = views.filter(pl.col(ds.PROFILE) == name).drop("device_id", ds.PROFILE)
        alone = ds.mask_channels(frame, SPEC, [profile]).drop("device_id", ds.PROFILE)
        assert own.equals(alone)
    seen_by_smoke = views.filter(pl.col(ds.PROFILE) == smoke)
    assert seen_by_smoke["co_ppm__per__co2_ppm"].null_count() == frame.height
    assert seen_by_smoke["smoke_obscuration_pct_per_m__diff_60s"].null_count() < frame.height


def test_source_device_strips_the_noisy_copy_mark() -> None:
    ids = pl.Series(["syn-0-1", "syn-0-1~noise0", "syn-0-12~noise1"])
    sources = pl.select(ds.source_device(pl.lit(ids))).to_series()
    assert sources.to_list() == ["syn-0-1", "syn-0-1", "syn-0-12"]


def test_mask_channels_draws_a_stable_profile_per_device() -> None:
    frame = devices_frame(400).with_columns(*(pl.lit(1.0, pl.Float32).alias(n) for n in SPEC.names))
    masked = ds.mask_channels(frame, SPEC, seed=2)
    profiles = masked.group_by("device_id").agg(pl.col(ds.PROFILE).unique())
    assert profiles[ds.PROFILE].list.len().max() == 1
    chosen = dict(zip(profiles["device_id"], profiles[ds.PROFILE].list.first(), strict=True))
    assert set(chosen.values()) == {ds.profile_name(p) for p in ds.CHANNEL_PROFILES}
    # The draw is the device's own: the same on a subset of the devices, another with the seed.
    subset = ds.mask_channels(
        frame.filter(pl.col("device_id").is_in(["syn-0-5", "syn-0-9"])), SPEC, seed=2
    )
    assert dict(subset.select("device_id", ds.PROFILE).unique().iter_rows()) == {
        d: chosen[d] for d in ("syn-0-5", "syn-0-9")
    }
    other = ds.mask_channels(frame, SPEC, seed=3)
    changed = (
        other.select("device_id", ds.PROFILE)
        .unique()
        .filter(pl.col(ds.PROFILE).cast(pl.String) != pl.col("device_id").replace_strict(chosen))
    )
    assert changed.height > 200


def test_mask_channels_only_in_the_given_splits() -> None:
    frame = devices_frame(60).with_columns(
        *(pl.lit(1.0, pl.Float32).alias(n) for n in SPEC.names),
        pl.when(pl.col("device_id").str.extract(r"(\d+)$").cast(pl.Int32) < 30)
        .then(pl.lit("train"))
        .otherwise(pl.lit("test"))
        .alias(ds.SPLIT),
    )
    smoke = ("smoke_obscuration_pct_per_m",)
    masked = ds.mask_channels(frame, SPEC, profiles=[smoke], only_splits=["train"])
    train, test = (masked.filter(pl.col(ds.SPLIT) == s) for s in ("train", "test"))
    assert train[ds.PROFILE].cast(pl.String).unique().to_list() == [ds.profile_name(smoke)]
    assert train["temperature_c__mean_30s"].null_count() == train.height
    assert test[ds.PROFILE].cast(pl.String).unique().to_list() == [ds.profile_name(CHANNEL_NAMES)]
    assert test.select(SPEC.names).null_count().sum_horizontal().item() == 0
    # Both splits share one Enum, so the frame concatenates and stores as one column.
    assert masked[ds.PROFILE].dtype == pl.Enum(
        [ds.profile_name(smoke), ds.profile_name(CHANNEL_NAMES)]
    )


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ([], "non-empty"),
        ([()], "non-empty"),
        ([("smoke",)], r"unknown channel\(s\) \['smoke'\]"),
        ([("co_ppm",), ("co_ppm",)], "differ"),
    ],
)
def test_mask_channels_refuses_bad_profiles(profiles: list, message: str) -> None:
    frame = devices_frame(2).with_columns(*(pl.lit(1.0).alias(n) for n in SPEC.names))
    with pytest.raises(ValueError, match=message):
        ds.mask_channels(frame, SPEC, profiles=profiles)


# --- on the simulator's output ----------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Silver of 120 simulated devices and the NIST tests as field devices, and gold of it."""
    bronze = simulate(GenerationSpec(devices=120, duration_s=600, seed=3), workers=1)
    replay = nist.readings(nist.read_tests(Path(nist_data_dir())))
    field = replay.with_columns(
        pl.lit(START).alias("updated_at"), pl.int_range(pl.len(), dtype=pl.Int64).alias("id")
    ).select(list(FIELD_READING_SCHEMA))
    silver = to_silver({"synthetic": bronze, "field": field}).readings
    return compute_features(silver, default_spec(), threads=1), silver


def test_training_set_from_the_simulator(simulated: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    features, silver = simulated
    spec = default_spec()
    assert silver.filter(source="field").height > 0
    frame = ds.training_frame(features, silver, spec)
    synthetic = silver.filter(pl.col("source") == "synthetic", ~pl.col("is_gap"))
    assert frame.height == synthetic.height
    assert frame["device_id"].str.starts_with("syn-3-").all()
    # The label agrees with the simulator's own ignition times.
    burning = synthetic.filter(pl.col("is_fire") & (pl.col("ts") >= pl.col("ignition_ts")))
    assert frame[ds.LABEL].sum() == burning.height > 0

    device = ds.assign_splits(frame, ds.SplitConfig(seed=5))
    splits = device_splits(device)
    assert device_splits(ds.assign_splits(frame, ds.SplitConfig(seed=5))) == splits
    balance = ds.class_balance(device)
    for split in ds.SPLITS:
        of = balance.filter(pl.col(ds.SPLIT) == split)
        assert of.filter(pl.col(ds.FAMILY) == "flaming")["positives"].item() > 0, split
        assert of.filter(pl.col(ds.FAMILY) == "nuisance")["devices"].item() > 0, split
    assert balance["rows"].sum() == frame.height

    held = ds.SplitConfig(
        kind="family_holdout", holdout_scenarios=("smouldering", "flaming_ultra_fast"), seed=5
    )
    holdout = ds.assign_splits(frame, held)
    device_splits(holdout)
    seen = holdout.filter(pl.col(ds.SPLIT) != "test")["scenario"].unique()
    assert not seen.is_in(held.held_out()).any()
    assert holdout.filter(pl.col("scenario").is_in(held.held_out())).height > 0

    masked = ds.mask_channels(device, spec, seed=5)
    profiles = {ds.profile_name(p): set(p) for p in ds.CHANNEL_PROFILES}
    for profile, rows in masked.partition_by(ds.PROFILE, as_dict=True).items():
        have = profiles[str(profile[0])]
        original = device.filter(pl.col("device_id").is_in(rows["device_id"].unique().to_list()))
        for f in spec.features:
            if set(input_channels(f)) <= have:
                assert rows[f.name].equals(original[f.name]), (profile, f.name)
            else:
                assert rows[f.name].null_count() == rows.height, (profile, f.name)
