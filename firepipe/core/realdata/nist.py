"""Real fires: the NIST home smoke alarm tests (Bukowski et al., NIST TN 1455-1, 2008).

A folder holds one `NIST_Smoke_Alarms_<test>.csv` per test (a `TIME` column in seconds after
ignition, then every instrument) and `Activation_Times.csv` (when each commercial alarm went
off). This module reads any folder of that format, screens the channels firepipe uses, and maps
each measurement station onto firepipe's reading schema:

- ceiling thermocouple `TC<st>_1` (degC)            -> temperature_c
- smoke optical density `SM<st>_1` (1/m, base 10)    -> smoke_obscuration_pct_per_m
- gas analyser `GAS<st>_1` / `_3` (volume %)         -> co_ppm / co2_ppm
- `GAS<st>_5` (O2, volume %) is screened but has no reading channel.

A channel that a station lacks, or that fails screening, is null; so are humidity, PM2.5, VOC
and H2, which the study did not measure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from firepipe.core.lake.units import PPM_PER_VOLUME_PCT, obscuration_pct_per_m
from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, READING_SCHEMA, TIMESTAMP

TEST_FILE_GLOB = "NIST_Smoke_Alarms_*.csv"
TEST_FILE_PATTERN = re.compile(r"^NIST_Smoke_Alarms_(?P<test>[A-Za-z0-9]+)\.csv$")
ACTIVATION_FILE = "Activation_Times.csv"
ACTIVATION_PATTERN = re.compile(
    r"^(?P<test>[A-Za-z0-9]+)-(?P<alarm_type>Ion|Pho)(?P<model_id>\d+)(?P<station>[A-Z])$"
)
TIME_COLUMN = "TIME"
# Station instruments: k=1 is the sensor nearest the ceiling (SOURCE.md beside the data).
STATION_COLUMN = re.compile(r"^(?P<kind>TC|SM|GAS)(?P<station>[A-Z])_(?P<k>\d+)$")

# The CSVs give time after ignition only; rows get this nominal, fixed ignition instant (the
# tests ran in 2000, "NIST Dunes 2000" in the FDS validation inputs for them).
NOMINAL_IGNITION_TS = datetime(2000, 1, 1, tzinfo=UTC)
SCENARIO = "nist_flaming"

# Screening limits for the ambient value (median of the first samples, before the fire has
# reached any station) and for the whole trace.
AMBIENT_SAMPLES = 3
# Occupied indoor air: ASHRAE 55 comfort is 20-27 degC; the unconditioned test home widened it.
AMBIENT_TEMPERATURE_RANGE_C = (5.0, 45.0)
# Indoor CO2 (volume %): outdoor air is about 0.04 %, occupied rooms rarely exceed 0.2 %
# (ASHRAE 62.1 background; 2000 ppm).
AMBIENT_CO2_RANGE_VOLUME_PCT = (0.02, 0.2)
# Indoor CO background is a few ppm; 50 ppm (0.005 %) is the OSHA 8 h exposure limit, so an
# ambient reading above it is an analyser offset, not air.
AMBIENT_CO_MAX_VOLUME_PCT = 0.005
# Dry air holds 20.95 % O2 (US Standard Atmosphere 1976); +-0.5 % covers analyser drift.
AMBIENT_O2_RANGE_VOLUME_PCT = (20.45, 21.45)
# A trace below zero by more than analyser noise is a wiring or zero fault (assumed noise
# floors: 10 ppm CO, 100 ppm CO2, 0.01 1/m optical density).
NEGATIVE_TOLERANCE: dict[str, float] = {"co": 0.001, "co2": 0.01, "smoke": 0.01}


class NistDataError(ValueError):
    """A NIST data folder or file is not in the expected format."""


@dataclass(frozen=True)
class ChannelScreen:
    """The verdict on one measured column of one test."""

    test: str
    station: str
    column: str
    channel: str | None  # the reading channel it maps to; None for O2 (no channel)
    usable: bool
    reason: str


@dataclass(frozen=True)
class NistTest:
    """One test: its raw measurements (float64, `TIME` first) and the screened mapping."""

    name: str
    path: Path
    raw: pl.DataFrame
    stations: tuple[str, ...]
    screening: tuple[ChannelScreen, ...]

    @property
    def seconds(self) -> np.ndarray:
        return self.raw[TIME_COLUMN].to_numpy()

    def device_id(self, station: str) -> str:
        """The device a station's readings go under."""
        return f"nist-{self.name}-{station}"

    def column_for(self, station: str, channel: str) -> str | None:
        """The raw column behind a station's channel, or None when it is absent or screened."""
        for s in self.screening:
            if s.station == station and s.channel == channel and s.usable:
                return s.column
        return None

    def channel_values(self, station: str, channel: str) -> np.ndarray | None:
        """A station's channel in firepipe units (float64), or None when it has none."""
        column = self.column_for(station, channel)
        if column is None:
            return None
        return _to_firepipe_units(channel, self.raw[column].to_numpy())

    def readings(self) -> pl.DataFrame:
        """One row per station per measured time step, in READING_SCHEMA."""
        frames = [self._station_readings(st) for st in self.stations]
        return pl.concat(frames) if frames else pl.DataFrame(schema=READING_SCHEMA)

    def _station_readings(self, station: str) -> pl.DataFrame:
        seconds = self.seconds
        n = seconds.size
        offsets_us = np.round(seconds * 1e6).astype(np.int64)
        values: dict[str, pl.Series] = {}
        for ch in CHANNEL_NAMES:
            data = self.channel_values(station, ch)
            values[ch] = (
                pl.Series(ch, data, dtype=pl.Float32)
                if data is not None
                else pl.Series(ch, [None] * n, dtype=pl.Float32)
            )
        ignition = pl.lit(NOMINAL_IGNITION_TS).cast(TIMESTAMP)
        frame = pl.DataFrame(
            {
                "site_id": [f"nist-{self.name}"] * n,
                "device_id": [self.device_id(station)] * n,
                "offset_us": offsets_us,
                "scenario": [SCENARIO] * n,
                "is_fire": [True] * n,
                "seconds_since_ignition": pl.Series(seconds, dtype=pl.Float32),
                **values,
            }
        )
        return frame.select(
            "site_id",
            "device_id",
            (ignition + pl.duration(microseconds=pl.col("offset_us"))).alias("ts"),
            "scenario",
            "is_fire",
            ignition.alias("ignition_ts"),
            "seconds_since_ignition",
            *CHANNEL_NAMES,
        ).cast(READING_SCHEMA)  # type: ignore[arg-type]


