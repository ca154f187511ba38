"""Calibrate the flaming-fire physics against the real NIST fires, and report its error.

The simulated curve of a station is the noise-free output of the same physics the generator
uses: a t-squared fire (capped at its peak) drives Alpert's ceiling jet, whose excess
temperature carries the combustion products (smoke, CO, CO2) in fixed proportion to the heat.

What the NIST instruments measure, and what is assumed here:
- the ceiling thermocouples are bare beads, read as the gas temperature itself (their lag of a
  second or two is below the 2-5 s sampling step), so no detector thermal lag is applied;
- the smoke meters are open-path optical density meters in the gas, so obscuration is that of
  the gas (Beer-Lambert over 1 m), with no detector-chamber entry lag;
- the gas analysers draw the gas through sampling lines: one extra transport delay per test,
  shared by CO and CO2, is fitted;
- each station gets an effective radial distance (it folds in walls, doorways and the hot
  layer of a multi-room home) and a delay (the fire's incubation plus the jet's transport);
- the station nearest the fire (largest temperature rise) sits at NEAREST_STATION_RADIUS_M,
  which fixes the scale that Alpert's far field leaves free ((Q, r) -> (sQ, sr) gives the same
  temperature);
- every measured channel starts from its measured ambient (the first samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray
from scipy.optimize import least_squares  # type: ignore[import-untyped]

from firepipe.core.realdata import nist
from firepipe.core.simulation import physics
from firepipe.core.simulation.calibrated import (
    CalibratedRanges,
)

F64 = NDArray[np.float64]

# Height of the ceiling above the burning item in the NIST manufactured home: the ceiling
# slopes from 2.1 m at the walls to 2.5 m at the ridge and the items (chair, mattress) burn
# from about 0.3 m; the FDS validation suite's Alpert inputs for these tests use H = 2.1 m
# (firemodels/fds, Validation/NIST_Smoke_Alarms/Correlations; TN 1455-1 describes the home).
CEILING_HEIGHT_ABOVE_FUEL_M = 2.1
# Radial distance from the fire to the nearest ceiling thermocouple in those same inputs
# (1.15 m living-room fires, 1.25 m bedroom fires).
NEAREST_STATION_RADIUS_M = 1.2
# Effective heat of combustion of furnishings (Tewarson, SFPE Handbook: 12-30 kJ/g). It must
# equal the scenario catalog's FURNISHING_HEAT_OF_COMBUSTION_KJ_PER_G: the fitted yields mean
# "per this heat", since products per kelvin scale as yield / heat of combustion.
HEAT_OF_COMBUSTION_KJ_PER_G = 20.0
# The alarm threshold whose timing is scored: UL 217 sensitivity 0.5-4 %/ft, and the FDS
# validation inputs for these tests set ionisation alarms at 4.3 %/m.
OBSCURATION_THRESHOLD_PCT_PER_M = 4.3

# Physical bounds of the fitted parameters.
# t-squared growth from below "slow" (0.00293) to beyond "ultra-fast" (0.1876), NFPA 72 B.
ALPHA_BOUNDS_KW_PER_S2 = (0.0005, 0.5)
# Residential items: a waste basket (~20 kW) to a fully involved sofa (~3 MW), SFPE Handbook.
PEAK_HRR_BOUNDS_KW = (20.0, 3000.0)
# Well-ventilated flaming yields (Tewarson, SFPE Handbook), widened to both sides.
SOOT_YIELD_BOUNDS_G_PER_G = (0.001, 0.3)
CO_YIELD_BOUNDS_G_PER_G = (0.0005, 0.2)
# Up to the stoichiometric CO2 yield of hydrocarbons (about 3.1 g/g).
CO2_YIELD_BOUNDS_G_PER_G = (0.1, 3.1)
# Incubation plus transport through the home within a 4-minute test.
STATION_DELAY_BOUNDS_S = (0.0, 180.0)
# From the nearest station to the far end of a 20 m home, with some slack for corridors.
RADIUS_BOUNDS_M = (NEAREST_STATION_RADIUS_M, 40.0)
# Gas sampling lines of fire tests delay analysers by seconds to about a minute.
GAS_DELAY_BOUNDS_S = (0.0, 60.0)

# Measured ranges below these are instrument noise: NRMSE divides by at least this much.
RANGE_FLOOR: dict[str, float] = {
    "temperature_c": 1.0,
    "smoke_obscuration_pct_per_m": 1.0,
    "co_ppm": 10.0,
    "co2_ppm": 100.0,
}
FITTED_CHANNELS = tuple(RANGE_FLOOR)
MOLAR_MASS_G_PER_MOL = {
    "co_ppm": physics.CO_MOLAR_MASS_G_PER_MOL,
    "co2_ppm": physics.CO2_MOLAR_MASS_G_PER_MOL,
}


@dataclass(frozen=True)
class StationFit:
    station: str
    radial_distance_m: float
    delay_s: float


@dataclass(frozen=True)
class FireParameters:
    """The flaming-fire parameters of one test, and where its stations effectively are."""

    test: str
    alpha_kw_per_s2: float
    peak_hrr_kw: float
    soot_yield_g_per_g: float | None
    co_yield_g_per_g: float | None
    co2_yield_g_per_g: float | None
    gas_delay_s: float
    stations: tuple[StationFit, ...]

    def station(self, name: str) -> StationFit:
        for s in self.stations:
            if s.station == name:
                return s
        raise KeyError(f"{self.test} has no fitted station {name!r}")

    def yield_for(self, channel: str) -> float | None:
        return {
            "smoke_obscuration_pct_per_m": self.soot_yield_g_per_g,
            "co_ppm": self.co_yield_g_per_g,
            "co2_ppm": self.co2_yield_g_per_g,
        }[channel]


# --- the simulated curve -------------------------------------------------------------------


def gas_temperature_rise_c(
    seconds: F64, alpha_kw_per_s2: float, peak_hrr_kw: float, radius_m: float, delay_s: float
) -> F64:
    """Ceiling-jet excess temperature at a station, `delay_s` behind the fire's growth."""
    hrr = physics.t_squared_hrr_kw(seconds - delay_s, alpha_kw_per_s2, peak_hrr_kw)
    return physics.ceiling_jet_temperature_rise_c(hrr, CEILING_HEIGHT_ABOVE_FUEL_M, radius_m)


