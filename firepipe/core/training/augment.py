"""Sensor augmentation: the training set's fires and nuisances seen again through noisier,
offset and spiking sensors.

Why. The simulator's sensors are quiet consumer parts (`simulator.NOISE`). Real instruments are
not all like that. Before the fire reaches them, the NIST stations' smoke meters read with a
standard deviation of about 0.15 %/m and their gas analysers about 11.5 ppm CO (median over the
stations of the first 12 s; the analysers step in 0.001 vol% = 10 ppm), against 0.012 %/m and
0.56 ppm for the simulated sensors; their zeros sit off (ambient CO of 0-37 ppm, CO2 down to
227 ppm); and some smoke meters jump from 0 to 1-5.5 %/m and back between two samples. A
detector that has only seen quiet, true sensors reads all of that as a fire.

So each train and validation device is also seen through `copies` other sensors: per copy and
channel, a zero offset, Gaussian noise and upward spikes, each drawn within the ranges below,
are added to its readings, and the features are computed again from them, as gold computes
them. Test devices stay as generated, so the synthetic hold-out measures the detector on the
generator's own data.

A copy is a device of its own, `<device_id>~noise<k>`, in its original's split, so no split
shares a fire. Its sensor (levels, offset, spike share) is a function of (seed, copy id) alone,
as splits are; the noise added to its readings is a function of those and of the device's own
readings (how many, which channels), never of other devices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from firepipe.core.features.spec import FeatureSpec, compute_features
from firepipe.core.readings import CHANNELS
from firepipe.core.simulation.simulator import NOISE
from firepipe.core.training.dataset import (
    COPY_MARK,
    SPLIT,
    SplitConfig,
    assign_splits,
    mask_channels,
    require_columns,
    stable_u64,
    training_frame,
    unit_hash,
)

AUGMENTED_SPLITS: tuple[str, ...] = ("train", "validation")
KINDS: tuple[str, ...] = ("noise", "offset", "spikes")
# One standard deviation of added noise, at most, per channel. Smoke and CO: twice the NIST
# instruments' noise above; temperature and CO2: four and three times the simulated sensors'
# (the NIST thermocouples and CO2 analysers read about as quietly as the simulated ones).
# Channels NIST lacks: five times the simulated sensors'.
NOISE_CEILING: dict[str, float] = {
    "temperature_c": 0.2,
    "humidity_pct": 1.5,
    "smoke_obscuration_pct_per_m": 0.3,
    "pm25_ugm3": 5.0,
    "co_ppm": 20.0,
    "co2_ppm": 30.0,
    "voc_ppb": 50.0,
    "h2_ppm": 0.25,
}
# A zero offset, at most, either way: a sensor whose zero sits off the air's true value
# (calibration error, a dirty smoke chamber, an electrochemical cell's baseline). The NIST
# stations show ambient CO of 0-37 ppm, CO2 from 227 ppm (below outdoor air: an offset of about
# -200 ppm) and smoke meters at 0-5.5 %/m before the fire reached them; their screening accepts
# ambient CO up to 50 ppm (`nist.AMBIENT_CO_MAX_VOLUME_PCT`). Temperature: a thermistor's
# +-1 degC class; the simulated rooms vary their own ambient besides. The other channels: about
# their sensors' stated accuracy.
OFFSET_CEILING: dict[str, float] = {
    "temperature_c": 1.0,
    "humidity_pct": 5.0,
    "smoke_obscuration_pct_per_m": 2.0,
    "pm25_ugm3": 10.0,
    "co_ppm": 40.0,
    "co2_ppm": 250.0,
    "voc_ppb": 100.0,
    "h2_ppm": 1.0,
}

# Impulsive noise: single readings that jump up (dust or an insect in an optical chamber,
# electrical interference), on a share of readings up to SPIKE_SHARE_CEILING, each spike
# exponential with this mean. The NIST smoke meters of SDC10, SDC33 and SDC35 jump from 0 to
# 1-5.5 %/m and back between consecutive samples before the fire reaches them.
SPIKE_SHARE_CEILING = 0.3
SPIKE_MEAN: dict[str, float] = {
    "temperature_c": 0.2,
    "humidity_pct": 1.0,
    "smoke_obscuration_pct_per_m": 2.0,
    "pm25_ugm3": 10.0,
    "co_ppm": 10.0,
    "co2_ppm": 20.0,
    "voc_ppb": 50.0,
    "h2_ppm": 0.5,
}


@dataclass(frozen=True)
class NoiseAugmentation:
    copies: int = 2  # noisy copies of each train and validation device; 0: none
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("copies", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")


def copy_id(device_id: pl.Expr, copy: int) -> pl.Expr:
    return pl.concat_str(device_id, pl.lit(f"{COPY_MARK}{copy}"))


def sensor_draws(device_ids: pl.Series, seed: int) -> pl.DataFrame:
    """device_id, then per channel the sensor of that device (a copy): `<channel>:noise`, the
    standard deviation of its Gaussian noise, log-uniform between the simulator's and
    NOISE_CEILING; `<channel>:offset`, its zero offset, uniform within +-OFFSET_CEILING; and
    `<channel>:spikes`, its share of spiking readings, uniform up to SPIKE_SHARE_CEILING."""
    drawn: dict[str, pl.Series] = {"device_id": device_ids}
    for channel in CHANNELS:
        name = channel.name
        low, high = np.log(NOISE[name]), np.log(NOISE_CEILING[name])
        u = {kind: unit_hash(device_ids, f"{kind}:{name}", seed) for kind in KINDS}
        drawn[f"{name}:noise"] = (low + u["noise"] * (high - low)).exp()
        drawn[f"{name}:offset"] = (2.0 * u["offset"] - 1.0) * OFFSET_CEILING[name]
        drawn[f"{name}:spikes"] = u["spikes"] * SPIKE_SHARE_CEILING
    return pl.DataFrame(drawn)


def _stream(device_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng(stable_u64("noise-stream", seed, device_id))


def noisy_readings(readings: pl.DataFrame, copy: int, seed: int) -> pl.DataFrame:
    """`readings` as copy `copy`: device ids marked, and each channel that is present read
    through the copy's sensor (`sensor_draws`): its offset, its noise and its spikes added,
    then clipped to the channel's physical range. Null (absent or gap) readings stay null."""
    require_columns(readings, ["device_id", "ts"], "readings")
    channels = [c for c in CHANNELS if c.name in readings.columns]
    # Marked, then sorted: the mark changes the ids' order ("a-1~noise1" > "a-10~noise1"), and
    # compute_features takes rows sorted by (device_id, ts) without sorting them again.
    rows = readings.with_columns(copy_id(pl.col("device_id"), copy)).sort("device_id", "ts")
    devices = rows["device_id"].unique(maintain_order=True)
    counts = rows["device_id"].unique_counts().to_numpy().astype(np.int64)
    # per row, the draws of its device
    drawn = sensor_draws(devices, seed).drop("device_id")
    draws = {s.name: np.repeat(s.to_numpy(), counts) for s in drawn}
    shape = (rows.height, len(channels))
    gauss, spike_u, spike_size = np.empty(shape), np.empty(shape), np.empty(shape)
    begin = 0
    for device, count in zip(devices.to_list(), counts, strict=True):  # order-free: per device
        stream, end = _stream(device, seed), begin + count
        gauss[begin:end] = stream.standard_normal((count, len(channels)))
        spike_u[begin:end] = stream.random((count, len(channels)))
        spike_size[begin:end] = stream.standard_exponential((count, len(channels)))
        begin = end
    noisy = []
    for j, channel in enumerate(channels):
        name = channel.name
        spikes = np.where(spike_u[:, j] < draws[f"{name}:spikes"], spike_size[:, j], 0.0)
        values = (
            rows[name].cast(pl.Float64).to_numpy()
            + draws[f"{name}:offset"]
            + draws[f"{name}:noise"] * gauss[:, j]
            + SPIKE_MEAN[name] * spikes
        )
        clipped = np.clip(values, channel.min_value, channel.max_value).astype(np.float32)
        noisy.append(pl.Series(name, clipped, nan_to_null=True))
    return rows.with_columns(noisy)


