"""The alternate units a source may report a channel in, and their conversion to the canonical one.

Every canonical channel (firepipe.core.readings.CHANNELS) names its unit. A landed file may
carry a channel in another common unit instead, under a column that names that unit
(`temperature_f`, `smoke_obscuration_pct_per_ft`, ...). Bronze keeps the column as it arrived;
silver converts it with `to_canonical`. A source reporting both the canonical column and an
alias of it, or two aliases of one channel, is ambiguous (`ambiguous_aliases`).

Obscuration per length is not linear in the length: optical density D (per metre, base 10)
is, since transmission over L metres is 10^(-D L) (Beer-Lambert). NIST's optical densities and
a %/ft obscuration therefore convert through the same function, `obscuration_pct_per_m`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl

from firepipe.core.readings import CHANNEL_NAMES

# One international foot, exactly (International Yard and Pound Agreement, 1959).
M_PER_FT = 0.3048
# Fahrenheit to Celsius: C = (F - 32) * 5 / 9 (NIST SP 811, B.9); kelvin: C = K - 273.15.
FAHRENHEIT_OFFSET_DEGF = 32.0
DEGC_PER_DEGF = 5.0 / 9.0
KELVIN_AT_ZERO_DEGC = 273.15
# Mixing ratios by volume: 1 % = 10,000 ppm; 1 ppm = 1,000 ppb (NIST SP 811, 7.10.3).
PPM_PER_VOLUME_PCT = 1e4
PPB_PER_PPM = 1e3
# Mass concentration: 1 mg/m3 = 1,000 ug/m3 (SI prefixes).
UGM3_PER_MGM3 = 1e3

Values = TypeVar("Values", pl.Expr, npt.NDArray[np.float64])


def obscuration_pct_per_m(optical_density_per_m: Values) -> Values:
    """Obscuration over one metre (%) of smoke with optical density D (1/m, base 10):
    100 (1 - 10^-D). Works on numpy arrays (NIST replays) and polars expressions (silver)."""
    return 100.0 * (1.0 - 10.0 ** (-optical_density_per_m))


def optical_density_per_m(
    obscuration_pct_per_m: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The inverse of `obscuration_pct_per_m`: -log10(1 - O/100) for O %/m (100 % and above:
    infinite or NaN, as for %/ft)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(-np.log10(1.0 - obscuration_pct_per_m / 100.0), dtype=np.float64)


def optical_density_per_m_from_pct_per_ft(obscuration_pct_per_ft: Values) -> Values:
    """Optical density (1/m, base 10) of smoke that obscures O %/ft: -log10(1 - O/100) / 0.3048.
    100 %/ft is infinite density; above 100 % it is NaN (no such smoke), which silver's range
    rule quarantines."""
    transmission_per_ft = 1.0 - obscuration_pct_per_ft / 100.0
    if isinstance(transmission_per_ft, pl.Expr):
        return -transmission_per_ft.log(10.0) / M_PER_FT
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log10(transmission_per_ft) / M_PER_FT


@dataclass(frozen=True)
class Alias:
    """A column reporting `channel` in another unit, and the conversion to the canonical unit."""

    column: str
    channel: str
    unit: str
    to_canonical: Callable[[pl.Expr], pl.Expr]


ALIASES: tuple[Alias, ...] = (
    Alias(
        "temperature_f",
        "temperature_c",
        "degF",
        lambda f: (f - FAHRENHEIT_OFFSET_DEGF) * DEGC_PER_DEGF,
    ),
    Alias("temperature_k", "temperature_c", "K", lambda k: k - KELVIN_AT_ZERO_DEGC),
    Alias(
        "smoke_obscuration_pct_per_ft",
        "smoke_obscuration_pct_per_m",
        "%/ft",
        lambda o: obscuration_pct_per_m(optical_density_per_m_from_pct_per_ft(o)),
    ),
    Alias("pm25_mgm3", "pm25_ugm3", "mg/m3", lambda x: x * UGM3_PER_MGM3),
    Alias("co_ppb", "co_ppm", "ppb", lambda x: x / PPB_PER_PPM),
    Alias("co2_pct", "co2_ppm", "volume %", lambda x: x * PPM_PER_VOLUME_PCT),
    Alias("voc_ppm", "voc_ppb", "ppm", lambda x: x * PPB_PER_PPM),
    Alias("h2_ppb", "h2_ppm", "ppb", lambda x: x / PPB_PER_PPM),
)
ALIAS_BY_COLUMN: dict[str, Alias] = {a.column: a for a in ALIASES}
ALIAS_COLUMNS: tuple[str, ...] = tuple(ALIAS_BY_COLUMN)


def ambiguous_aliases(columns: Collection[str]) -> dict[str, list[str]]:
    """Channels that `columns` report more than once (canonical and alias, or two aliases)."""
    reported: dict[str, list[str]] = {}
    for name in columns:
        channel = ALIAS_BY_COLUMN[name].channel if name in ALIAS_BY_COLUMN else name
        if channel in CHANNEL_NAMES:
            reported.setdefault(channel, []).append(name)
    return {channel: names for channel, names in reported.items() if len(names) > 1}


def to_canonical(columns: Collection[str]) -> list[pl.Expr]:
    """Expressions giving every canonical channel that `columns` carry, directly or as an alias,
    in its canonical unit (Float32); where a row has both, the canonical value is kept (silver
    quarantines such rows as ambiguous before this matters)."""
    exprs = []
    for channel in CHANNEL_NAMES:
        sources = [pl.col(channel)] if channel in columns else []
        sources += [
            a.to_canonical(pl.col(a.column).cast(pl.Float64))
            for a in ALIASES
            if a.channel == channel and a.column in columns
        ]
        if sources:
            exprs.append(pl.coalesce(sources).cast(pl.Float32).alias(channel))
    return exprs