_CHANNEL_OF = {("TC", 1): "temperature_c", ("SM", 1): "smoke_obscuration_pct_per_m"}
_GAS_CHANNEL_OF = {1: "co_ppm", 3: "co2_ppm", 5: None}
_LIMITS = {c.name: (c.min_value, c.max_value) for c in CHANNELS}


def _to_firepipe_units(channel: str, raw: np.ndarray) -> np.ndarray:
    if channel == "smoke_obscuration_pct_per_m":
        converted = obscuration_pct_per_m(raw.astype(np.float64))
    elif channel in ("co_ppm", "co2_ppm"):
        converted = raw * PPM_PER_VOLUME_PCT
    else:
        converted = raw.astype(np.float64)
    # Instrument noise around zero reads as zero: the schema's ranges are physical.
    low, high = _LIMITS[channel]
    return np.asarray(np.clip(converted, low, high), dtype=np.float64)


def discover_test_files(folder: Path) -> list[Path]:
    """The test CSVs in `folder`, sorted by name."""
    if not folder.is_dir():
        raise NistDataError(f"NIST data folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.glob(TEST_FILE_GLOB) if TEST_FILE_PATTERN.match(p.name))
    if not files:
        raise NistDataError(f"no {TEST_FILE_GLOB} files in {folder}")
    return files


def _read_numeric_csv(path: Path) -> pl.DataFrame:
    try:
        text = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as e:
        raise NistDataError(f"{path.name}: not a readable CSV ({e})") from e
    try:
        return text.select(pl.all().str.strip_chars().cast(pl.Float64, strict=True))
    except pl.exceptions.InvalidOperationError as e:
        raise NistDataError(f"{path.name}: a value is not a number ({e})") from e


def read_test(path: Path) -> NistTest:
    """Parse one test CSV, find its stations and screen the channels firepipe maps."""
    match = TEST_FILE_PATTERN.match(path.name)
    if match is None:
        raise NistDataError(f"{path.name} is not named like NIST_Smoke_Alarms_<test>.csv")
    name = match["test"]
    raw = _read_numeric_csv(path)
    if raw.columns[0] != TIME_COLUMN:
        raise NistDataError(f"{path.name}: the first column is {raw.columns[0]!r}, not TIME")
    if raw.height < AMBIENT_SAMPLES + 1:
        raise NistDataError(f"{path.name}: {raw.height} rows, too few for a fire curve")
    time = raw[TIME_COLUMN]
    if time.null_count() or not bool((time.diff().drop_nulls() > 0).all()):
        raise NistDataError(f"{path.name}: TIME must be present and strictly increasing")
    screening = tuple(_screen_all(name, raw))
    stations = tuple(sorted({s.station for s in screening if s.channel is not None}))
    return NistTest(name, path, raw, stations, screening)


def _screen_all(test: str, raw: pl.DataFrame) -> list[ChannelScreen]:
    screens = []
    for column in raw.columns:
        m = STATION_COLUMN.match(column)
        if m is None:
            continue
        kind, station, k = m["kind"], m["station"], int(m["k"])
        if kind == "GAS":
            if k not in _GAS_CHANNEL_OF:
                continue
            channel = _GAS_CHANNEL_OF[k]
        elif (kind, k) in _CHANNEL_OF:
            channel = _CHANNEL_OF[(kind, k)]
        else:
            continue
        values = raw[column].to_numpy()
        reason = screen_trace(kind, k, values)
        screens.append(
            ChannelScreen(test, station, column, channel, reason is None, reason or "ok")
        )
    return screens


def screen_trace(kind: str, k: int, values: np.ndarray) -> str | None:
    """Why a measured trace is implausible, or None when it can be used.

    `kind` is TC, SM or GAS; for GAS, k=1 is CO, 3 is CO2, 5 is O2 (volume %).
    """
    if np.isnan(values).any():
        return "has missing values"
    if np.ptp(values) == 0.0:
        return "constant trace: the instrument did not report"
    ambient = float(np.median(values[:AMBIENT_SAMPLES]))
    if kind == "TC":
        low, high = AMBIENT_TEMPERATURE_RANGE_C
        if not low <= ambient <= high:
            return f"ambient {ambient:.1f} degC outside {low}-{high} degC"
        return None
    if kind == "SM":
        if values.min() < -NEGATIVE_TOLERANCE["smoke"]:
            return f"negative optical density {values.min():.3g} 1/m"
        return None
    if k == 1:
        if values.min() < -NEGATIVE_TOLERANCE["co"]:
            return f"negative CO {values.min() * PPM_PER_VOLUME_PCT:.0f} ppm"
        if ambient > AMBIENT_CO_MAX_VOLUME_PCT:
            return (
                f"ambient CO {ambient * PPM_PER_VOLUME_PCT:.0f} ppm, not near clean air "
                f"(<= {AMBIENT_CO_MAX_VOLUME_PCT * PPM_PER_VOLUME_PCT:.0f} ppm): "
                "analyser offset or noise"
            )
        return None
    if k == 3:
        low, high = AMBIENT_CO2_RANGE_VOLUME_PCT
        if values.min() < -NEGATIVE_TOLERANCE["co2"]:
            return f"negative CO2 {values.min() * PPM_PER_VOLUME_PCT:.0f} ppm"
        if not low <= ambient <= high:
            return (
                f"ambient CO2 {ambient * PPM_PER_VOLUME_PCT:.0f} ppm, not near indoor air "
                f"({low * PPM_PER_VOLUME_PCT:.0f}-{high * PPM_PER_VOLUME_PCT:.0f} ppm)"
            )
        return None
    low, high = AMBIENT_O2_RANGE_VOLUME_PCT
    if not low <= ambient <= high:
        return f"ambient O2 {ambient:.2f} % outside {low}-{high} %: miscalibrated"
    return None


def read_tests(folder: Path) -> tuple[NistTest, ...]:
    """Every test in a NIST folder, sorted by test name."""
    return tuple(read_test(p) for p in discover_test_files(folder))


def readings(tests: tuple[NistTest, ...] | list[NistTest]) -> pl.DataFrame:
    """All tests' station readings in READING_SCHEMA, one device per test and station."""
    frames = [t.readings() for t in tests]
    return pl.concat(frames) if frames else pl.DataFrame(schema=READING_SCHEMA)


SCREENING_SCHEMA: dict[str, pl.DataType] = {
    "test": pl.String(),
    "station": pl.String(),
    "column": pl.String(),
    "channel": pl.String(),
    "usable": pl.Boolean(),
    "reason": pl.String(),
}


def screening_frame(tests: tuple[NistTest, ...] | list[NistTest]) -> pl.DataFrame:
    rows = [s.__dict__ for t in tests for s in t.screening]
    return pl.DataFrame(rows, schema=SCREENING_SCHEMA)


ACTIVATION_SCHEMA: dict[str, pl.DataType] = {
    "test": pl.String(),
    "station": pl.String(),
    "alarm_type": pl.String(),
    "model_id": pl.Int32(),
    "activation_s": pl.Float64(),
}


def read_activation_times(folder: Path) -> pl.DataFrame:
    """When each commercial alarm went off: test, station, alarm_type (ion|pho), model_id,
    activation_s (seconds after ignition; null where the file has no non-negative time)."""
    path = folder / ACTIVATION_FILE
    if not path.is_file():
        raise NistDataError(f"no {ACTIVATION_FILE} in {folder}")
    frame = pl.read_csv(path, infer_schema=False)
    if frame.height != 1:
        raise NistDataError(f"{ACTIVATION_FILE}: expected one data row, found {frame.height}")
    rows = []
    for column in frame.columns[1:]:
        m = ACTIVATION_PATTERN.match(column.strip())
        if m is None:
            raise NistDataError(
                f"{ACTIVATION_FILE}: column {column!r} is not <test>-<Ion|Pho><model><station>"
            )
        cell = frame[column][0]
        try:
            seconds = float(cell) if cell not in (None, "") else None
        except ValueError as e:
            raise NistDataError(f"{ACTIVATION_FILE}: {column} = {cell!r} is not a number") from e
        rows.append(
            {
                "test": m["test"],
                "station": m["station"],
                "alarm_type": m["alarm_type"].lower(),
                "model_id": int(m["model_id"]),
                "activation_s": seconds if seconds is not None and seconds >= 0 else None,
            }
        )
    return pl.DataFrame(rows, schema=ACTIVATION_SCHEMA)
