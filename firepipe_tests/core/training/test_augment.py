"""Sensor-noise augmentation: noisy copies of train and validation devices, their features
computed again, their labels and splits kept; the noise a function of (seed, copy) alone."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from firepipe.core.features.spec import compute_features, default_spec
from firepipe.core.lake.standardise import to_silver
from firepipe.core.readings import CHANNEL_NAMES, CHANNELS
from firepipe.core.realdata import nist
from firepipe.core.simulation.simulator import NOISE, GenerationSpec, simulate
from firepipe.core.training import augment
from firepipe.core.training import dataset as ds
from firepipe_tests.conftest import nist_data_dir


@pytest.fixture(scope="module")
def split() -> tuple[pl.DataFrame, pl.DataFrame]:
    """A split training set of 30 simulated devices (5 min each) and their silver readings."""
    bronze = simulate(GenerationSpec(devices=30, duration_s=300, seed=11), workers=1)
    silver = to_silver({"synthetic": bronze}).readings
    spec = default_spec()
    frame = ds.training_frame(compute_features(silver, spec, threads=1), silver, spec)
    return ds.assign_splits(frame, ds.SplitConfig(seed=2)), silver


def test_each_train_and_validation_device_comes_again_through_noisier_sensors(
    split: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    frame, silver = split
    spec = default_spec()
    out = augment.with_noisy_copies(frame, silver, spec, augment.NoiseAugmentation(copies=2))

    assert out.columns == frame.columns
    assert out.head(frame.height).equals(frame)  # the originals first, untouched
    learning = frame.filter(pl.col(ds.SPLIT).is_in(["train", "validation"]))
    assert 0 < learning.height < frame.height  # the sample has test devices too
    copies = out.slice(frame.height)
    assert copies.height == 2 * learning.height
    assert set(copies[ds.SPLIT].unique()) <= {"train", "validation"}
    assert sorted(copies["device_id"].str.extract(r"(~noise\d)$").unique()) == [
        "~noise1",
        "~noise2",
    ]

    # Every column but the features is the original row's: label, split, family, ignition.
    kept = [c for c in frame.columns if c not in spec.names and c != "device_id"]
    for copy in ("~noise1", "~noise2"):
        part = copies.filter(pl.col("device_id").str.ends_with(copy))
        restored = part.with_columns(pl.col("device_id").str.strip_suffix(copy)).sort(
            "device_id", "ts"
        )
        assert restored.select("device_id", *kept).equals(
            learning.sort("device_id", "ts").select("device_id", *kept)
        )

    # The features are gold's features of the noisy readings, not the originals'.
    devices = learning["device_id"].unique()
    own = silver.filter(pl.col("device_id").is_in(devices.implode()))
    expected = compute_features(augment.noisy_readings(own, 1, 0), spec, threads=1)
    got = copies.filter(pl.col("device_id").str.ends_with("~noise1"))
    joined = got.join(expected, on=["device_id", "ts"], suffix="_expected")
    assert joined.height == got.height
    for name in ("smoke_obscuration_pct_per_m__std_30s", "co_ppm__diff_60s"):
        assert joined[name].equals(joined[f"{name}_expected"], check_names=False)
    quiet = learning.select(pl.col("smoke_obscuration_pct_per_m__std_30s").median()).item()
    noisy = got.select(pl.col("smoke_obscuration_pct_per_m__std_30s").median()).item()
    assert noisy > 2 * quiet


def test_no_copies_leave_the_frame_as_it_is(split: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    frame, silver = split
    out = augment.with_noisy_copies(
        frame, silver, default_spec(), augment.NoiseAugmentation(copies=0)
    )
    assert out is frame


def test_readings_of_other_data_are_refused(split: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    frame, silver = split
    cut = silver.filter(pl.col("ts") < pl.col("ts").max())  # every device's last second gone
    with pytest.raises(ValueError, match="readings and training set come from different data"):
        augment.with_noisy_copies(frame, cut, default_spec(), augment.NoiseAugmentation())


def flat_readings(devices: int, seconds: int = 4_000) -> pl.DataFrame:
    """Devices whose channels read mid-range constants, one reading a second."""
    rows = devices * seconds
    return pl.DataFrame(
        {
            "device_id": np.repeat([f"dev-{i:02d}" for i in range(devices)], seconds),
            "ts": np.tile(np.arange(seconds, dtype=np.int64), devices),
            **{
                c.name: np.full(rows, (c.min_value + c.max_value) / 2, np.float32) for c in CHANNELS
            },
        }
    )


def residuals(readings: pl.DataFrame, noisy: pl.DataFrame) -> pl.DataFrame:
    """What the copy's sensor added to each reading, per copy device and ts."""
    original = readings.with_columns(augment.copy_id(pl.col("device_id"), 1))
    joined = noisy.join(original, on=["device_id", "ts"], suffix="_true")
    return joined.select("device_id", *(pl.col(c) - pl.col(f"{c}_true") for c in CHANNEL_NAMES))