def product_rise(channel: str, rise_c: F64, yield_g_per_g: float) -> F64:
    """What the fire adds to a product channel (obscuration %/m or ppm) at a gas rise."""
    fraction = rise_c * physics.product_mass_fraction_per_k(
        yield_g_per_g, HEAT_OF_COMBUSTION_KJ_PER_G
    )
    if channel == "smoke_obscuration_pct_per_m":
        return physics.obscuration_pct_per_m(physics.smoke_concentration_g_per_m3(fraction))
    return physics.mole_fraction_ppm(fraction, MOLAR_MASS_G_PER_MOL[channel])


def ambient(values: F64) -> float:
    return float(np.median(values[: nist.AMBIENT_SAMPLES]))


def _on_ambient(channel: str, base: float, rise: F64) -> F64:
    if channel == "smoke_obscuration_pct_per_m":
        # Optical densities add: transmissions multiply.
        return 100.0 - (100.0 - base) * (100.0 - rise) / 100.0
    return base + rise


def simulated_curve(
    params: FireParameters, station: str, channel: str, seconds: F64, ambient_value: float
) -> F64 | None:
    """The noise-free simulated channel at a station on `seconds`, or None when the channel
    has no fitted yield."""
    st = params.station(station)
    delay = st.delay_s + (params.gas_delay_s if channel in MOLAR_MASS_G_PER_MOL else 0.0)
    rise = gas_temperature_rise_c(
        seconds, params.alpha_kw_per_s2, params.peak_hrr_kw, st.radial_distance_m, delay
    )
    if channel == "temperature_c":
        return ambient_value + rise
    y = params.yield_for(channel)
    if y is None:
        return None
    return _on_ambient(channel, ambient_value, product_rise(channel, rise, y))


# --- fitting -------------------------------------------------------------------------------


