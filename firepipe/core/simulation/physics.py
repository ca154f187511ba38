"""Fire physics as vectorised numpy functions: heat release, ceiling jet, detector response.

Arrays are shaped (devices, seconds) or broadcast to it. Every constant names its unit and
where it comes from.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

# t-squared fire growth coefficients (NFPA 72 Annex B; NFPA 204): Q = alpha * t^2.
ALPHA_SLOW_KW_PER_S2 = 0.00293
ALPHA_MEDIUM_KW_PER_S2 = 0.01172
ALPHA_FAST_KW_PER_S2 = 0.0469
ALPHA_ULTRA_FAST_KW_PER_S2 = 0.1876

# Alpert's ceiling-jet correlations (Alpert 1972, Fire Technology 8:181; SFPE Handbook,
# "Ceiling jet flows"): the plume-impingement region ends at r/H = 0.18 for temperature
# and r/H = 0.15 for velocity.
ALPERT_TEMPERATURE_TURNING_RATIO = 0.18
ALPERT_VELOCITY_TURNING_RATIO = 0.15

# Mass-specific extinction coefficient of flaming-fire smoke, 8.7 m^2/g
# (Mulholland and Croarkin 2000, Fire and Materials 24:227).
SMOKE_MASS_EXTINCTION_M2_PER_G = 8.7

# Air near 20 degC and 1 atm (any thermodynamics table).
AIR_DENSITY_KG_PER_M3 = 1.204
AIR_SPECIFIC_HEAT_KJ_PER_KG_K = 1.005
AIR_MOLAR_MASS_G_PER_MOL = 28.97
CO_MOLAR_MASS_G_PER_MOL = 28.01
CO2_MOLAR_MASS_G_PER_MOL = 44.01
H2_MOLAR_MASS_G_PER_MOL = 2.016
# Total VOC is reported as isobutylene, the usual calibration gas of VOC sensors.
ISOBUTYLENE_MOLAR_MASS_G_PER_MOL = 56.11

# Still indoor air moves at a few cm/s (natural convection), so a sensor's flow-driven lag
# never sees a slower gas: the floor of every velocity-based time constant.
QUIESCENT_AIR_VELOCITY_M_PER_S = 0.05

# Share of the heat release carried by the plume as convection; the rest radiates
# (SFPE Handbook, "Fire plumes": 0.6-0.8 for most fuels).
CONVECTIVE_HEAT_FRACTION = 0.7


def t_squared_hrr_kw(
    seconds_since_ignition: ArrayLike, alpha_kw_per_s2: ArrayLike, peak_hrr_kw: ArrayLike
) -> F64:
    """Heat release rate of a t-squared fire, zero before ignition, capped at its peak."""
    t = np.maximum(np.asarray(seconds_since_ignition, dtype=np.float64), 0.0)
    hrr = np.minimum(np.asarray(alpha_kw_per_s2) * t * t, np.asarray(peak_hrr_kw))
    return np.asarray(hrr, dtype=np.float64)


def _jet_inputs(
    hrr_kw: ArrayLike, ceiling_height_m: ArrayLike, radial_distance_m: ArrayLike
) -> tuple[F64, F64, F64]:
    """Heat release (no negative fires), height, and a radius kept off the plume axis."""
    q = np.maximum(np.asarray(hrr_kw, dtype=np.float64), 0.0)
    h = np.asarray(ceiling_height_m, dtype=np.float64)
    r = np.maximum(np.asarray(radial_distance_m, dtype=np.float64), 1e-6)
    return q, h, r


def ceiling_jet_temperature_rise_c(
    hrr_kw: ArrayLike, ceiling_height_m: ArrayLike, radial_distance_m: ArrayLike
) -> F64:
    """Alpert's steady ceiling-jet excess temperature (degC) at a radius under the ceiling."""
    q, h, r = _jet_inputs(hrr_kw, ceiling_height_m, radial_distance_m)
    near = 16.9 * q ** (2.0 / 3.0) / h ** (5.0 / 3.0)
    far = 5.38 * (q / r) ** (2.0 / 3.0) / h
    return np.where(r / h <= ALPERT_TEMPERATURE_TURNING_RATIO, near, far)