def with_noisy_copies(
    frame: pl.DataFrame,
    readings: pl.DataFrame,
    spec: FeatureSpec,
    augmentation: NoiseAugmentation,
) -> pl.DataFrame:
    """`frame` (a split training set, before channel masking) followed by `augmentation.copies`
    noisy copies of each of its train and validation devices: the copy's features from its
    noisy `readings` (silver rows of those devices), every other column from the original row.
    """
    require_columns(frame, [SPLIT, "device_id", "ts", *spec.names], "frame")
    if augmentation.copies == 0:
        return frame
    learning = frame.filter(pl.col(SPLIT).is_in(AUGMENTED_SPLITS))
    devices = learning.select("device_id").unique()
    own = readings.join(devices, on="device_id", how="semi")
    labels = learning.drop(spec.names)
    keys = ["device_id", "ts"]
    parts = [frame]
    for copy in range(1, augmentation.copies + 1):
        features = compute_features(noisy_readings(own, copy, augmentation.seed), spec)
        part = labels.with_columns(copy_id(pl.col("device_id"), copy)).join(
            features.select(*keys, *spec.names), on=keys, how="inner", validate="1:1"
        )
        if part.height != learning.height:
            raise ValueError(
                f"the readings give features for {part.height} of the {learning.height} train "
                "and validation rows: readings and training set come from different data"
            )
        parts.append(part.select(frame.columns))
    return pl.concat(parts)


def build_training_set(
    features: pl.DataFrame,
    readings: pl.DataFrame,
    spec: FeatureSpec,
    splits: SplitConfig,
    augmentation: NoiseAugmentation,
    mask: bool = True,
) -> pl.DataFrame:
    """The training set as ml/training_set builds it: gold `features` labelled from silver
    `readings` (synthetic rows only), split, with the noisy copies of the train and validation
    devices, then (`mask`) their channel profiles."""
    frame = assign_splits(training_frame(features, readings, spec), splits)
    frame = with_noisy_copies(frame, readings, spec, augmentation)
    if mask:
        frame = mask_channels(frame, spec, seed=splits.seed, only_splits=AUGMENTED_SPLITS)
    return frame
