"""Fire physics against hand-derived values from the published correlations, and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firepipe.core.simulation import physics

small = settings(max_examples=50, deadline=None)
heights = st.floats(2.0, 10.0)
hrrs = st.floats(0.0, 5000.0)
radii = st.floats(0.01, 20.0)
growth = st.floats(1.01, 10.0)  # a factor that makes the second draw strictly larger


@pytest.mark.parametrize(
    ("alpha", "growth_time_s"),
    [
        (physics.ALPHA_SLOW_KW_PER_S2, 600.0),
        (physics.ALPHA_MEDIUM_KW_PER_S2, 300.0),
        (physics.ALPHA_FAST_KW_PER_S2, 150.0),
        (physics.ALPHA_ULTRA_FAST_KW_PER_S2, 75.0),
    ],
)
def test_alpha_reaches_1055_kw_at_the_nfpa_growth_time(alpha, growth_time_s):
    # NFPA 72 defines the classes by the time to reach 1055 kW (1000 Btu/s).
    assert alpha == pytest.approx(1055.0 / growth_time_s**2, rel=1e-3)


def test_t_squared_hrr_by_hand():
    hrr = physics.t_squared_hrr_kw([-5.0, 0.0, 10.0, 50.0, 100.0], 0.0469, 300.0)
    # 0.0469 * 10^2 = 4.69; 0.0469 * 50^2 = 117.25; 0.0469 * 100^2 = 469 -> capped at 300.
    np.testing.assert_allclose(hrr, [0.0, 0.0, 4.69, 117.25, 300.0])


@small
@given(
    alpha=st.floats(1e-4, 1.0),
    peak=st.floats(1.0, 5000.0),
    times=st.lists(st.floats(-1000.0, 2000.0), min_size=2, max_size=30),
)
def test_hrr_zero_before_ignition_and_non_decreasing_until_peak(alpha, peak, times):
    t = np.sort(np.array(times))
    hrr = physics.t_squared_hrr_kw(t, alpha, peak)
    assert np.all(hrr[t <= 0.0] == 0.0)
    assert np.all(np.diff(hrr) >= 0.0)
    assert np.all(hrr <= peak)
    expected = [min(alpha * max(x, 0.0) ** 2, peak) for x in t]
    np.testing.assert_allclose(hrr, expected, rtol=1e-12, atol=1e-12)


def test_alpert_temperature_by_hand():
    q, h = 1000.0, 3.0  # 1000^(2/3) = 100
    near, far = physics.ceiling_jet_temperature_rise_c(q, h, [0.3, 5.0])  # r/H = 0.1, 1.67
    assert near == pytest.approx(16.9 * 100.0 / 3.0 ** (5.0 / 3.0))  # ~270.8 degC
    assert far == pytest.approx(5.38 * (1000.0 / 5.0) ** (2.0 / 3.0) / 3.0)  # ~61.3 degC


def test_alpert_velocity_by_hand():
    q, h = 1000.0, 3.0  # 1000^(1/3) = 10
    near, far = physics.ceiling_jet_velocity_m_per_s(q, h, [0.3, 5.0])  # r/H = 0.1, 1.67
    assert near == pytest.approx(0.96 * (1000.0 / 3.0) ** (1.0 / 3.0))  # ~6.66 m/s
    assert far == pytest.approx(0.195 * 10.0 * math.sqrt(3.0) / 5.0 ** (5.0 / 6.0))  # ~0.88


def test_turning_points_differ_for_temperature_and_velocity():
    # r/H = 0.16 is past the velocity turning point (0.15) but not the temperature one (0.18).
    q, h, r = 500.0, 2.5, 0.4
    temperature = physics.ceiling_jet_temperature_rise_c(q, h, r)
    velocity = physics.ceiling_jet_velocity_m_per_s(q, h, r)
    assert temperature == pytest.approx(16.9 * q ** (2 / 3) / h ** (5 / 3))
    assert velocity == pytest.approx(0.195 * q ** (1 / 3) * h**0.5 / r ** (5 / 6))


def test_correlations_nearly_continuous_at_their_turning_points():
    q, h = 800.0, 3.0
    t_in, t_out = physics.ceiling_jet_temperature_rise_c(q, h, [0.179 * h, 0.181 * h])
    v_in, v_out = physics.ceiling_jet_velocity_m_per_s(q, h, [0.149 * h, 0.151 * h])
    assert t_out == pytest.approx(t_in, rel=0.02)
    assert v_out == pytest.approx(v_in, rel=0.02)


def test_no_heat_means_no_ceiling_jet():
    assert physics.ceiling_jet_temperature_rise_c([0.0, -10.0], 3.0, 2.0).tolist() == [0.0, 0.0]
    assert physics.ceiling_jet_velocity_m_per_s([0.0, -10.0], 3.0, 2.0).tolist() == [0.0, 0.0]


@small
@given(q=hrrs, h=heights, r=radii, q_factor=growth, r_factor=growth)
def test_ceiling_jet_increases_with_heat_and_decreases_with_radius(q, h, r, q_factor, r_factor):
    for jet in (physics.ceiling_jet_temperature_rise_c, physics.ceiling_jet_velocity_m_per_s):
        assert jet(q * q_factor + 1.0, h, r) > jet(q, h, r)
        assert jet(q, h, r * r_factor) <= jet(q, h, r)
        if q >= 1e-3 and r / h > 0.18:  # past both turning points, for any real fire (>= 1 W)
            assert jet(q, h, r * r_factor) < jet(q, h, r)


def test_first_order_step_response_is_exact():
    step = np.array([0.0] + [1.0] * 20)
    for tau, dt in [(10.0, 1.0), (3.0, 0.5)]:
        out = physics.first_order_response(step, tau, dt_s=dt)
        expected = [1.0 - math.exp(-k * dt / tau) for k in range(21)]
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_first_order_time_constant_per_device():
    signal = np.tile([0.0] + [10.0] * 5, (2, 1))
    out = physics.first_order_response(signal, np.array([[2.0], [20.0]]))
    np.testing.assert_allclose(out[0, 1], 10.0 * (1.0 - math.exp(-1.0 / 2.0)))
    np.testing.assert_allclose(out[1, 1], 10.0 * (1.0 - math.exp(-1.0 / 20.0)))


def test_first_order_time_constant_varying_in_time():
    # Step k integrates over (k-1, k] with that step's time constant tau[k].
    out = physics.first_order_response(np.array([0.0, 1.0, 1.0]), np.array([1.0, 2.0, 4.0]))
    y1 = 1.0 - math.exp(-1.0 / 2.0)
    y2 = 1.0 + (y1 - 1.0) * math.exp(-1.0 / 4.0)
    np.testing.assert_allclose(out, [0.0, y1, y2], rtol=1e-12)


signals = st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40)
taus = st.floats(0.01, 500.0)


@small
@given(x=signals, tau=taus)
def test_first_order_stays_within_the_input_range(x, tau):
    out = physics.first_order_response(np.array(x), tau)
    assert np.all(out >= min(x) - 1e-9)
    assert np.all(out <= max(x) + 1e-9)


@small
@given(start=st.floats(-1e3, 1e3), level=st.floats(-1e3, 1e3), tau=taus, n=st.integers(2, 60))
def test_first_order_converges_toward_a_constant_input(start, level, tau, n):
    out = physics.first_order_response(np.array([start] + [level] * n), tau)
    gap = np.abs(out - level)
    assert np.all(np.diff(gap) <= 1e-9)
    assert gap[-1] <= abs(start - level) * math.exp(-n / tau) + 1e-9


@small
@given(x=signals, tau=taus)
def test_first_order_monotone_in_monotone_out(x, tau):
    rising = physics.first_order_response(np.sort(x), tau)
    falling = physics.first_order_response(np.sort(x)[::-1].copy(), tau)
    assert np.all(np.diff(rising) >= -1e-9)
    assert np.all(np.diff(falling) <= 1e-9)


def test_detector_time_constant():
    tau = physics.detector_time_constant_s(30.0, [4.0, 0.0])
    # RTI / sqrt(u): 30 / 2 = 15 s; still air is floored at 0.05 m/s.
    np.testing.assert_allclose(tau, [15.0, 30.0 / math.sqrt(0.05)])


def test_product_mass_fraction_from_an_energy_balance():
    # Burn 1 g of fuel (20 kJ/g, 70 % convective) into 2 kg of air (cp 1.005 kJ/kg/K).
    excess_k = 0.7 * 20.0 / (2.0 * 1.005)
    soot_mass_fraction = 0.05 * 1.0 / 2000.0  # 0.05 g/g soot in 2000 g of air
    assert physics.product_mass_fraction_per_k(0.05, 20.0) == pytest.approx(
        soot_mass_fraction / excess_k
    )


def test_smoke_concentration_uses_air_density():
    # A mass fraction of 1e-4 in air of 1.204 kg/m3 is 0.1204 g/m3.
    assert physics.smoke_concentration_g_per_m3(1e-4) == pytest.approx(0.1204)


def test_obscuration_by_hand():
    assert physics.obscuration_pct_per_m(0.1) == pytest.approx(100.0 * (1.0 - math.exp(-0.87)))
    assert physics.obscuration_pct_per_m(0.0) == 0.0


concentrations = st.floats(0.0, 2.0)  # beyond ~4 g/m3 float64 rounds 1 - exp(-8.7 c) to 1


@small
@given(c=concentrations, dc=st.floats(1e-3, 1.0))
def test_obscuration_bounded_increasing_and_beer_lambert(c, dc):
    low, high = physics.obscuration_pct_per_m([c, c + dc])
    assert 0.0 <= low < high < 100.0
    # Transmittance over 1 m multiplies: T(2c) = T(c)^2.
    double = physics.obscuration_pct_per_m(2.0 * c)
    assert 1.0 - double / 100.0 == pytest.approx((1.0 - low / 100.0) ** 2, abs=1e-12)


def test_mole_fraction_by_hand():
    # 1 g of CO per kg of air: (1 / 28.01) mol CO in (1000 / 28.97) mol air.
    expected_ppm = 1e6 * (1.0 / 28.01) / (1000.0 / 28.97)
    assert physics.mole_fraction_ppm(1e-3, physics.CO_MOLAR_MASS_G_PER_MOL) == pytest.approx(
        expected_ppm
    )


@small
@given(
    x=st.floats(0.0, 0.1),
    y=st.floats(0.0, 0.1),
    a=st.floats(0.0, 5.0),
    molar_mass=st.floats(1.0, 200.0),
)
def test_mole_fraction_is_linear_in_mass_fraction(x, y, a, molar_mass):
    def ppm(m):
        return float(physics.mole_fraction_ppm(m, molar_mass))

    assert ppm(a * x + y) == pytest.approx(a * ppm(x) + ppm(y), rel=1e-9, abs=1e-9)
    assert ppm(0.0) == 0.0
