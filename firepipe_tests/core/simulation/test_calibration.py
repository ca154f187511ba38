"""Calibration: a fit recovers known parameters, and the committed ranges match a refit."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from firepipe.core.realdata import nist
from firepipe.core.simulation import calibrated
from firepipe.core.simulation import calibration as cal
from firepipe_tests.conftest import nist_data_dir

NIST_DIR = Path(nist_data_dir())

KNOWN = cal.FireParameters(
    test="SYN",
    alpha_kw_per_s2=0.02,
    peak_hrr_kw=300.0,
    soot_yield_g_per_g=0.03,
    co_yield_g_per_g=0.02,
    co2_yield_g_per_g=1.4,
    gas_delay_s=15.0,
    stations=(
        cal.StationFit("A", cal.NEAREST_STATION_RADIUS_M, 10.0),
        cal.StationFit("B", 3.0, 30.0),
        cal.StationFit("C", 6.0, 50.0),
    ),
)
AMBIENT = {
    "temperature_c": 21.0,
    "smoke_obscuration_pct_per_m": 0.0,
    "co_ppm": 0.0,
    "co2_ppm": 450.0,
}


def write_synthetic_test(folder: Path, params: cal.FireParameters) -> Path:
    """A NIST-format CSV whose curves are the model's own for `params` (2 s steps)."""
    t = np.arange(0.0, 240.0, 2.0)
    columns: dict[str, np.ndarray] = {"TIME": t}
    for st in params.stations:
        sim = {
            ch: cal.simulated_curve(params, st.station, ch, t, AMBIENT[ch])
            for ch in cal.FITTED_CHANNELS
        }
        columns[f"TC{st.station}_1"] = sim["temperature_c"]
        columns[f"SM{st.station}_1"] = -np.log10(1.0 - sim["smoke_obscuration_pct_per_m"] / 100)
        columns[f"GAS{st.station}_1"] = sim["co_ppm"] / 1e4
        columns[f"GAS{st.station}_3"] = sim["co2_ppm"] / 1e4
        columns[f"GAS{st.station}_5"] = np.full_like(t, 20.9)
    path = folder / f"NIST_Smoke_Alarms_{params.test}.csv"
    pl.DataFrame(columns).write_csv(path, float_scientific=True, float_precision=8)
    return path


def test_fit_recovers_the_parameters_of_synthetic_curves(tmp_path: Path) -> None:
    fit = cal.fit_test(nist.read_test(write_synthetic_test(tmp_path, KNOWN)))
    assert fit.alpha_kw_per_s2 == pytest.approx(KNOWN.alpha_kw_per_s2, rel=0.02)
    assert fit.peak_hrr_kw == pytest.approx(KNOWN.peak_hrr_kw, rel=0.02)
    assert fit.soot_yield_g_per_g == pytest.approx(KNOWN.soot_yield_g_per_g, rel=0.02)
    assert fit.co_yield_g_per_g == pytest.approx(KNOWN.co_yield_g_per_g, rel=0.02)
    assert fit.co2_yield_g_per_g == pytest.approx(KNOWN.co2_yield_g_per_g, rel=0.02)
    assert fit.gas_delay_s == pytest.approx(KNOWN.gas_delay_s, abs=1.0)
    for known in KNOWN.stations:
        got = fit.station(known.station)
        assert got.radial_distance_m == pytest.approx(known.radial_distance_m, rel=0.02)
        assert got.delay_s == pytest.approx(known.delay_s, abs=1.0)


def test_a_fire_that_never_peaks_records_the_largest_heat_release_it_showed(
    tmp_path: Path,
) -> None:
    growing = cal.FireParameters(**{**KNOWN.__dict__, "test": "GROW", "peak_hrr_kw": 2500.0})
    fit = cal.fit_test(nist.read_test(write_synthetic_test(tmp_path, growing)))
    # Q at the last sample (238 s) of the earliest station (10 s delay): 0.02 * 228^2 kW.
    assert fit.peak_hrr_kw == pytest.approx(0.02 * 228.0**2, rel=0.03)


