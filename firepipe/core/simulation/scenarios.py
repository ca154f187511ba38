"""The scenario catalog: what kinds of events the generator can stage in a room.

Each scenario names its family (the unit of hold-out splits later) and its fire-growth
parameters. Material yields are for well-ventilated flaming combustion of furnishings.
"""

from __future__ import annotations

from dataclasses import dataclass

from firepipe.core.simulation import physics

# Typical well-ventilated flaming yields and effective heat of combustion for mixed furnishing
# fuels (Tewarson, "Generation of heat and gaseous, liquid, and solid products in fires",
# SFPE Handbook): soot 0.01-0.2 g/g, CO 0.01-0.05 g/g, CO2 1.2-2.5 g/g, dHc 12-30 kJ/g.
FLAMING_SOOT_YIELD_G_PER_G = 0.05
FLAMING_CO_YIELD_G_PER_G = 0.02
FLAMING_CO2_YIELD_G_PER_G = 1.5
FLAMING_VOC_YIELD_G_PER_G = 0.005  # assumed; total VOC as isobutylene, to be calibrated
FLAMING_H2_YIELD_G_PER_G = 0.0005  # assumed; flaming makes little H2 (smouldering makes more)
FURNISHING_HEAT_OF_COMBUSTION_KJ_PER_G = 20.0


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str
    is_fire: bool
    alpha_kw_per_s2: float = 0.0
    peak_hrr_kw: tuple[float, float] = (0.0, 0.0)


CATALOG: tuple[Scenario, ...] = (
    Scenario("clean_baseline", "baseline", is_fire=False),
    Scenario("flaming_slow", "flaming", True, physics.ALPHA_SLOW_KW_PER_S2, (300.0, 1500.0)),
    Scenario("flaming_medium", "flaming", True, physics.ALPHA_MEDIUM_KW_PER_S2, (300.0, 1500.0)),
    Scenario("flaming_fast", "flaming", True, physics.ALPHA_FAST_KW_PER_S2, (300.0, 1500.0)),
    Scenario(
        "flaming_ultra_fast", "flaming", True, physics.ALPHA_ULTRA_FAST_KW_PER_S2, (300.0, 1500.0)
    ),
)


def scenario(name: str) -> Scenario:
    for s in CATALOG:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in CATALOG)
    raise KeyError(f"unknown scenario {name!r}; the catalog has {known}")


def fires() -> tuple[Scenario, ...]:
    return tuple(s for s in CATALOG if s.is_fire)
