"""Vectorised, seeded, streaming simulation of many devices at once.

Every device is one room with one ceiling-mounted multi-sensor: an indoor baseline (daily cycle,
HVAC, occupants breathing CO2) and, unless it is a clean baseline, one source from the scenario
catalog. Heat reaches the detector through Alpert's ceiling jet and its thermal lag; plume
products follow the jet's temperature rise; room emissions mix into the room volume and leave
with the ventilation; the optical chamber and the gas sensors add their own lags. Sensor noise,
quantisation and sensor faults come last.

Devices are simulated in chunks of about `CHUNK_ROWS` readings, time-major inside a chunk
(so the lag filters run along contiguous rows), on any array backend. A chunk's draws come from
its own seed, derived from the spec's seed and the chunk number, so chunks run in parallel and
the same spec and seed give the same bytes however many workers ran them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, FAULTS, SYNTHETIC_SCHEMA, TIMESTAMP
from firepipe.core.simulation import physics
from firepipe.core.simulation import scenarios as sc
from firepipe.core.simulation.backends import ArrayBackend, get_backend

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

# A small exposed thermistor: faster than a fast-response sprinkler bulb (RTI <= 50 (m s)^0.5,
# NFPA 13), slower than a bare fine-wire thermocouple.
THERMISTOR_RTI_M_S_HALF = 30.0
# Smoke entry lag of a detector chamber, tau = L / u (Heskestad's characteristic length; the
# SFPE Handbook quotes L = 1.8-15 m for listed photoelectric detectors).
SMOKE_CHAMBER_LENGTH_M = 3.0
# Electrochemical and NDIR gas sensors answer with t90 of 30-60 s (datasheet-level), about
# 2.3 time constants of a first-order element.
GAS_SENSOR_TIME_CONSTANT_S = 15.0
# A ceiling sensor sits in the warm upper layer, which holds more of a buoyant source's
# products than the room average: 1-2.5 times the well-mixed value (assumed, after the
# two-zone picture of Cooper's "Compartment fire-generated environment", SFPE Handbook).
CEILING_LAYER_ENRICHMENT: sc.Range = (1.0, 2.5)

# Rooms of a dwelling: ceiling 2.4-3.6 m, floor 6-60 m^2; air changes 0.3-2 per hour (ASHRAE
# 62.2 asks 0.35 /h for homes; kitchens and bathrooms with fans run higher).
CEILING_HEIGHT_M: sc.Range = (2.4, 3.6)
FLOOR_AREA_M2: sc.Range = (6.0, 60.0)
AIR_CHANGES_PER_H: sc.Range = (0.3, 2.0)
MAX_RADIAL_DISTANCE_M = 6.0  # NFPA 72 spacing: no point of a room is further than 0.7 * 9.1 m
# The source sits 0.3-1 room widths (sqrt of the floor area) from the detector: next to it
# in a small room, across the room otherwise (assumed: sources and detectors placed anywhere).
RADIAL_DISTANCE_ROOM_SHARE: sc.Range = (0.3, 1.0)

# Indoor climate: 18-25 degC, 30-60 %RH; a daily swing of 0.5-2 K and a thermostat cycle of
# 0.2-0.8 K over 15-40 min (ASHRAE Handbook Fundamentals, residential thermal comfort).
INDOOR_TEMPERATURE_C: sc.Range = (18.0, 25.0)
INDOOR_HUMIDITY_PCT: sc.Range = (30.0, 60.0)
DAILY_SWING_K: sc.Range = (0.5, 2.0)
HVAC_SWING_K: sc.Range = (0.2, 0.8)
HVAC_PERIOD_S: sc.Range = (900.0, 2400.0)
SECONDS_PER_DAY = 86_400.0
# Occupants exhale 0.0052 L/s of CO2 each at rest (ASHRAE 62.1 basis), 1.8 g/L at 20 degC.
CO2_PER_OCCUPANT_MG_PER_S = 0.0052 * 1.8 * 1000.0
OUTDOOR_CO2_PPM = 420.0  # NOAA global mean, 2024
MAX_OCCUPANTS = 4
FLOOR_AREA_PER_OCCUPANT_M2 = 8.0
# Background of the other channels in a clean home (WHO indoor guidelines; sensor datasheets).
BACKGROUND_PM25_UGM3: sc.Range = (2.0, 15.0)
BACKGROUND_CO_PPM: sc.Range = (0.0, 2.0)
BACKGROUND_VOC_PPB: sc.Range = (50.0, 300.0)
BACKGROUND_H2_PPM: sc.Range = (0.4, 0.6)  # atmospheric H2 is ~0.53 ppm
# Events start 10-40 % of the way into a device's run, so every device has a quiet lead-in.
ONSET_FRACTION: sc.Range = (0.1, 0.4)

# Molar volume of the air physics.py assumes (20 degC, 1 atm): ppm = mg/m3 * V_m / M, the same
# conversion as physics.mole_fraction_ppm, so simulated and calibrated gases agree.
MOLAR_VOLUME_L_PER_MOL = physics.AIR_MOLAR_MASS_G_PER_MOL / physics.AIR_DENSITY_KG_PER_M3

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
# Sensor noise: one standard deviation in each channel's unit, plus a share of the reading
# (optical PM and metal-oxide VOC sensors are specified +-10-15 % of reading).
NOISE: dict[str, float] = {
    "temperature_c": 0.05,
    "humidity_pct": 0.3,
    "smoke_obscuration_pct_per_m": 0.02,
    "pm25_ugm3": 1.0,
    "co_ppm": 0.5,
    "co2_ppm": 10.0,
    "voc_ppb": 10.0,
    "h2_ppm": 0.05,
}
RELATIVE_NOISE: dict[str, float] = {
    "temperature_c": 0.0,
    "humidity_pct": 0.0,
    "smoke_obscuration_pct_per_m": 0.02,
    "pm25_ugm3": 0.05,
    "co_ppm": 0.02,
    "co2_ppm": 0.01,
    "voc_ppb": 0.05,
    "h2_ppm": 0.05,
}

# Sensor faults, on a share of devices, from a random second on: a channel drifting, a channel
# stuck at its last value, the device dropping out (all channels null for 1-10 min), or a
# channel spiking (EMI: about 1 in 200 s). A failing sensor drifts 0.5-5 % of its full scale
# per hour (far faster than ageing, which is a few % a year: that is what makes it a fault);
# spikes are 1-10 % of full scale. Full scales of typical sensors (datasheet-level: thermistor,
# capacitive RH, optical chamber, optical PM, electrochemical CO, NDIR CO2, MOX VOC and H2).
SENSOR_FULL_SCALE: dict[str, float] = {
    "temperature_c": 100.0,
    "humidity_pct": 100.0,
    "smoke_obscuration_pct_per_m": 20.0,
    "pm25_ugm3": 1_000.0,
    "co_ppm": 1_000.0,
    "co2_ppm": 5_000.0,
    "voc_ppb": 60_000.0,
    "h2_ppm": 1_000.0,
}
DRIFT_FULL_SCALE_SHARE_PER_H: sc.Range = (0.005, 0.05)
DROPOUT_S: sc.Range = (60.0, 600.0)
SPIKE_PROBABILITY_PER_S = 0.005
SPIKE_FULL_SCALE_SHARE: sc.Range = (0.01, 0.1)

# Readings per chunk: large enough that every array operation amortises its call, small enough
# that a chunk's working arrays stay in a few hundred MB.
CHUNK_ROWS = 1_000_000
# Readings per Parquet file that write_parquet aims at (a file closes at the first chunk past it).
ROWS_PER_FILE = 2_000_000


@dataclass(frozen=True)
class GenerationSpec:
    devices: int = 24
    duration_s: int = 600
    sites: int = 4
    seed: int = 0
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    families: tuple[str, ...] = sc.FAMILIES
    fault_share: float = 0.05

    def __post_init__(self) -> None:
        if self.devices < 1 or self.duration_s < 2 or self.sites < 1:
            raise ValueError("devices and sites must be >= 1 and duration_s >= 2")
        if not 0.0 <= self.fault_share <= 1.0:
            raise ValueError(f"fault_share must be within [0, 1], got {self.fault_share}")
        if not self.families:
            raise ValueError("families must name at least one scenario family")
        sc.in_families(self.families)  # raises on unknown names
        if self.start.tzinfo is None:
            # A naive start would be read in the host's timezone: other bytes on another machine.
            raise ValueError(f"start must be timezone-aware, got {self.start.isoformat()}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def rows(self) -> int:
        return self.devices * self.duration_s

    @property
    def devices_per_chunk(self) -> int:
        return max(1, min(self.devices, CHUNK_ROWS // self.duration_s))

    @property
    def chunks(self) -> int:
        return math.ceil(self.devices / self.devices_per_chunk)

    def to_json(self) -> dict[str, object]:
        return {
            "devices": self.devices,
            "duration_s": self.duration_s,
            "sites": self.sites,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "families": list(self.families),
            "fault_share": self.fault_share,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenerationSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generation spec fields {unknown}; known: {sorted(known)}")
        values = dict(data)
        if "start" in values:
            values["start"] = datetime.fromisoformat(str(values["start"]))
        if "families" in values:
            values["families"] = tuple(values["families"])
        return cls(**values)


NO_PLUME = sc.Yields(sc.NONE, sc.NONE, sc.NONE, sc.NONE, sc.NONE, sc.NONE)


@dataclass(frozen=True)
class Devices:
    """Per-device draws of one chunk (host arrays of length `n`)."""

    index: NDArray[np.int64]  # global device number
    scenario: NDArray[np.int64]  # index into the catalog
    params: dict[str, F64]  # physical parameters, one value per device
    fault: NDArray[np.int64]  # -1 or an index into FAULTS
    fault_params: dict[str, F64]

    @property
    def n(self) -> int:
        return len(self.index)

    def without_source(self) -> Devices:
        """The same rooms with their sources never starting: what the baseline alone reads."""
        params = {**self.params, "onset_s": np.full(self.n, np.inf)}
        return Devices(self.index, self.scenario, params, self.fault, self.fault_params)


def _catalog_field(get: Callable[[sc.Scenario], Any]) -> NDArray[Any]:
    """One catalog attribute as an array indexed by scenario number."""
    return np.array([get(s) for s in sc.CATALOG])


_LASTS = np.array([math.isfinite(s.duration_s[0]) for s in sc.CATALOG])


def draw_devices(spec: GenerationSpec, chunk: int, rng: np.random.Generator) -> Devices:
    """Rooms, sources and faults of the devices in `chunk`, from the host generator `rng`."""
    first = chunk * spec.devices_per_chunk
    index = np.arange(first, min(first + spec.devices_per_chunk, spec.devices), dtype=np.int64)
    n = len(index)
    catalog = sc.in_families(spec.families)
    shares = sc.device_shares(spec.families)
    probabilities = np.array([shares[s.name] for s in catalog])
    pick = rng.choice(len(catalog), size=n, p=probabilities / probabilities.sum())
    scenario = np.array([sc.CATALOG.index(s) for s in catalog], dtype=np.int64)[pick]

    def draw(lo_hi: sc.Range) -> F64:
        return rng.uniform(lo_hi[0], lo_hi[1], n)

    def per_scenario(get: Callable[[sc.Scenario], Any]) -> NDArray[Any]:
        return _catalog_field(get)[scenario]

    def between(get: Callable[[sc.Scenario], sc.Range]) -> F64:
        """A uniform draw within each device's scenario range."""
        lo = per_scenario(lambda s: get(s)[0])
        hi = per_scenario(lambda s: get(s)[1])
        return np.asarray(lo + (hi - lo) * rng.random(n), dtype=np.float64)

    duration = float(spec.duration_s)
    height = draw(CEILING_HEIGHT_M)
    area = draw(FLOOR_AREA_M2)
    volume = height * area
    ach = draw(AIR_CHANGES_PER_H)
    ventilation_per_s = ach / 3600.0
    radius = np.minimum(draw(RADIAL_DISTANCE_ROOM_SHARE) * np.sqrt(area), MAX_RADIAL_DISTANCE_M)
    enrichment = draw(CEILING_LAYER_ENRICHMENT)

    has_source = per_scenario(lambda s: s.family != "baseline")
    onset = np.where(has_source, np.floor(draw(ONSET_FRACTION) * duration), np.inf)
    peak = between(lambda s: s.peak_hrr_kw)
    alpha = per_scenario(lambda s: s.alpha_kw_per_s2)
    t_squared = alpha > 0  # reaches its peak at sqrt(peak / alpha)
    rise = np.where(t_squared, np.sqrt(peak / np.where(t_squared, alpha, 1.0)), 0.0)
    rise = np.where(t_squared, rise, between(lambda s: s.rise_s))
    lasts = _LASTS[scenario]
    stop = between(lambda s: s.duration_s if math.isfinite(s.duration_s[0]) else sc.NONE)
    event_duration = np.where(lasts, stop, np.inf)

    # Plume products per kelvin of ceiling-jet temperature rise (energy balance, see physics):
    # g/m3 per kelvin.
    dhc = sc.FURNISHING_HEAT_OF_COMBUSTION_KJ_PER_G

    def per_kelvin(field: str) -> F64:
        yields = between(lambda s: getattr(s.plume or NO_PLUME, field))
        return physics.smoke_concentration_g_per_m3(
            physics.product_mass_fraction_per_k(yields, dhc)
        )

    soot_k, co_k, co2_k, voc_k, h2_k, water_k = (
        per_kelvin(f) for f in ("soot", "co", "co2", "voc", "h2", "water")
    )

    # Room emissions at full output, as the well-mixed steady concentration E / (V * ach) in
    # mg/m3, raised by the ceiling layer.
    def steady_mg_m3(field: str) -> F64:
        rate = between(lambda s: getattr(s.room, field))
        return rate / (volume * ventilation_per_s) * enrichment

    aerosol_room = steady_mg_m3("aerosol_mg_per_s")
    co_room, co2_room, voc_room, h2_room = (
        steady_mg_m3(f) for f in ("co_mg_per_s", "co2_mg_per_s", "voc_mg_per_s", "h2_mg_per_s")
    )
    water_room = steady_mg_m3("water_g_per_s")  # g/s in, so g/m3 out
    extinction = per_scenario(lambda s: s.aerosol.mass_extinction_m2_per_g)
    pm25_share = per_scenario(lambda s: s.aerosol.pm25_mass_fraction)
    power = per_scenario(lambda s: s.growth_power)

    def ppm_per_mg_m3(molar_mass: float) -> float:
        return MOLAR_VOLUME_L_PER_MOL / molar_mass

    # At most one occupant per 8 m^2 of floor (a bedroom for two is about 16 m^2).
    room_for = np.clip(area // FLOOR_AREA_PER_OCCUPANT_M2, 1, MAX_OCCUPANTS).astype(np.int64)
    occupants_before = rng.integers(0, room_for + 1)
    occupants_after = rng.integers(0, room_for + 1)

    def occupancy_co2_ppm(occupants: NDArray[np.int64]) -> F64:
        steady = occupants * CO2_PER_OCCUPANT_MG_PER_S / (volume * ventilation_per_s)
        return OUTDOOR_CO2_PPM + steady * ppm_per_mg_m3(physics.CO2_MOLAR_MASS_G_PER_MOL)

    temperature = draw(INDOOR_TEMPERATURE_C)
    humidity = draw(INDOOR_HUMIDITY_PCT)
    params: dict[str, F64] = {
        "ceiling_height_m": height,
        "radial_distance_m": radius,
        "room_volume_m3": volume,
        "room_time_constant_s": 1.0 / ventilation_per_s,
        "onset_s": onset,
        "peak_hrr_kw": peak,
        "rise_s": np.maximum(rise, 1.0),
        "growth_power": power,
        "event_duration_s": event_duration,
        "jet_temperature_per_kw": physics.alpert_temperature_coefficient(height, radius),
        "jet_velocity_per_kw": physics.alpert_velocity_coefficient(height, radius),
        # Plume terms per kelvin, room terms at full output.
        "extinction_per_k": soot_k * extinction,  # g/m3 * m2/g = 1/m
        "extinction_room": aerosol_room * 1e-3 * extinction,
        "pm25_per_k": 1e6 * soot_k * pm25_share,  # ug/m3
        "pm25_room": 1e3 * aerosol_room * pm25_share,
        "co_ppm_per_k": 1e3 * co_k * ppm_per_mg_m3(physics.CO_MOLAR_MASS_G_PER_MOL),
        "co_ppm_room": co_room * ppm_per_mg_m3(physics.CO_MOLAR_MASS_G_PER_MOL),
        "co2_ppm_per_k": 1e3 * co2_k * ppm_per_mg_m3(physics.CO2_MOLAR_MASS_G_PER_MOL),
        "co2_ppm_room": co2_room * ppm_per_mg_m3(physics.CO2_MOLAR_MASS_G_PER_MOL),
        "voc_ppb_per_k": 1e6 * voc_k * ppm_per_mg_m3(physics.ISOBUTYLENE_MOLAR_MASS_G_PER_MOL),
        "voc_ppb_room": 1e3 * voc_room * ppm_per_mg_m3(physics.ISOBUTYLENE_MOLAR_MASS_G_PER_MOL),
        "h2_ppm_per_k": 1e3 * h2_k * ppm_per_mg_m3(physics.H2_MOLAR_MASS_G_PER_MOL),
        "h2_ppm_room": h2_room * ppm_per_mg_m3(physics.H2_MOLAR_MASS_G_PER_MOL),
        "water_g_m3_per_k": water_k,
        "water_g_m3_room": water_room,
        # Baseline.
        "temperature_c": temperature,
        "absolute_humidity_g_m3": humidity / 100.0 * saturation_vapour_density_g_m3(temperature),
        "daily_swing_k": draw(DAILY_SWING_K),
        "time_of_day_s": rng.uniform(0.0, SECONDS_PER_DAY, n),
        "hvac_swing_k": draw(HVAC_SWING_K),
        "hvac_period_s": draw(HVAC_PERIOD_S),
        "hvac_phase": rng.uniform(0.0, 2.0 * math.pi, n),
        "co2_before_ppm": occupancy_co2_ppm(occupants_before),
        "co2_after_ppm": occupancy_co2_ppm(occupants_after),
        "occupancy_change_s": rng.uniform(0.0, duration, n),
        "pm25_ugm3": draw(BACKGROUND_PM25_UGM3),
        "co_ppm": draw(BACKGROUND_CO_PPM),
        "voc_ppb": draw(BACKGROUND_VOC_PPB),
        "h2_ppm": draw(BACKGROUND_H2_PPM),
    }
    faulty = rng.random(n) < spec.fault_share
    fault = np.where(faulty, rng.integers(0, len(FAULTS), n), -1)
    fault_params: dict[str, F64] = {
        "channel": rng.integers(0, len(CHANNELS), n).astype(np.float64),
        "start_s": np.floor(rng.uniform(0.0, duration, n)),
        "drift_span_share_per_s": draw(DRIFT_FULL_SCALE_SHARE_PER_H) / 3600.0,
        "dropout_s": np.floor(draw(DROPOUT_S)),
        "spike_span_share": draw(SPIKE_FULL_SCALE_SHARE),
        # Seeds of each device's spike times (whole numbers, exact in float64).
        "spike_seed": rng.integers(0, 2**52, n).astype(np.float64),
    }
    return Devices(index, scenario, params, fault.astype(np.int64), fault_params)


def saturation_vapour_pressure_hpa(temperature_c: Any) -> Any:
    """Magnus formula over water (Alduchov and Eskridge 1996)."""
    xp, t = physics.as_array(temperature_c)
    return 6.1094 * xp.exp(17.625 * t / (t + 243.04))


def saturation_vapour_density_g_m3(temperature_c: Any) -> Any:
    """Water vapour density at saturation: e / (R_v T), R_v = 461.5 J/(kg K)."""
    _, t = physics.as_array(temperature_c)
    return saturation_vapour_pressure_hpa(t) * 100.0 / (461.5 * (t + 273.15)) * 1000.0


def clean_signals(devices: Devices, duration_s: int, backend: ArrayBackend) -> dict[str, Any]:
    """Noise-free channel values, time-major arrays (duration_s, devices) on the backend."""
    xp = backend.xp
    f32 = xp.float32

    def p(name: str) -> Any:
        return backend.asarray(devices.params[name].astype(np.float32)[None, :])

    t = xp.reshape(xp.arange(duration_s, dtype=f32), (duration_s, 1))
    since = t - p("onset_s")
    growth = xp.clip(since / p("rise_s"), 0.0, 1.0) ** p("growth_power")
    output = xp.where(since < p("event_duration_s"), growth, 0.0)  # 0..1 of full output

    # Heat: Alpert's ceiling jet and the thermistor's lag.
    hrr_cube_root = (p("peak_hrr_kw") * output) ** (1.0 / 3.0)
    jet_rise_k = p("jet_temperature_per_kw") * hrr_cube_root * hrr_cube_root
    velocity = xp.maximum(
        p("jet_velocity_per_kw") * hrr_cube_root, physics.QUIESCENT_AIR_VELOCITY_M_PER_S
    )
    thermal_tau = physics.detector_time_constant_s(THERMISTOR_RTI_M_S_HALF, velocity)
    # Room emissions: the source's output mixed into the room volume (tau = V / Q_vent).
    mixed = physics.first_order_response(output, p("room_time_constant_s"), axis=0)

    daily = p("daily_swing_k") * xp.sin(
        (2.0 * math.pi / SECONDS_PER_DAY) * (t + p("time_of_day_s"))
    )
    hvac = p("hvac_swing_k") * xp.sin((2.0 * math.pi) * t / p("hvac_period_s") + p("hvac_phase"))
    temperature = (
        p("temperature_c")
        + daily
        + hvac
        + physics.first_order_response(jet_rise_k, thermal_tau, axis=0)
    )

    extinction = physics.first_order_response(
        p("extinction_per_k") * jet_rise_k + p("extinction_room") * mixed,
        SMOKE_CHAMBER_LENGTH_M / velocity,
        axis=0,
    )
    jet_gas = physics.first_order_response(jet_rise_k, GAS_SENSOR_TIME_CONSTANT_S, axis=0)
    room_gas = physics.first_order_response(mixed, GAS_SENSOR_TIME_CONSTANT_S, axis=0)

    def event(unit: str) -> Any:
        """What the source adds to a gas reading: its plume part and its room part."""
        return p(f"{unit}_per_k") * jet_gas + p(f"{unit}_room") * room_gas

    occupancy_settled = xp.exp(
        -xp.maximum(t - p("occupancy_change_s"), 0.0) / p("room_time_constant_s")
    )
    occupancy_co2 = p("co2_after_ppm") + (p("co2_before_ppm") - p("co2_after_ppm")) * xp.where(
        t < p("occupancy_change_s"), 1.0, occupancy_settled
    )
    vapour = p("absolute_humidity_g_m3") + event("water_g_m3")
    humidity = 100.0 * vapour / saturation_vapour_density_g_m3(temperature)
    return {
        "temperature_c": temperature,
        "humidity_pct": humidity,
        "smoke_obscuration_pct_per_m": 100.0 * (1.0 - xp.exp(-extinction)),
        "pm25_ugm3": p("pm25_ugm3") + p("pm25_per_k") * jet_rise_k + p("pm25_room") * mixed,
        "co_ppm": p("co_ppm") + event("co_ppm"),
        "co2_ppm": occupancy_co2 + event("co2_ppm"),
        "voc_ppb": p("voc_ppb") + event("voc_ppb"),
        "h2_ppm": p("h2_ppm") + event("h2_ppm"),
    }


def sensor_readings(
    clean: Mapping[str, Any], seed: np.random.SeedSequence, backend: ArrayBackend, *, noise: bool
) -> dict[str, F32]:
    """Add each sensor's noise, step to its resolution and clip to its range, on the backend.

    Returns host arrays shaped (devices, seconds): the row order of the output.
    """
    xp = backend.xp
    noise_seeds = seed.spawn(len(CHANNELS))
    out: dict[str, F32] = {}
    for ch, noise_seed in zip(CHANNELS, noise_seeds, strict=True):
        value = clean[ch.name]
        if noise:
            sigma = NOISE[ch.name] + RELATIVE_NOISE[ch.name] * xp.abs(value)
            value = value + sigma * backend.standard_normal(noise_seed, tuple(value.shape))
        quantum = QUANTUM[ch.name]
        stepped = xp.clip(xp.round(value * (1.0 / quantum)) * quantum, ch.min_value, ch.max_value)
        out[ch.name] = np.ascontiguousarray(backend.to_numpy(xp.astype(stepped, xp.float32)).T)
    return out


def apply_faults(values: dict[str, F32], devices: Devices) -> None:
    """Sensor faults on the devices that have one, in place on (devices, seconds) arrays."""
    seconds = next(iter(values.values())).shape[1]
    for row in np.flatnonzero(devices.fault >= 0):
        kind = FAULTS[devices.fault[row]]
        start = int(devices.fault_params["start_s"][row])
        channel = CHANNELS[int(devices.fault_params["channel"][row])]
        span = SENSOR_FULL_SCALE[channel.name]
        series = values[channel.name][row]
        if kind == "drift":
            rate = devices.fault_params["drift_span_share_per_s"][row] * span
            series[start:] += (rate * np.arange(1, seconds - start + 1)).astype(np.float32)
        elif kind == "stuck":
            series[start:] = series[start]
        elif kind == "dropout":
            stop = start + int(devices.fault_params["dropout_s"][row])
            for name in CHANNEL_NAMES:
                values[name][row, start:stop] = np.nan
        elif kind == "spike":
            hit = _spike_seconds(int(devices.fault_params["spike_seed"][row]), seconds)
            hit[:start] = False
            series[hit] += np.float32(devices.fault_params["spike_span_share"][row] * span)
        np.clip(series, channel.min_value, channel.max_value, out=series)


def _spike_seconds(seed: int, seconds: int) -> NDArray[np.bool_]:
    rng = np.random.default_rng(seed)
    return rng.random(seconds) < SPIKE_PROBABILITY_PER_S


def to_frame(spec: GenerationSpec, devices: Devices, values: Mapping[str, F32]) -> pl.DataFrame:
    """One row per device per second, device-major, in READING_SCHEMA plus the synthetic labels.

    Labels are typed once per device and gathered onto its rows: building them per row is what
    would make assembly slower than the physics.
    """
    n, seconds = devices.n, spec.duration_s
    is_fire = _CATALOG_FIRE[devices.scenario]
    ignition_s = np.where(is_fire, devices.params["onset_s"], np.nan)
    start_us = int(spec.start.timestamp() * 1_000_000)
    ignition_us = pl.Series(start_us + ignition_s * 1_000_000, nan_to_null=True)
    per_device = pl.DataFrame(
        {
            "site_id": np.char.add("site-", (devices.index % spec.sites).astype(str)),
            "device_id": np.char.add(f"syn-{spec.seed}-", devices.index.astype(str)),
            "scenario": _CATALOG_NAMES[devices.scenario],
            "is_fire": is_fire,
            "ignition_ts": ignition_us.cast(pl.Int64).cast(TIMESTAMP),
            "scenario_family": _CATALOG_FAMILIES[devices.scenario],
            "fault": pl.Series(np.array([*FAULTS, ""])[devices.fault]).replace("", None),
        }
    )
    rows = per_device.select(pl.all().gather(np.repeat(np.arange(n, dtype=np.uint32), seconds)))
    second = np.arange(seconds, dtype=np.float32)
    elapsed = second[None, :] - ignition_s.astype(np.float32)[:, None]
    dropouts = bool((devices.fault == FAULTS.index("dropout")).any())
    return rows.with_columns(
        pl.Series("ts", np.tile(start_us + np.arange(seconds) * 1_000_000, n)).cast(TIMESTAMP),
        pl.Series("seconds_since_ignition", elapsed.reshape(-1), nan_to_null=True),
        *(
            pl.Series(name, values[name].reshape(-1), nan_to_null=dropouts)
            for name in CHANNEL_NAMES
        ),
    ).select(list(SYNTHETIC_SCHEMA))


_CATALOG_NAMES = np.array([s.name for s in sc.CATALOG])
_CATALOG_FAMILIES = np.array([s.family for s in sc.CATALOG])
_CATALOG_FIRE = np.array([s.is_fire for s in sc.CATALOG])


def _chunk_seeds(spec: GenerationSpec, chunk: int) -> list[np.random.SeedSequence]:
    """Independent streams of one chunk: its device draws and its sensor noise."""
    return np.random.SeedSequence(spec.seed, spawn_key=(chunk,)).spawn(2)


def chunk_devices(spec: GenerationSpec, chunk: int) -> Devices:
    draws = _chunk_seeds(spec, chunk)[0]
    return draw_devices(spec, chunk, np.random.Generator(np.random.PCG64(draws)))


def simulate_chunk(
    spec: GenerationSpec, chunk: int, backend: ArrayBackend, *, noise: bool = True
) -> pl.DataFrame:
    """The readings of one chunk of devices; a function of (spec, chunk) only."""
    devices = chunk_devices(spec, chunk)
    noise_seed = _chunk_seeds(spec, chunk)[1]
    values = sensor_readings(
        clean_signals(devices, spec.duration_s, backend), noise_seed, backend, noise=noise
    )
    apply_faults(values, devices)
    return to_frame(spec, devices, values)


def simulate_chunks(
    spec: GenerationSpec, *, backend: str = "numpy", workers: int | None = None, noise: bool = True
) -> Iterator[pl.DataFrame]:
    """The readings chunk by chunk, in order, `workers` chunks at a time (default: the cores
    this process may run on).

    At most `workers` + 1 chunks are in memory at once, whatever the size of the spec.
    """
    array_backend = get_backend(backend)
    workers = workers or len(os.sched_getaffinity(0)) or 1
    if workers == 1 or spec.chunks == 1:
        for chunk in range(spec.chunks):
            yield simulate_chunk(spec, chunk, array_backend, noise=noise)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="simulate") as pool:
        pending: list[Future[pl.DataFrame]] = []
        next_chunk = 0
        while next_chunk < spec.chunks or pending:
            while next_chunk < spec.chunks and len(pending) < workers:
                pending.append(
                    pool.submit(simulate_chunk, spec, next_chunk, array_backend, noise=noise)
                )
                next_chunk += 1
            yield pending.pop(0).result()