def _norm(values: F64, channel: str) -> float:
    return max(float(np.ptp(values)), RANGE_FLOOR[channel])


def _measured(test: nist.NistTest, channel: str) -> dict[str, F64]:
    out = {}
    for st in test.stations:
        v = test.channel_values(st, channel)
        if v is not None:
            out[st] = v
    return out


def fit_test(test: nist.NistTest) -> FireParameters:
    """Fit one test: growth, peak and station geometry on the thermocouples, then the yields
    on the smoke meters and the gas analysers, with everything else held."""
    t = test.seconds
    temps = _measured(test, "temperature_c")
    if not temps:
        raise ValueError(f"{test.name}: no usable ceiling thermocouple, nothing to fit")
    names = sorted(temps)
    rises = {st: v - ambient(v) for st, v in temps.items()}
    nearest = max(names, key=lambda st: float(rises[st].max()))
    others = [st for st in names if st != nearest]

    def unpack(x: F64) -> tuple[float, float, dict[str, float], dict[str, float]]:
        alpha, peak = float(np.exp(x[0])), float(np.exp(x[1]))
        delays = dict(zip(names, (float(d) for d in x[2 : 2 + len(names)]), strict=True))
        radii = {nearest: NEAREST_STATION_RADIUS_M}
        radii |= dict(zip(others, (float(np.exp(v)) for v in x[2 + len(names) :]), strict=True))
        return alpha, peak, delays, radii

    def residuals(x: F64) -> F64:
        alpha, peak, delays, radii = unpack(x)
        parts = [
            (gas_temperature_rise_c(t, alpha, peak, radii[st], delays[st]) - rises[st])
            / _norm(temps[st], "temperature_c")
            for st in names
        ]
        return np.concatenate(parts)

    x0, lower, upper = _thermal_start(t, names, others, nearest, rises)
    thermal = least_squares(residuals, x0, bounds=(lower, upper), method="trf")
    alpha, peak, delays, radii = unpack(thermal.x)
    # A fire still growing when the test ends never showed its peak: keep the largest heat
    # release the data saw (the same curves on the measured grid), not the bound it ran to.
    witnessed_kw = float(physics.t_squared_hrr_kw(t[-1] - min(delays.values()), alpha, peak))
    peak = min(peak, witnessed_kw)
    stations = tuple(StationFit(st, radii[st], delays[st]) for st in names)
    base = FireParameters(test.name, alpha, peak, None, None, None, 0.0, stations)
    soot = _fit_soot(test, base)
    co, co2, gas_delay = _fit_gases(test, base)
    return FireParameters(test.name, alpha, peak, soot, co, co2, gas_delay, stations)


def _thermal_start(
    t: F64, names: list[str], others: list[str], nearest: str, rises: dict[str, F64]
) -> tuple[F64, F64, F64]:
    def first_time_above(st: str, share: float) -> float:
        above = np.nonzero(rises[st] >= share * max(float(rises[st].max()), 1e-9))[0]
        return float(t[above[0]]) if above.size else float(t[-1])

    delays0 = [np.clip(0.3 * first_time_above(st, 0.1), *STATION_DELAY_BOUNDS_S) for st in names]
    peak_rise = max(float(rises[nearest].max()), 1.0)
    radii0 = [
        np.clip(
            NEAREST_STATION_RADIUS_M * (peak_rise / max(float(rises[st].max()), 0.5)) ** 1.5,
            RADIUS_BOUNDS_M[0] * 1.01,
            RADIUS_BOUNDS_M[1] * 0.99,
        )
        for st in others
    ]
    x0 = np.array([np.log(0.01), np.log(300.0), *delays0, *np.log(radii0)])
    lower = np.array(
        [
            np.log(ALPHA_BOUNDS_KW_PER_S2[0]),
            np.log(PEAK_HRR_BOUNDS_KW[0]),
            *[STATION_DELAY_BOUNDS_S[0]] * len(names),
            *[np.log(RADIUS_BOUNDS_M[0])] * len(others),
        ]
    )
    upper = np.array(
        [
            np.log(ALPHA_BOUNDS_KW_PER_S2[1]),
            np.log(PEAK_HRR_BOUNDS_KW[1]),
            *[STATION_DELAY_BOUNDS_S[1]] * len(names),
            *[np.log(RADIUS_BOUNDS_M[1])] * len(others),
        ]
    )
    return x0, lower, upper


