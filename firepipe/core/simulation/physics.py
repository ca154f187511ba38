"""Fire physics as vectorised array functions: heat release, ceiling jet, detector response.

Functions take numpy arrays (or anything numpy converts) and return numpy arrays; the ones the
simulator runs on every reading (`alpert_*_coefficient`, `first_order_response`) also take the
arrays of any array-API library (CuPy, PyTorch) and stay on its device. Every constant names its
unit and where it comes from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from array_api_compat import array_namespace
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
    """Heat release (no negative fires), height and radius as float64 arrays of one shape."""
    q = np.maximum(np.asarray(hrr_kw, dtype=np.float64), 0.0)
    h = np.asarray(ceiling_height_m, dtype=np.float64)
    r = np.asarray(radial_distance_m, dtype=np.float64)
    q, h, r = np.broadcast_arrays(q, h, r)
    return q, h, r


def alpert_temperature_coefficient(ceiling_height_m: Any, radial_distance_m: Any) -> Any:
    """Alpert's excess temperature per kW^(2/3) of heat release: dT = coefficient * Q^(2/3).

    Both branches of the correlation scale with Q^(2/3), so the geometry of a detector folds
    into one number and a time series needs a single power of Q.
    """
    xp = array_namespace(ceiling_height_m, radial_distance_m)
    h = ceiling_height_m
    r = xp.maximum(radial_distance_m, 1e-6)
    near = 16.9 / h ** (5.0 / 3.0)
    far = 5.38 / (r ** (2.0 / 3.0) * h)
    return xp.where(r / h <= ALPERT_TEMPERATURE_TURNING_RATIO, near, far)


def alpert_velocity_coefficient(ceiling_height_m: Any, radial_distance_m: Any) -> Any:
    """Alpert's ceiling-jet velocity per kW^(1/3): u = coefficient * Q^(1/3)."""
    xp = array_namespace(ceiling_height_m, radial_distance_m)
    h = ceiling_height_m
    r = xp.maximum(radial_distance_m, 1e-6)
    near = 0.96 / h ** (1.0 / 3.0)
    far = 0.195 * h**0.5 / r ** (5.0 / 6.0)
    return xp.where(r / h <= ALPERT_VELOCITY_TURNING_RATIO, near, far)


def ceiling_jet_temperature_rise_c(
    hrr_kw: ArrayLike, ceiling_height_m: ArrayLike, radial_distance_m: ArrayLike
) -> F64:
    """Alpert's steady ceiling-jet excess temperature (degC) at a radius under the ceiling."""
    q, h, r = _jet_inputs(hrr_kw, ceiling_height_m, radial_distance_m)
    return np.asarray(alpert_temperature_coefficient(h, r) * q ** (2.0 / 3.0), dtype=np.float64)


def ceiling_jet_velocity_m_per_s(
    hrr_kw: ArrayLike, ceiling_height_m: ArrayLike, radial_distance_m: ArrayLike
) -> F64:
    """Alpert's steady ceiling-jet velocity (m/s) at a radius under the ceiling."""
    q, h, r = _jet_inputs(hrr_kw, ceiling_height_m, radial_distance_m)
    return np.asarray(alpert_velocity_coefficient(h, r) * q ** (1.0 / 3.0), dtype=np.float64)


# The lag filter runs as a blocked scan: inside a block of this many steps the decay is a
# cumulative product, so the work is whole-array operations instead of a Python step per second.
SCAN_BLOCK_STEPS = 16


def first_order_response(
    signal: Any, time_constant_s: Any, dt_s: float = 1.0, *, axis: int = -1
) -> Any:
    """A sensing element that relaxes toward `signal` with a (possibly varying) time constant.

    Uses the exact step of dy/dt = (x - y) / tau for x held over each step, so it is stable for
    any tau: y[n] = a[n] * y[n-1] + (1 - a[n]) * x[n] with a = exp(-dt / tau). A sensor at rest
    reads the signal's first value. `axis` is the time axis; `time_constant_s` broadcasts
    against `signal` (a scalar, one per device, or one per reading). Time constants shorter than
    a fifth of a step respond within that step, which is what a sampled sensor sees anyway; the
    bound keeps the blocked cumulative product inside the float32 range.
    """
    xp = array_namespace(signal)
    x = xp.moveaxis(signal, axis, 0)
    tau = xp.asarray(time_constant_s, dtype=signal.dtype)
    tau = xp.moveaxis(xp.reshape(tau, (1,) * (signal.ndim - tau.ndim) + tuple(tau.shape)), axis, 0)
    steps, rest = x.shape[0], tuple(x.shape[1:])
    max_rate = 0.9 * math.log(float(xp.finfo(signal.dtype).max)) / SCAN_BLOCK_STEPS
    keep = xp.exp(-xp.minimum(dt_s / xp.maximum(tau, 1e-9), max_rate))
    pad = (-steps) % SCAN_BLOCK_STEPS
    if pad:  # padding steps hold the last value: they change nothing before them
        x = xp.concat([x, xp.broadcast_to(x[-1:, ...], (pad, *rest))], axis=0)
        if keep.shape[0] > 1:
            keep = xp.concat([keep, xp.ones((pad, *keep.shape[1:]), dtype=keep.dtype)], axis=0)
    blocks = x.shape[0] // SCAN_BLOCK_STEPS
    x = xp.reshape(x, (blocks, SCAN_BLOCK_STEPS, *rest))
    if keep.shape[0] > 1:
        keep = xp.reshape(keep, (blocks, SCAN_BLOCK_STEPS, *keep.shape[1:]))
    else:  # constant in time: every block decays the same way
        keep = xp.broadcast_to(xp.expand_dims(keep, axis=0), (1, SCAN_BLOCK_STEPS, *keep.shape[1:]))
    # Inside a block: the decay since the block began P, and the inputs it weighs S, so that
    # y[n] = P[n] * (y_before_block + S[n]).
    decay = _cumulative(keep, xp.multiply)
    weighted = _cumulative((1.0 - keep) * x / decay, xp.add)
    carried = []
    carry = x[0, 0, ...]
    for block in range(blocks):
        carried.append(carry)
        carry = decay[min(block, decay.shape[0] - 1), -1, ...] * (carry + weighted[block, -1, ...])
    out = decay * (xp.expand_dims(xp.stack(carried), axis=1) + weighted)
    out = xp.reshape(out, (blocks * SCAN_BLOCK_STEPS, *rest))[:steps, ...]
    return xp.moveaxis(out, 0, axis)


def _cumulative(values: Any, op: Any) -> Any:
    """Running `op` along axis 1, one whole-array step per position (short axes are fastest so)."""
    xp = array_namespace(values)
    running = [values[:, 0, ...]]
    for k in range(1, values.shape[1]):
        running.append(op(running[-1], values[:, k, ...]))
    return xp.stack(running, axis=1)


def detector_time_constant_s(rti_m_s_half: Any, gas_velocity_m_per_s: Any) -> Any:
    """Thermal time constant of an element with a response time index: tau = RTI / sqrt(u)."""
    xp, u = as_array(gas_velocity_m_per_s)
    return rti_m_s_half / xp.sqrt(xp.maximum(u, QUIESCENT_AIR_VELOCITY_M_PER_S))


def as_array(values: Any) -> tuple[Any, Any]:
    """The namespace of an array-API array and the array; anything else becomes float64 numpy."""
    try:
        return array_namespace(values), values
    except TypeError:
        return np, np.asarray(values, dtype=np.float64)


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