def simulate(
    spec: GenerationSpec, *, backend: str = "numpy", workers: int | None = None, noise: bool = True
) -> pl.DataFrame:
    """All readings of `spec` in memory (use `simulate_chunks` or `write_parquet` at scale)."""
    return pl.concat(
        simulate_chunks(spec, backend=backend, workers=workers, noise=noise), rechunk=False
    )


@dataclass(frozen=True)
class GenerationResult:
    files: tuple[str, ...]
    rows: int
    seconds: float


def write_parquet(
    spec: GenerationSpec,
    directory: str,
    *,
    backend: str = "numpy",
    rows_per_file: int = ROWS_PER_FILE,
    constant_columns: Mapping[str, str] | None = None,
    storage_options: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> GenerationResult:
    """Stream the readings of `spec` into Parquet files `part-00000.parquet`, ... under `directory`.

    `directory` is a local path or an object-store URI (s3://...). Memory stays bounded by a few
    chunks plus one file's rows. Locally each file appears under its final name only once it is
    complete; on S3 an object is never visible half-written. `progress` gets the rows added.
    """
    started = time.perf_counter()
    local = "://" not in directory
    if local:
        Path(directory).mkdir(parents=True, exist_ok=True)
        earlier = sorted(p.name for p in Path(directory).glob("part-*.parquet*"))
        if earlier:
            # New files would replace some of them and leave the rest: two runs in one folder.
            raise FileExistsError(
                f"{directory} already holds generated files ({', '.join(earlier[:3])}...): "
                "choose an empty folder or remove them"
            )
    constants = [pl.lit(v, pl.String()).alias(k) for k, v in (constant_columns or {}).items()]
    files: list[str] = []
    buffered: list[pl.DataFrame] = []
    buffered_rows = total = 0

    def flush() -> None:
        nonlocal buffered, buffered_rows
        if not buffered:
            return
        frame = pl.concat(buffered).with_columns(constants)
        path = f"{directory.rstrip('/')}/part-{len(files):05d}.parquet"
        if local:
            partial = f"{path}.partial"
            frame.write_parquet(partial, statistics=True)
            os.replace(partial, path)
        else:
            frame.write_parquet(path, statistics=True, storage_options=dict(storage_options or {}))
        files.append(path)
        buffered, buffered_rows = [], 0

    for chunk in simulate_chunks(spec, backend=backend, workers=workers):
        buffered.append(chunk)
        buffered_rows += chunk.height
        total += chunk.height
        if buffered_rows >= rows_per_file:
            flush()
        if progress is not None:
            progress(chunk.height)
    flush()
    return GenerationResult(tuple(files), total, time.perf_counter() - started)