def test_errors_score_nrmse_and_time_to_threshold() -> None:
    t = np.arange(0.0, 100.0, 2.0)
    measured = np.clip(t - 20.0, 0.0, None)  # %/m: reaches 4.3 at 26 s (first sample >= 4.3)
    curves = pl.DataFrame(
        {
            "test": "X",
            "station": "A",
            "channel": ["smoke_obscuration_pct_per_m"] * t.size + ["temperature_c"] * t.size,
            "seconds_since_ignition": np.concatenate([t, t]),
            "measured": np.concatenate([measured, 20.0 + t]),
            "simulated": np.concatenate([np.clip(t - 30.0, 0.0, None), 22.0 + t]),
        },
        schema=cal.CURVE_SCHEMA,
    )
    errors = cal.errors(curves)
    smoke = errors.filter(pl.col("channel") == "smoke_obscuration_pct_per_m").row(0, named=True)
    assert smoke["measured_time_to_4_3_s"] == 26.0
    assert smoke["simulated_time_to_4_3_s"] == 36.0
    assert smoke["time_to_4_3_error_s"] == 10.0
    temp = errors.filter(pl.col("channel") == "temperature_c").row(0, named=True)
    assert temp["rmse"] == pytest.approx(2.0)
    assert temp["nrmse"] == pytest.approx(2.0 / 98.0)
    assert temp["time_to_4_3_error_s"] is None


def test_time_to_threshold_ignores_an_offset_meter_and_fires_that_stay_below() -> None:
    t = np.arange(0.0, 10.0)
    # A dirty meter reads 5 %/m from the start: only the fire's own 4.3 %/m counts.
    dirty = 100.0 - (100.0 - 5.0) * (100.0 - np.where(t >= 6, 10.0, 0.0)) / 100.0
    assert cal.time_to_threshold_s(t, dirty) == 6.0
    assert cal.time_to_threshold_s(t, np.full(10, 3.0)) is None


def test_ranges_round_trip_and_bad_json_is_refused(tmp_path: Path) -> None:
    fits = [KNOWN, cal.FireParameters(**{**KNOWN.__dict__, "alpha_kw_per_s2": 0.05})]
    ranges = cal.calibrated_ranges(fits, "synthetic", date(2026, 1, 2))
    assert ranges.alpha_kw_per_s2 == (0.02, 0.05)
    assert ranges.soot_yield_g_per_g == (0.03, 0.03)
    path = tmp_path / "ranges.json"
    calibrated.write_calibrated_ranges(ranges, path)
    assert calibrated.load_calibrated_ranges(path) == ranges
    raw = json.loads(path.read_text())
    raw["peak_hrr_kw"] = [500.0, 100.0]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"peak_hrr_kw: low 500\.0 is above high 100\.0"):
        calibrated.load_calibrated_ranges(path)
    del raw["peak_hrr_kw"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="need exactly"):
        calibrated.load_calibrated_ranges(path)


def test_committed_ranges_match_a_refit_on_the_shared_data() -> None:
    assert NIST_DIR.is_dir(), f"the NIST data is missing at {NIST_DIR}"
    committed = calibrated.load_calibrated_ranges()
    refit = cal.calibrate(NIST_DIR).ranges
    for name in calibrated.RANGE_FIELDS:
        # SDC10's t-squared fit has two minima of alpha (0.25 and 0.20 kW/s^2) that different
        # BLAS kernels land in (seen: the committed 0.2503, and 0.2033 on an AMD EPYC with
        # OpenBLAS's SkylakeX kernel, at any tolerance); that bound is held to the same valley.
        rel = 0.25 if name == "alpha_kw_per_s2" else 1e-3
        assert getattr(refit, name) == pytest.approx(getattr(committed, name), rel=rel), name
    assert refit.tests == committed.tests
    assert refit.data_folder == committed.data_folder
    assert refit.heat_of_combustion_kj_per_g == committed.heat_of_combustion_kj_per_g
    for name in calibrated.RANGE_FIELDS:
        low, high = getattr(committed, name)
        assert 0.0 < low <= high


def test_real_fit_stays_close_to_the_measured_temperatures() -> None:
    result = cal.calibrate(NIST_DIR, fitted_on=date(2026, 1, 1))
    summary = result.summary()
    # The calibrated t-squared ceiling jet follows the ceiling thermocouples closely.
    assert summary["median_nrmse_temperature_c"] is not None
    assert summary["median_nrmse_temperature_c"] < 0.1
    assert set(result.errors["channel"]) == set(cal.FITTED_CHANNELS)
    assert result.ranges.fitted_on == "2026-01-01"


def test_ranges_leave_out_fits_stopped_at_a_bound():
    bounds = (0.1, 3.1)
    assert cal._span([0.9, 2.3, 3.1], "CO2 yield", bounds) == (0.9, 2.3)
    assert cal._span([0.1, 1.5], "CO2 yield", bounds) == (1.5, 1.5)
    # When every fit sits at a bound there is nothing better to report.
    assert cal._span([3.1, 3.1], "CO2 yield", bounds) == (3.1, 3.1)