def _fit_soot(test: nist.NistTest, base: FireParameters) -> float | None:
    channel = "smoke_obscuration_pct_per_m"
    smoke = {st: v for st, v in _measured(test, channel).items() if st in _fitted(base)}
    if not smoke:
        return None
    t = test.seconds

    scale = _channel_scale(smoke, channel)

    def residuals(x: F64) -> F64:
        params = _with(base, soot=float(np.exp(x[0])))
        return np.concatenate(
            [_error(params, st, channel, t, v) / scale for st, v in smoke.items()]
        )

    bounds = np.log(SOOT_YIELD_BOUNDS_G_PER_G)
    fit = least_squares(residuals, [np.log(0.05)], bounds=(bounds[:1], bounds[1:]))
    return float(np.exp(fit.x[0]))


def _fit_gases(
    test: nist.NistTest, base: FireParameters
) -> tuple[float | None, float | None, float]:
    t = test.seconds
    fitted = _fitted(base)
    gases = {
        ch: {st: v for st, v in _measured(test, ch).items() if st in fitted}
        for ch in MOLAR_MASS_G_PER_MOL
    }
    present = [ch for ch, by_station in gases.items() if by_station]
    if not present:
        return None, None, 0.0
    start = {"co_ppm": 0.02, "co2_ppm": 1.5}
    bounds_of = {"co_ppm": CO_YIELD_BOUNDS_G_PER_G, "co2_ppm": CO2_YIELD_BOUNDS_G_PER_G}

    def params_of(x: F64) -> FireParameters:
        y = dict(zip(present, (float(np.exp(v)) for v in x[:-1]), strict=True))
        return _with(base, co=y.get("co_ppm"), co2=y.get("co2_ppm"), gas_delay=float(x[-1]))

    scales = {ch: _channel_scale(gases[ch], ch) for ch in present}

    def residuals(x: F64) -> F64:
        params = params_of(x)
        return np.concatenate(
            [
                _error(params, st, ch, t, v) / scales[ch]
                for ch in present
                for st, v in gases[ch].items()
            ]
        )

    x0 = [*(np.log(start[ch]) for ch in present), 10.0]
    lower = [*(np.log(bounds_of[ch][0]) for ch in present), GAS_DELAY_BOUNDS_S[0]]
    upper = [*(np.log(bounds_of[ch][1]) for ch in present), GAS_DELAY_BOUNDS_S[1]]
    fit = least_squares(residuals, x0, bounds=(lower, upper))
    best = params_of(fit.x)
    return best.co_yield_g_per_g, best.co2_yield_g_per_g, best.gas_delay_s


def _fitted(params: FireParameters) -> set[str]:
    return {s.station for s in params.stations}


def _with(
    params: FireParameters,
    soot: float | None = None,
    co: float | None = None,
    co2: float | None = None,
    gas_delay: float = 0.0,
) -> FireParameters:
    return FireParameters(
        params.test,
        params.alpha_kw_per_s2,
        params.peak_hrr_kw,
        soot,
        co,
        co2,
        gas_delay,
        params.stations,
    )


def _channel_scale(by_station: dict[str, F64], channel: str) -> float:
    # One scale per channel and test, not per station: a station the smoke barely reached
    # must not outweigh the ones it filled.
    return max(_norm(v, channel) for v in by_station.values())


def _error(params: FireParameters, station: str, channel: str, t: F64, v: F64) -> F64:
    sim = simulated_curve(params, station, channel, t, ambient(v))
    if sim is None:
        raise ValueError(f"{params.test}: no yield for {channel}")
    return np.asarray(sim - v, dtype=np.float64)


# --- curves, errors and ranges -------------------------------------------------------------

CURVE_SCHEMA: dict[str, pl.DataType] = {
    "test": pl.String(),
    "station": pl.String(),
    "channel": pl.String(),
    "seconds_since_ignition": pl.Float64(),
    "measured": pl.Float64(),
    "simulated": pl.Float64(),
}


