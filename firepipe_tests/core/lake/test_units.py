"""Alternate units against hand computations."""

import math

import numpy as np
import polars as pl
import pytest

from firepipe.core.lake import units
from firepipe.core.readings import CHANNEL_NAMES


def convert(column: str, values: list[float]) -> list[float]:
    frame = pl.DataFrame({column: values}, schema={column: pl.Float32})
    return frame.select(units.to_canonical(frame.columns)).to_series().to_list()


def test_temperatures() -> None:
    assert convert("temperature_f", [32.0, 212.0, -40.0, 98.6]) == pytest.approx(
        [0.0, 100.0, -40.0, 37.0], abs=1e-4
    )
    assert convert("temperature_k", [273.15, 293.15]) == pytest.approx([0.0, 20.0], abs=1e-4)


def test_obscuration_per_foot_is_not_scaled_linearly() -> None:
    # 10 %/ft lets 0.9 through per foot; a metre is 1/0.3048 = 3.2808 ft, so 0.9^3.2808 =
    # 0.729 * 0.9^0.2808 = 0.729 * 0.97085 = 0.70775 gets through: 29.22 %/m, not 32.8.
    assert convert("smoke_obscuration_pct_per_ft", [10.0]) == pytest.approx([29.2253], abs=1e-3)
    # 1 %/ft: 1 - 0.99^3.2808 = 1 - exp(3.2808 * ln 0.99) = 3.2436 %/m.
    assert convert("smoke_obscuration_pct_per_ft", [1.0]) == pytest.approx([3.2436], abs=1e-3)
    assert convert("smoke_obscuration_pct_per_ft", [0.0, 100.0]) == [0.0, 100.0]
    # Above 100 % no light is "more than blocked": NaN, which silver quarantines.
    assert math.isnan(convert("smoke_obscuration_pct_per_ft", [120.0])[0])


def test_optical_density_is_the_shared_path_for_nist_and_feet() -> None:
    # NIST reports optical density per metre: D = 1 lets 10 % through, D = 0.1 lets 79.43 %.
    assert units.obscuration_pct_per_m(np.array([0.0, 0.1, 1.0])) == pytest.approx(
        [0.0, 20.567, 90.0], abs=1e-3
    )
    density = units.optical_density_per_m_from_pct_per_ft(np.array([10.0]))
    # -log10(0.9) / 0.3048 = 0.045757 / 0.3048 = 0.15012 per metre.
    assert density == pytest.approx([0.15012], abs=1e-5)


def test_gas_and_particle_mixing_ratios() -> None:
    assert convert("co2_pct", [0.04, 0.1]) == pytest.approx([400.0, 1000.0], rel=1e-6)
    assert convert("co_ppb", [50_000.0]) == pytest.approx([50.0], rel=1e-6)
    assert convert("voc_ppm", [1.5]) == pytest.approx([1500.0], rel=1e-6)
    assert convert("h2_ppb", [2_000.0]) == pytest.approx([2.0], rel=1e-6)
    assert convert("pm25_mgm3", [0.035]) == pytest.approx([35.0], rel=1e-5)


def test_every_alias_names_a_channel_once() -> None:
    assert {a.channel for a in units.ALIASES} <= set(CHANNEL_NAMES)
    assert len(units.ALIAS_COLUMNS) == len(set(units.ALIAS_COLUMNS))
    assert not set(units.ALIAS_COLUMNS) & set(CHANNEL_NAMES)


def test_canonical_value_wins_and_absent_channels_are_not_invented() -> None:
    frame = pl.DataFrame(
        {"temperature_c": [20.0, None], "temperature_f": [50.0, 50.0], "co_ppm": [1.0, 2.0]}
    )
    out = frame.select(units.to_canonical(frame.columns))
    assert out.columns == ["temperature_c", "co_ppm"]
    assert out["temperature_c"].to_list() == pytest.approx([20.0, 10.0])
    assert out.schema["temperature_c"] == pl.Float32


def test_ambiguous_aliases() -> None:
    assert units.ambiguous_aliases(["device_id", "temperature_f", "co_ppm"]) == {}
    assert units.ambiguous_aliases(["temperature_c", "temperature_f", "co_ppb", "co_ppm"]) == {
        "temperature_c": ["temperature_c", "temperature_f"],
        "co_ppm": ["co_ppb", "co_ppm"],
    }
    assert units.ambiguous_aliases(["temperature_f", "temperature_k"]) == {
        "temperature_c": ["temperature_f", "temperature_k"]
    }


def test_optical_density_inverts_obscuration():
    import numpy as np

    from firepipe.core.lake.units import obscuration_pct_per_m, optical_density_per_m

    density = np.array([0.0, 0.02, 0.5, 2.0])
    np.testing.assert_allclose(optical_density_per_m(obscuration_pct_per_m(density)), density)
    assert np.isinf(optical_density_per_m(np.array([100.0])))[0]