def ceiling_jet_velocity_m_per_s(
    hrr_kw: ArrayLike, ceiling_height_m: ArrayLike, radial_distance_m: ArrayLike
) -> F64:
    """Alpert's steady ceiling-jet velocity (m/s) at a radius under the ceiling."""
    q, h, r = _jet_inputs(hrr_kw, ceiling_height_m, radial_distance_m)
    near = 0.96 * (q / h) ** (1.0 / 3.0)
    far = 0.195 * q ** (1.0 / 3.0) * h**0.5 / r ** (5.0 / 6.0)
    return np.where(r / h <= ALPERT_VELOCITY_TURNING_RATIO, near, far)


def first_order_response(signal: F64, time_constant_s: ArrayLike, dt_s: float = 1.0) -> F64:
    """A sensing element that relaxes toward `signal` with a (possibly varying) time constant.

    Uses the exact step of dy/dt = (x - y) / tau for x held over each step, so it is stable
    for any tau. A sensor at rest reads the signal's first value.
    """
    tau = np.broadcast_to(np.asarray(time_constant_s, dtype=np.float64), signal.shape)
    keep = np.exp(-dt_s / np.maximum(tau, 1e-9))
    out = np.empty_like(signal)
    out[..., 0] = signal[..., 0]
    for k in range(1, signal.shape[-1]):
        out[..., k] = signal[..., k] + (out[..., k - 1] - signal[..., k]) * keep[..., k]
    return out


def detector_time_constant_s(rti_m_s_half: ArrayLike, gas_velocity_m_per_s: ArrayLike) -> F64:
    """Thermal time constant of an element with a response time index: tau = RTI / sqrt(u)."""
    u = np.maximum(
        np.asarray(gas_velocity_m_per_s, dtype=np.float64), QUIESCENT_AIR_VELOCITY_M_PER_S
    )
    return np.asarray(rti_m_s_half, dtype=np.float64) / np.sqrt(u)


def product_mass_fraction_per_k(
    yield_g_per_g: ArrayLike, heat_of_combustion_kj_per_g: ArrayLike
) -> F64:
    """Mass fraction of a combustion product in the plume per kelvin of excess temperature.

    The plume carries the convective heat and the products of the same burnt fuel, so
    Y / dT = y * cp / (dHc * chi_conv): smoke and gases at the detector follow the ceiling
    jet's temperature rise (Heskestad and Delichatsios 1977 observed D / dT roughly constant).
    """
    heat_kj_per_kg = 1000.0 * np.asarray(heat_of_combustion_kj_per_g, dtype=np.float64)
    return (
        np.asarray(yield_g_per_g, dtype=np.float64)
        * AIR_SPECIFIC_HEAT_KJ_PER_KG_K
        / (heat_kj_per_kg * CONVECTIVE_HEAT_FRACTION)
    )


def smoke_concentration_g_per_m3(smoke_mass_fraction: ArrayLike) -> F64:
    return 1000.0 * AIR_DENSITY_KG_PER_M3 * np.asarray(smoke_mass_fraction, dtype=np.float64)


def obscuration_pct_per_m(smoke_g_per_m3: ArrayLike) -> F64:
    """Light obscuration over one metre of smoke at a mass concentration (Beer-Lambert)."""
    extinction_per_m = SMOKE_MASS_EXTINCTION_M2_PER_G * np.asarray(smoke_g_per_m3)
    return 100.0 * (1.0 - np.exp(-extinction_per_m))


def mole_fraction_ppm(mass_fraction: ArrayLike, molar_mass_g_per_mol: float) -> F64:
    """Volume fraction (ppm) of a trace gas in air at a mass fraction."""
    mass = np.asarray(mass_fraction, dtype=np.float64)
    return 1e6 * mass * AIR_MOLAR_MASS_G_PER_MOL / molar_mass_g_per_mol