def curves(test: nist.NistTest, params: FireParameters) -> pl.DataFrame:
    """Measured and simulated values of every fitted station and channel, on the measured
    time grid (long format)."""
    t = test.seconds
    frames = []
    for st in sorted(_fitted(params)):
        for channel in FITTED_CHANNELS:
            measured = test.channel_values(st, channel)
            if measured is None:
                continue
            sim = simulated_curve(params, st, channel, t, ambient(measured))
            if sim is None:
                continue
            frames.append(
                pl.DataFrame(
                    {
                        "test": test.name,
                        "station": st,
                        "channel": channel,
                        "seconds_since_ignition": t,
                        "measured": measured,
                        "simulated": sim,
                    },
                    schema=CURVE_SCHEMA,
                )
            )
    return pl.concat(frames) if frames else pl.DataFrame(schema=CURVE_SCHEMA)


def time_to_threshold_s(
    seconds: F64, obscuration_pct_per_m: F64, threshold: float = OBSCURATION_THRESHOLD_PCT_PER_M
) -> float | None:
    """First time the obscuration *added by the fire* (over the first samples' ambient, in
    optical density) reaches `threshold`, or None. Removing the ambient keeps a dirty or offset
    meter from "alarming" at ignition."""
    base = ambient(obscuration_pct_per_m)
    transmission = (100.0 - obscuration_pct_per_m) / max(100.0 - base, 1e-9)
    added = 100.0 * (1.0 - transmission)
    above = np.nonzero(added >= threshold)[0]
    return float(seconds[above[0]]) if above.size else None


ERROR_SCHEMA: dict[str, pl.DataType] = {
    "test": pl.String(),
    "station": pl.String(),
    "channel": pl.String(),
    "nrmse": pl.Float64(),
    "rmse": pl.Float64(),
    "measured_range": pl.Float64(),
    "measured_time_to_4_3_s": pl.Float64(),
    "simulated_time_to_4_3_s": pl.Float64(),
    "time_to_4_3_error_s": pl.Float64(),
}


def errors(curve_frame: pl.DataFrame) -> pl.DataFrame:
    """Per test, station and channel: NRMSE (RMSE over the measured range, at least the
    channel's noise floor) and, for obscuration, the error of the time to 4.3 %/m (simulated
    minus measured; null when either never reaches it)."""
    rows = []
    for (test, station, channel), part in curve_frame.group_by(
        ["test", "station", "channel"], maintain_order=True
    ):
        t = part["seconds_since_ignition"].to_numpy()
        measured, sim = part["measured"].to_numpy(), part["simulated"].to_numpy()
        rmse = float(np.sqrt(np.mean((sim - measured) ** 2)))
        measured_range = float(np.ptp(measured))
        row: dict[str, object] = {
            "test": test,
            "station": station,
            "channel": channel,
            "nrmse": rmse / max(measured_range, RANGE_FLOOR[str(channel)]),
            "rmse": rmse,
            "measured_range": measured_range,
            "measured_time_to_4_3_s": None,
            "simulated_time_to_4_3_s": None,
            "time_to_4_3_error_s": None,
        }
        if channel == "smoke_obscuration_pct_per_m":
            t_meas, t_sim = time_to_threshold_s(t, measured), time_to_threshold_s(t, sim)
            row["measured_time_to_4_3_s"] = t_meas
            row["simulated_time_to_4_3_s"] = t_sim
            if t_meas is not None and t_sim is not None:
                row["time_to_4_3_error_s"] = t_sim - t_meas
        rows.append(row)
    return pl.DataFrame(rows, schema=ERROR_SCHEMA)


PARAMETER_SCHEMA: dict[str, pl.DataType] = {
    "test": pl.String(),
    "alpha_kw_per_s2": pl.Float64(),
    "peak_hrr_kw": pl.Float64(),
    "soot_yield_g_per_g": pl.Float64(),
    "co_yield_g_per_g": pl.Float64(),
    "co2_yield_g_per_g": pl.Float64(),
    "gas_delay_s": pl.Float64(),
}


