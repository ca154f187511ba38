"""The scenario catalog: what the generator can stage in a room, and how likely each is.

A scenario is one source in a room. Every source has the same description, so the simulator runs
one vectorised model for all of them:

- heat: a heat release rate that grows as Q = peak * min((t / rise)^growth_power, 1) from its
  onset and stops after `duration_s`. A t-squared fire is growth_power 2 with
  rise = sqrt(peak / alpha); a smouldering or cooking source is a linear ramp (power 1).
- plume products: flaming fires carry soot and gases in their plume, so at the detector they
  follow the ceiling jet's temperature rise (yields in g per g of fuel burnt).
- room emissions: weak or cold sources (smouldering, cooking fumes, steam, dust, tobacco, a
  candle) spread through the room: emission rates in mg/s at full output, mixed into the room
  volume and removed by ventilation.
- an aerosol kind: how strongly the particles dim light (mass extinction) and how much of
  their mass is PM2.5, which is what makes steam and dust look different from smoke.

Families group scenarios for partitioning and hold-out splits: baseline, flaming, smouldering
and nuisance. Ranges are (low, high) and drawn uniformly per device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from firepipe.core.simulation import physics
from firepipe.core.simulation.calibrated import load_calibrated_ranges

Range = tuple[float, float]
NONE: Range = (0.0, 0.0)


@dataclass(frozen=True)
class Aerosol:
    name: str
    mass_extinction_m2_per_g: float
    pm25_mass_fraction: float


# Flaming soot: 8.7 m^2/g (Mulholland and Croarkin 2000, Fire and Materials 24:227); almost all
# sub-micron (SFPE Handbook, "Smoke characterization"), so all of it counts as PM2.5.
SOOT = Aerosol("soot", physics.SMOKE_MASS_EXTINCTION_M2_PER_G, 1.0)
# Smouldering smoke: larger, lighter droplets of pyrolysate, 4.4 m^2/g (Mulholland, SFPE
# Handbook, "Smoke production and properties", smouldering/pyrolysis value); mostly < 2.5 um.
PYROLYSATE = Aerosol("pyrolysate", 4.4, 0.9)
# Cooking oil fumes: 0.1-1 um droplets, 3-4 m^2/g (Buonanno et al. 2009, Atmospheric
# Environment 43:3235, size distributions; extinction from Mie theory for oil at 0.63 um).
COOKING_FUME = Aerosol("cooking_fume", 3.5, 0.7)
# Tobacco smoke: 0.1-0.5 um, about 4 m^2/g, essentially all PM2.5 (Klepeis et al. 2003,
# J. Exposure Analysis and Environmental Epidemiology 13:522).
TOBACCO = Aerosol("tobacco", 4.0, 0.95)
# Shower mist: 5-20 um water droplets scatter weakly per gram (Mie, large-particle limit
# 3 / (2 * rho * r) ~ 0.3 m^2/g at r = 5 um); optical PM sensors count part of it.
MIST = Aerosol("mist", 0.3, 0.3)
# Household dust: mostly coarse (PM2.5/PM10 ~ 0.2 indoors, Wallace 1996, JAWMA 46:98),
# 0.5 m^2/g by the same large-particle estimate at r ~ 3 um, density 1.5 g/cm3.
DUST = Aerosol("dust", 0.5, 0.2)

# Flaming defaults come from the fit to the NIST home smoke alarm tests (calibration.py; refit
# with `firepipe calibrate`): peak heat release and the soot, CO and CO2 yields at the heat of
# combustion the fit assumed. Compared with Tewarson's ranges for furnishings ("Generation of
# heat and gaseous, liquid, and solid products in fires", SFPE Handbook: soot 0.01-0.2, CO
# 0.01-0.05, CO2 1.2-2.5 g/g), the fitted soot lies inside; CO reaches a little beyond both
# ends and CO2 below the lower one. Fits that stopped at a bound (SDC07's CO2 at the
# stoichiometric 3.1 g/g) are left out of the ranges.
CALIBRATED = load_calibrated_ranges()
FURNISHING_HEAT_OF_COMBUSTION_KJ_PER_G = CALIBRATED.heat_of_combustion_kj_per_g


@dataclass(frozen=True)
class Yields:
    """Products per gram of fuel burnt, carried by the plume (g/g).

    VOC (as isobutylene) and H2 are small in flaming combustion (assumed: the NIST tests did not
    measure them); water is 0.5-1 g/g for hydrocarbon-rich furnishings (Tewarson).
    """

    soot: Range = CALIBRATED.soot_yield_g_per_g
    co: Range = CALIBRATED.co_yield_g_per_g
    co2: Range = CALIBRATED.co2_yield_g_per_g
    voc: Range = (0.002, 0.01)
    h2: Range = (0.0002, 0.001)
    water: Range = (0.5, 1.0)


@dataclass(frozen=True)
class Emission:
    """Emission rates into the room at full output (mg/s; water in g/s)."""

    aerosol_mg_per_s: Range = NONE
    co_mg_per_s: Range = NONE
    co2_mg_per_s: Range = NONE
    voc_mg_per_s: Range = NONE
    h2_mg_per_s: Range = NONE
    water_g_per_s: Range = NONE


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str
    is_fire: bool
    weight: float  # share of this scenario within its family
    peak_hrr_kw: Range = NONE
    growth_power: float = 1.0
    alpha_kw_per_s2: float = 0.0  # t-squared fires only: the rise time follows from it
    rise_s: Range = (1.0, 1.0)
    duration_s: Range = (math.inf, math.inf)
    plume: Yields | None = None
    room: Emission = field(default_factory=Emission)
    aerosol: Aerosol = SOOT


FAMILIES: tuple[str, ...] = ("baseline", "flaming", "smouldering", "nuisance")
# The default mix of a generation run, per device. Fires and nuisances are over-represented
# against real homes on purpose: a detector needs many examples of both.
FAMILY_WEIGHTS: Mapping[str, float] = {
    "baseline": 0.4,
    "flaming": 0.2,
    "smouldering": 0.1,
    "nuisance": 0.3,
}

_FLAMING_PEAK_HRR_KW: Range = CALIBRATED.peak_hrr_kw


def _flaming(name: str, alpha: float) -> Scenario:
    return Scenario(
        name,
        "flaming",
        is_fire=True,
        weight=0.25,
        peak_hrr_kw=_FLAMING_PEAK_HRR_KW,
        growth_power=2.0,
        alpha_kw_per_s2=alpha,
        plume=Yields(),
        aerosol=SOOT,
    )


CATALOG: tuple[Scenario, ...] = (
    # Occupants, HVAC and the daily cycle only; every other scenario adds its source to this.
    Scenario("clean_baseline", "baseline", is_fire=False, weight=1.0),
    _flaming("flaming_slow", physics.ALPHA_SLOW_KW_PER_S2),
    _flaming("flaming_medium", physics.ALPHA_MEDIUM_KW_PER_S2),
    _flaming("flaming_fast", physics.ALPHA_FAST_KW_PER_S2),
    _flaming("flaming_ultra_fast", physics.ALPHA_ULTRA_FAST_KW_PER_S2),
    # Smouldering polyurethane foam and cotton: mass loss of 0.01-0.1 g/s over tens of minutes,
    # CO/CO2 mass ratio near 0.2-0.6, almost no heat (Ohlemiller, SFPE Handbook, "Smoldering
    # combustion"; UL 217 smouldering test fires reach 5-10 %/ft over 30-60 min). H2 is a known
    # early product of pyrolysis (Ohlemiller 1985, Prog. Energy Combust. Sci. 11:277).
    Scenario(
        "smouldering_upholstery",
        "smouldering",
        is_fire=True,
        weight=0.5,
        peak_hrr_kw=(0.2, 1.0),
        rise_s=(600.0, 2400.0),
        room=Emission(
            aerosol_mg_per_s=(0.2, 1.5),
            co_mg_per_s=(0.5, 3.0),
            co2_mg_per_s=(2.0, 8.0),
            voc_mg_per_s=(0.3, 1.5),
            h2_mg_per_s=(0.05, 0.3),
            water_g_per_s=(0.002, 0.01),
        ),
        aerosol=PYROLYSATE,
    ),
    Scenario(
        "smouldering_cotton",
        "smouldering",
        is_fire=True,
        weight=0.5,
        peak_hrr_kw=(0.1, 0.6),
        rise_s=(900.0, 3000.0),
        room=Emission(
            aerosol_mg_per_s=(0.1, 1.0),
            co_mg_per_s=(0.3, 2.0),
            co2_mg_per_s=(1.0, 5.0),
            voc_mg_per_s=(0.2, 1.0),
            h2_mg_per_s=(0.02, 0.15),
            water_g_per_s=(0.002, 0.01),
        ),
        aerosol=PYROLYSATE,
    ),
    # Cooking: a 1-3 kW element or burner for minutes; fumes of 3-40 mg/min PM and VOCs, and
    # steam from the food (Buonanno et al. 2009; Abdullahi et al. 2013, Atmospheric Environment
    # 71:260). Broiling and frying are the classic photoelectric nuisance sources (UL 217 8th
    # edition added a hamburger-broiling test for that reason).
    Scenario(
        "cooking_broiling",
        "nuisance",
        is_fire=False,
        weight=0.15,
        peak_hrr_kw=(1.5, 3.0),
        rise_s=(60.0, 240.0),
        duration_s=(420.0, 1200.0),
        room=Emission(
            aerosol_mg_per_s=(0.05, 0.5),
            co_mg_per_s=(0.0, 0.1),
            voc_mg_per_s=(0.05, 0.3),
            water_g_per_s=(0.05, 0.2),
        ),
        aerosol=COOKING_FUME,
    ),
    Scenario(
        "cooking_frying",
        "nuisance",
        is_fire=False,
        weight=0.15,
        peak_hrr_kw=(1.0, 2.5),
        rise_s=(60.0, 180.0),
        duration_s=(300.0, 900.0),
        room=Emission(
            aerosol_mg_per_s=(0.05, 0.6),
            co_mg_per_s=(0.0, 0.05),
            voc_mg_per_s=(0.1, 0.4),
            water_g_per_s=(0.1, 0.3),
        ),
        aerosol=COOKING_FUME,
    ),
    Scenario(
        "cooking_toasting",
        "nuisance",
        is_fire=False,
        weight=0.15,
        peak_hrr_kw=(0.8, 1.2),
        rise_s=(30.0, 120.0),
        duration_s=(120.0, 300.0),
        room=Emission(
            aerosol_mg_per_s=(0.02, 0.3),
            co_mg_per_s=(0.02, 0.2),
            co2_mg_per_s=(0.0, 1.0),
            voc_mg_per_s=(0.03, 0.2),
            water_g_per_s=(0.01, 0.05),
        ),
        aerosol=COOKING_FUME,
    ),
    # A hot shower evaporates 0.1-0.3 g/s into a small room and warms its air by a few kelvin
    # (ASHRAE Handbook, residential moisture generation: ~0.3 kg per 10-minute shower).
    Scenario(
        "shower_steam",
        "nuisance",
        is_fire=False,
        weight=0.15,
        peak_hrr_kw=(0.5, 1.5),
        rise_s=(30.0, 120.0),
        duration_s=(300.0, 900.0),
        room=Emission(aerosol_mg_per_s=(1.0, 10.0), water_g_per_s=(0.1, 0.3)),
        aerosol=MIST,
    ),
    # Sweeping, vacuuming or shaking bedding resuspends 5-60 mg/min of mostly coarse dust for a
    # few minutes (Ferro et al. 2004, Environ. Sci. Technol. 38:1759).
    Scenario(
        "dust",
        "nuisance",
        is_fire=False,
        weight=0.15,
        rise_s=(5.0, 30.0),
        duration_s=(60.0, 300.0),
        room=Emission(aerosol_mg_per_s=(0.1, 1.0)),
        aerosol=DUST,
    ),
    # One cigarette over 5-8 min: about 10-15 mg of particles and 40-60 mg CO in sidestream
    # smoke (Klepeis et al. 2003; Daisey et al. 1998, Atmospheric Environment 32:3879).
    Scenario(
        "cigarette",
        "nuisance",
        is_fire=False,
        weight=0.15,
        peak_hrr_kw=(0.002, 0.005),
        rise_s=(5.0, 20.0),
        duration_s=(300.0, 480.0),
        room=Emission(
            aerosol_mg_per_s=(0.02, 0.05),
            co_mg_per_s=(0.08, 0.2),
            co2_mg_per_s=(0.5, 1.5),
            voc_mg_per_s=(0.02, 0.1),
        ),
        aerosol=TOBACCO,
    ),
    # A paraffin candle: about 80 W, burning 0.1 g/min of wax into CO2 and water, with a trace of
    # soot (Fine et al. 1999, Environ. Sci. Technol. 33:2352).
    Scenario(
        "candle",
        "nuisance",
        is_fire=False,
        weight=0.10,
        peak_hrr_kw=(0.05, 0.1),
        rise_s=(5.0, 30.0),
        room=Emission(
            aerosol_mg_per_s=(0.001, 0.01),
            co_mg_per_s=(0.002, 0.01),
            co2_mg_per_s=(3.0, 6.0),
            water_g_per_s=(0.001, 0.003),
        ),
        aerosol=SOOT,
    ),
)


def scenario(name: str) -> Scenario:
    for s in CATALOG:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in CATALOG)
    raise KeyError(f"unknown scenario {name!r}; the catalog has {known}")


def in_families(families: tuple[str, ...]) -> tuple[Scenario, ...]:
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown scenario families {unknown}; known: {', '.join(FAMILIES)}")
    return tuple(s for s in CATALOG if s.family in families)


def device_shares(families: tuple[str, ...]) -> dict[str, float]:
    """The expected share of devices per scenario when drawing from `families`."""
    chosen = in_families(families)
    total = sum(FAMILY_WEIGHTS[f] for f in set(families))
    return {s.name: FAMILY_WEIGHTS[s.family] / total * s.weight for s in chosen}


def _check_weights() -> None:
    for family in FAMILIES:
        weights = sum(s.weight for s in CATALOG if s.family == family)
        if not math.isclose(weights, 1.0):
            raise AssertionError(f"scenario weights of family {family} sum to {weights}, not 1")


_check_weights()