def test_each_copy_reads_through_a_sensor_drawn_within_the_ranges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = flat_readings(6)  # mid-range values: nothing is clipped
    draws = augment.sensor_draws(pl.Series([f"dev-{i:02d}~noise1" for i in range(6)]), seed=4).sort(
        "device_id"
    )
    for name in CHANNEL_NAMES:
        noise, offset, spikes = (draws[f"{name}:{kind}"] for kind in augment.KINDS)
        assert noise.is_between(NOISE[name], augment.NOISE_CEILING[name]).all()
        assert offset.abs().max() <= augment.OFFSET_CEILING[name]
        assert spikes.is_between(0, augment.SPIKE_SHARE_CEILING).all()
        assert noise.n_unique() == offset.n_unique() == spikes.n_unique() == 6  # per device

    # Without spikes, what is added is the offset plus Gaussian noise of the drawn level.
    monkeypatch.setattr(augment, "SPIKE_MEAN", dict.fromkeys(CHANNEL_NAMES, 0.0))
    added = residuals(readings, augment.noisy_readings(readings, 1, seed=4))
    stats = added.group_by("device_id").agg(
        *(pl.col(c).mean().alias(f"{c}:mean") for c in CHANNEL_NAMES),
        *(pl.col(c).std().alias(f"{c}:std") for c in CHANNEL_NAMES),
    )
    stats = stats.sort("device_id")
    for name in CHANNEL_NAMES:
        noise = draws[f"{name}:noise"].to_numpy()
        # 4,000 draws a device: the sample std within 5 %, the mean within 5 standard errors
        np.testing.assert_allclose(stats[f"{name}:std"].to_numpy(), noise, rtol=0.05)
        error = np.abs(stats[f"{name}:mean"].to_numpy() - draws[f"{name}:offset"].to_numpy())
        assert (error < 5 * noise / np.sqrt(4_000) + 1e-3 * np.abs(noise)).all(), name
    monkeypatch.undo()

    # With spikes: readings far above offset + noise come at the drawn share, less the spikes
    # too small to clear that bar (exponential sizes).
    added = residuals(readings, augment.noisy_readings(readings, 1, seed=4))
    for name in ("smoke_obscuration_pct_per_m", "co_ppm"):
        bar = draws[f"{name}:offset"] + 6 * draws[f"{name}:noise"]
        clear = np.exp(-6 * draws[f"{name}:noise"] / augment.SPIKE_MEAN[name])
        expected = (draws[f"{name}:spikes"] * clear).to_numpy()
        measured = (
            added.join(draws.select("device_id", bar.alias("bar")), on="device_id")
            .group_by("device_id")
            .agg((pl.col(name) > pl.col("bar")).mean())
            .sort("device_id")[name]
            .to_numpy()
        )
        np.testing.assert_allclose(measured, expected, atol=0.03)


def test_the_noise_of_a_device_does_not_depend_on_the_others() -> None:
    readings = flat_readings(5, seconds=50)
    alone = augment.noisy_readings(readings.filter(pl.col("device_id") == "dev-03"), 2, seed=1)
    together = augment.noisy_readings(readings.reverse(), 2, seed=1)
    assert together.filter(pl.col("device_id") == "dev-03~noise2").equals(alone)
    other_copy = augment.noisy_readings(readings, 1, seed=1).filter(
        pl.col("device_id") == "dev-03~noise1"
    )
    assert not np.array_equal(other_copy["co_ppm"].to_numpy(), alone["co_ppm"].to_numpy())
    reseeded = augment.noisy_readings(readings, 2, seed=2).filter(
        pl.col("device_id") == "dev-03~noise2"
    )
    assert not np.array_equal(reseeded["co_ppm"].to_numpy(), alone["co_ppm"].to_numpy())


def test_absent_readings_stay_absent_and_values_stay_in_range() -> None:
    readings = flat_readings(20, seconds=300).with_columns(
        pl.when(pl.col("ts") < 100).then(pl.col("co_ppm")).alias("co_ppm"),
        pl.lit(0.0, dtype=pl.Float32).alias("smoke_obscuration_pct_per_m"),
    )
    noisy = augment.noisy_readings(readings, 1, seed=0)
    assert noisy["co_ppm"].null_count() == readings["co_ppm"].null_count() == 20 * 200
    # Smoke at zero: offsets either way and noise, clipped at the channel's floor of zero.
    smoke = noisy["smoke_obscuration_pct_per_m"]
    assert smoke.min() == 0.0
    assert smoke.max() > 0.0
    assert (noisy["temperature_c"] != readings["temperature_c"]).all()
    # At the top of its range: clipped there, never above.
    top = next(c for c in CHANNELS if c.name == "co_ppm").max_value
    full = augment.noisy_readings(readings.with_columns(pl.lit(top).alias("co_ppm")), 1, seed=0)
    assert full["co_ppm"].max() == pytest.approx(top)
    assert full["co_ppm"].min() < top


def test_the_noise_range_covers_the_nist_instruments() -> None:
    """The ceiling is set above what the real instruments read before the fire reaches them."""
    tests = nist.read_tests(Path(nist_data_dir()))
    early = pl.concat([t.readings() for t in tests]).filter(pl.col("seconds_since_ignition") <= 12)
    stds = early.group_by("device_id").agg(pl.col("smoke_obscuration_pct_per_m", "co_ppm").std())
    for name in ("smoke_obscuration_pct_per_m", "co_ppm"):
        median = stds[name].median()
        assert NOISE[name] * 5 < median < augment.NOISE_CEILING[name], name


@pytest.mark.parametrize(
    ("copies", "seed", "message"),
    [(-1, 0, "copies must be"), (1, -2, "seed must be"), (True, 0, "copies must be")],
)
def test_bad_augmentation_settings_are_refused(copies: int, seed: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        augment.NoiseAugmentation(copies=copies, seed=seed)