def parameter_frame(fits: Sequence[FireParameters]) -> pl.DataFrame:
    rows = [{k: getattr(f, k) for k in PARAMETER_SCHEMA} for f in fits]
    return pl.DataFrame(rows, schema=PARAMETER_SCHEMA)


# A fitted value within this share of a bound stopped at the bound, not at what the data says.
AT_BOUND_SHARE = 0.01


def _span(
    values: list[float | None], name: str, bounds: tuple[float, float] | None = None
) -> tuple[float, float]:
    """The range of the fitted values, leaving out fits that stopped at a bound when others
    did not (a bound is an assumption, not a measurement)."""
    present = [v for v in values if v is not None]
    if not present:
        raise ValueError(f"no test gave a fitted {name}")
    if bounds is not None:
        lo, hi = bounds
        inside = [v for v in present if lo * (1 + AT_BOUND_SHARE) < v < hi * (1 - AT_BOUND_SHARE)]
        present = inside or present
    return (_round(min(present)), _round(max(present)))


def _round(value: float) -> float:
    """Four significant digits: the JSON records a fit, not the optimiser's last bits."""
    return float(f"{value:.4g}")


def calibrated_ranges(
    fits: Sequence[FireParameters], data_folder: str, fitted_on: date
) -> CalibratedRanges:
    if not fits:
        raise ValueError("no fitted tests to take ranges from")
    return CalibratedRanges(
        alpha_kw_per_s2=_span([f.alpha_kw_per_s2 for f in fits], "alpha", ALPHA_BOUNDS_KW_PER_S2),
        peak_hrr_kw=_span([f.peak_hrr_kw for f in fits], "peak HRR", PEAK_HRR_BOUNDS_KW),
        soot_yield_g_per_g=_span(
            [f.soot_yield_g_per_g for f in fits], "soot yield", SOOT_YIELD_BOUNDS_G_PER_G
        ),
        co_yield_g_per_g=_span(
            [f.co_yield_g_per_g for f in fits], "CO yield", CO_YIELD_BOUNDS_G_PER_G
        ),
        co2_yield_g_per_g=_span(
            [f.co2_yield_g_per_g for f in fits], "CO2 yield", CO2_YIELD_BOUNDS_G_PER_G
        ),
        heat_of_combustion_kj_per_g=HEAT_OF_COMBUSTION_KJ_PER_G,
        data_folder=data_folder,
        tests=tuple(f.test for f in fits),
        fitted_on=fitted_on.isoformat(),
    )


@dataclass(frozen=True)
class Calibration:
    """Everything one calibration run produced."""

    fits: tuple[FireParameters, ...]
    curves: pl.DataFrame
    errors: pl.DataFrame
    ranges: CalibratedRanges
    screening: pl.DataFrame  # every measured channel: used or left out, and why

    def summary(self) -> dict[str, float | None]:
        """Median NRMSE per channel and median |time-to-4.3 %/m error| (s)."""
        out: dict[str, float | None] = {}
        for channel in FITTED_CHANNELS:
            values = self.errors.filter(pl.col("channel") == channel)["nrmse"]
            out[f"median_nrmse_{channel}"] = _median(values)
        out["median_abs_time_to_4_3_error_s"] = _median(
            self.errors["time_to_4_3_error_s"].drop_nulls().abs()
        )
        return out


def _median(values: pl.Series) -> float | None:
    return float(values.median()) if values.len() and values.null_count() < values.len() else None  # type: ignore[arg-type]


def calibrate(folder: Path, fitted_on: date | None = None) -> Calibration:
    """Read every test in a NIST folder, fit each, and collect curves, errors and ranges."""
    tests = nist.read_tests(folder)
    fits = tuple(fit_test(t) for t in tests)
    curve_frame = pl.concat([curves(t, f) for t, f in zip(tests, fits, strict=True)])
    ranges = calibrated_ranges(fits, folder.name, fitted_on or date.today())
    return Calibration(fits, curve_frame, errors(curve_frame), ranges, nist.screening_frame(tests))
