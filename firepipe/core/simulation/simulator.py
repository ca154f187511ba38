"""Vectorised, seeded simulation of many devices at once.

Every device is one room with one detector: a clean indoor baseline, and for fire scenarios a
t-squared fire whose heat, smoke and gases reach the detector through the ceiling jet. The
arrays are (devices, seconds); the result is one row per device per second. The same spec and
seed give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from firepipe.core.readings import CHANNELS, READING_SCHEMA, TIMESTAMP
from firepipe.core.simulation import physics
from firepipe.core.simulation import scenarios as sc

# A small exposed thermistor: faster than a fast-response sprinkler bulb (RTI <= 50 (m s)^0.5,
# NFPA 13), slower than a bare fine-wire thermocouple.
THERMISTOR_RTI_M_S_HALF = 30.0
# Smoke entry lag of a detector chamber, tau = L / u (Heskestad's characteristic length).
# Assumed until calibrated against the NIST tests.
SMOKE_CHAMBER_LENGTH_M = 3.0
# Electrochemical and NDIR gas sensors answer with t90 of 30-60 s (datasheet-level), about
# 2.3 time constants of a first-order element.
GAS_SENSOR_TIME_CONSTANT_S = 15.0

# Sensor resolution of a typical multi-sensor device (datasheet-level steps).
QUANTUM: dict[str, float] = {
    "temperature_c": 0.1,
    "humidity_pct": 0.1,
    "smoke_obscuration_pct_per_m": 0.01,
    "pm25_ugm3": 1.0,
    "co_ppm": 1.0,
    "co2_ppm": 1.0,
    "voc_ppb": 1.0,
    "h2_ppm": 0.1,
}
# Sensor noise (one standard deviation, in each channel's unit).
NOISE: dict[str, float] = {
    "temperature_c": 0.05,
    "humidity_pct": 0.3,
    "smoke_obscuration_pct_per_m": 0.02,
    "pm25_ugm3": 1.0,
    "co_ppm": 0.5,
    "co2_ppm": 10.0,
    "voc_ppb": 10.0,
    "h2_ppm": 0.2,
}


@dataclass(frozen=True)
class GenerationSpec:
    devices: int = 24
    duration_s: int = 600
    fire_share: float = 0.5
    sites: int = 4
    seed: int = 0
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)

    def __post_init__(self) -> None:
        if self.devices < 1 or self.duration_s < 2 or self.sites < 1:
            raise ValueError("devices and sites must be >= 1 and duration_s >= 2")
        if not 0.0 <= self.fire_share <= 1.0:
            raise ValueError(f"fire_share must be within [0, 1], got {self.fire_share}")
        if self.start.tzinfo is None:
            # A naive start would be read in the host's timezone: other bytes on another machine.
            raise ValueError(f"start must be timezone-aware, got {self.start.isoformat()}")


@dataclass(frozen=True)
class Rooms:
    """Per-device draws, each an array of length `devices`."""

    scenario: np.ndarray
    ceiling_height_m: np.ndarray
    radial_distance_m: np.ndarray
    ignition_s: np.ndarray
    alpha_kw_per_s2: np.ndarray
    peak_hrr_kw: np.ndarray


def draw_rooms(spec: GenerationSpec, rng: np.random.Generator) -> Rooms:
    n = spec.devices
    fire_catalog = sc.fires()
    is_fire = rng.random(n) < spec.fire_share
    fire_pick = rng.integers(0, len(fire_catalog), n)

    def per_device(values: list[float] | list[str], otherwise: float | str) -> np.ndarray:
        return np.where(is_fire, np.array(values)[fire_pick], otherwise)

    peak_lo = per_device([s.peak_hrr_kw[0] for s in fire_catalog], 0.0)
    peak_hi = per_device([s.peak_hrr_kw[1] for s in fire_catalog], 0.0)
    return Rooms(
        scenario=per_device([s.name for s in fire_catalog], "clean_baseline"),
        ceiling_height_m=rng.uniform(2.4, 3.6, n),
        radial_distance_m=rng.uniform(0.5, 6.0, n),
        ignition_s=np.where(is_fire, np.floor(rng.uniform(0.1, 0.4, n) * spec.duration_s), np.nan),
        alpha_kw_per_s2=per_device([s.alpha_kw_per_s2 for s in fire_catalog], 0.0),
        peak_hrr_kw=rng.uniform(peak_lo, peak_hi),
    )


def saturation_vapour_pressure_hpa(temperature_c: np.ndarray) -> np.ndarray:
    """Magnus formula over water (Alduchov and Eskridge 1996)."""
    return 6.1094 * np.exp(17.625 * temperature_c / (temperature_c + 243.04))


def _baseline(spec: GenerationSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n, t = spec.devices, np.arange(spec.duration_s, dtype=np.float64)
    hvac_period_s = rng.uniform(900.0, 1800.0, (n, 1))
    hvac_phase = rng.uniform(0.0, 2.0 * np.pi, (n, 1))
    hvac = np.sin(2.0 * np.pi * t / hvac_period_s + hvac_phase)
    return {
        "temperature_c": rng.uniform(18.0, 25.0, (n, 1)) + 0.3 * hvac,
        "humidity_pct": rng.uniform(30.0, 60.0, (n, 1)) - 1.0 * hvac,
        "smoke_obscuration_pct_per_m": np.zeros((n, 1)),
        "pm25_ugm3": rng.uniform(2.0, 15.0, (n, 1)),
        "co_ppm": rng.uniform(0.0, 2.0, (n, 1)),
        "co2_ppm": rng.uniform(420.0, 900.0, (n, 1)),
        "voc_ppb": rng.uniform(50.0, 300.0, (n, 1)),
        "h2_ppm": rng.uniform(0.3, 1.0, (n, 1)),
    }


def _fire_signals(spec: GenerationSpec, rooms: Rooms) -> dict[str, np.ndarray]:
    """What the fire adds at the detector: heat, smoke and gases, zero before ignition."""
    t = np.arange(spec.duration_s, dtype=np.float64)
    since = t[None, :] - np.nan_to_num(rooms.ignition_s, nan=np.inf)[:, None]
    height, radius = rooms.ceiling_height_m[:, None], rooms.radial_distance_m[:, None]
    alpha, peak = rooms.alpha_kw_per_s2[:, None], rooms.peak_hrr_kw[:, None]
    hrr = physics.t_squared_hrr_kw(since, alpha, peak)
    gas_rise_c = physics.ceiling_jet_temperature_rise_c(hrr, height, radius)
    velocity = np.maximum(
        physics.ceiling_jet_velocity_m_per_s(hrr, height, radius),
        physics.QUIESCENT_AIR_VELOCITY_M_PER_S,
    )

    def products(yield_g_per_g: float) -> np.ndarray:
        dhc = sc.FURNISHING_HEAT_OF_COMBUSTION_KJ_PER_G
        return gas_rise_c * physics.product_mass_fraction_per_k(yield_g_per_g, dhc)

    def gas_sensor(ppm: np.ndarray) -> np.ndarray:
        return physics.first_order_response(ppm, GAS_SENSOR_TIME_CONSTANT_S)

    smoke_g_per_m3 = physics.first_order_response(
        physics.smoke_concentration_g_per_m3(products(sc.FLAMING_SOOT_YIELD_G_PER_G)),
        SMOKE_CHAMBER_LENGTH_M / velocity,
    )
    tau_thermal_s = physics.detector_time_constant_s(THERMISTOR_RTI_M_S_HALF, velocity)
    ppm = physics.mole_fraction_ppm
    return {
        "temperature_c": physics.first_order_response(gas_rise_c, tau_thermal_s),
        "smoke_obscuration_pct_per_m": physics.obscuration_pct_per_m(smoke_g_per_m3),
        "pm25_ugm3": 1e6 * smoke_g_per_m3,
        "co_ppm": gas_sensor(
            ppm(products(sc.FLAMING_CO_YIELD_G_PER_G), physics.CO_MOLAR_MASS_G_PER_MOL)
        ),
        "co2_ppm": gas_sensor(
            ppm(products(sc.FLAMING_CO2_YIELD_G_PER_G), physics.CO2_MOLAR_MASS_G_PER_MOL)
        ),
        "voc_ppb": 1000.0
        * gas_sensor(
            ppm(products(sc.FLAMING_VOC_YIELD_G_PER_G), physics.ISOBUTYLENE_MOLAR_MASS_G_PER_MOL)
        ),
        "h2_ppm": gas_sensor(
            ppm(products(sc.FLAMING_H2_YIELD_G_PER_G), physics.H2_MOLAR_MASS_G_PER_MOL)
        ),
    }


def simulate(spec: GenerationSpec) -> pl.DataFrame:
    """Readings for `spec.devices` devices over `spec.duration_s` seconds at 1 Hz."""
    rng = np.random.default_rng(spec.seed)
    rooms = draw_rooms(spec, rng)
    base = _baseline(spec, rng)
    fire = _fire_signals(spec, rooms)
    shape = (spec.devices, spec.duration_s)
    values: dict[str, np.ndarray] = {}
    for ch in CHANNELS:
        clean = np.broadcast_to(base[ch.name], shape) + fire.get(ch.name, 0.0)
        if ch.name == "humidity_pct":
            # Heating the same air lowers its relative humidity.
            dry = saturation_vapour_pressure_hpa(base["temperature_c"])
            hot = saturation_vapour_pressure_hpa(base["temperature_c"] + fire["temperature_c"])
            clean = clean * dry / hot
        noisy = clean + rng.normal(0.0, NOISE[ch.name], shape)
        stepped = np.round(noisy / QUANTUM[ch.name]) * QUANTUM[ch.name]
        values[ch.name] = np.clip(stepped, ch.min_value, ch.max_value).astype(np.float32)
    return _to_frame(spec, rooms, values)


def _labels(prefix: str, numbers: np.ndarray) -> np.ndarray:
    """One string per device, built once; rows gather them (strings per row are slow)."""
    return np.char.add(prefix, numbers.astype(str))


def _to_frame(spec: GenerationSpec, rooms: Rooms, values: dict[str, np.ndarray]) -> pl.DataFrame:
    n, d = spec.devices, spec.duration_s
    device = np.repeat(np.arange(n), d)
    second = np.tile(np.arange(d, dtype=np.int64), n)
    start_us = int(spec.start.timestamp() * 1_000_000)
    ignition_us = start_us + rooms.ignition_s[device] * 1_000_000
    frame = pl.DataFrame(
        {
            "site_id": _labels("site-", np.arange(n) % spec.sites)[device],
            "device_id": _labels(f"syn-{spec.seed}-", np.arange(n))[device],
            "ts": start_us + second * 1_000_000,
            "scenario": rooms.scenario[device],
            "ignition_us": ignition_us,
            "seconds_since_ignition": (second - rooms.ignition_s[device]).astype(np.float32),
            **{name: v.reshape(-1) for name, v in values.items()},
        },
        nan_to_null=True,
    )
    frame = frame.with_columns(
        pl.col("ts").cast(TIMESTAMP),
        pl.col("ignition_us").is_not_null().alias("is_fire"),
        pl.col("ignition_us").cast(pl.Int64).cast(TIMESTAMP).alias("ignition_ts"),
    )
    return frame.select(list(READING_SCHEMA)).cast(READING_SCHEMA)  # type: ignore[arg-type]
