"""The scenario catalog as a markdown document for the knowledge base, rendered from the code
(firepipe.core.simulation.scenarios), so the knowledge base never disagrees with what the
generator does."""

from __future__ import annotations

import math
from dataclasses import fields

from firepipe.core.readings import CHANNELS
from firepipe.core.simulation import scenarios
from firepipe.core.simulation.scenarios import Range, Scenario

SOURCE = "firepipe/core/simulation/scenarios.py"
# What each family stands for, in a sentence (the catalog's comments cite the sources).
FAMILY_NOTES = {
    "baseline": "a room with no source: the daily temperature cycle, HVAC, occupants' CO2 and "
    "background particles, VOCs and hydrogen. Every other scenario adds its source to this.",
    "flaming": "t-squared flaming fires that grow to a peak heat release rate; heat, soot and "
    "gases reach the ceiling sensor in the plume's ceiling jet.",
    "smouldering": "slow pyrolysis of upholstery foam or cotton: almost no heat, smoke "
    "droplets, CO and hydrogen mixed into the room over tens of minutes.",
    "nuisance": "sources that are not fires but can fool an alarm: cooking fumes and steam, "
    "shower mist, coarse dust, tobacco smoke and a candle.",
}
# Which reading channels an emission raises.
_ROOM_CHANNELS = {
    "aerosol_mg_per_s": "smoke_obscuration_pct_per_m, pm25_ugm3",
    "co_mg_per_s": "co_ppm",
    "co2_mg_per_s": "co2_ppm",
    "voc_mg_per_s": "voc_ppb",
    "h2_mg_per_s": "h2_ppm",
    "water_g_per_s": "humidity_pct",
}


def _range(r: Range, unit: str) -> str:
    low, high = r
    if math.isinf(low):
        return "until the run ends"
    return f"{low:g} {unit}" if low == high else f"{low:g}-{high:g} {unit}"


def _scenario_lines(s: Scenario) -> list[str]:
    lines = [f"### {s.name}", ""]
    kind = "a fire" if s.is_fire else "not a fire"
    lines.append(f"Family {s.family}, {kind}; {s.weight:.0%} of its family's devices.")
    if s.peak_hrr_kw != scenarios.NONE:
        growth = "t-squared" if s.growth_power == 2 else "linear ramp"
        rise = (
            f"alpha {s.alpha_kw_per_s2:g} kW/s^2"
            if s.alpha_kw_per_s2
            else f"rise {_range(s.rise_s, 's')}"
        )
        lines.append(f"- heat release: peak {_range(s.peak_hrr_kw, 'kW')}, {growth}, {rise}")
    lines.append(f"- lasts: {_range(s.duration_s, 's')}")
    if s.plume is not None:
        yields = ", ".join(
            f"{f.name} {_range(getattr(s.plume, f.name), 'g/g')}" for f in fields(s.plume)
        )
        lines.append(
            f"- plume yields ({yields}): temperature, smoke obscuration, PM2.5, CO, CO2, VOC "
            "and H2 follow the ceiling jet's temperature rise at the sensor"
        )
    emitted = [f for f in fields(s.room) if getattr(s.room, f.name) != scenarios.NONE]
    for f in emitted:
        unit = f.name.rsplit("_", 3)[-3] + "/s" if f.name.endswith("_per_s") else ""
        lines.append(
            f"- room emission {f.name.split('_')[0]}: {_range(getattr(s.room, f.name), unit)}, "
            f"raises {_ROOM_CHANNELS[f.name]}"
        )
    a = s.aerosol
    if s.plume is None and s.room.aerosol_mg_per_s == scenarios.NONE:
        return [*lines, ""]
    lines.append(
        f"- aerosol {a.name}: mass extinction {a.mass_extinction_m2_per_g:g} m^2/g, "
        f"{a.pm25_mass_fraction:.0%} of its mass counts as PM2.5"
    )
    return [*lines, ""]


def render_catalog() -> str:
    """The catalog: families, their default mix, and each scenario's source and sensor effects."""
    lines = ["# Scenario catalog", "", (scenarios.__doc__ or "").strip(), ""]
    lines += ["## Sensor channels", ""]
    lines += [f"- {c.name} ({c.unit}): {c.description}" for c in CHANNELS]
    lines.append("")
    for family in scenarios.FAMILIES:
        share = scenarios.FAMILY_WEIGHTS[family]
        lines += [f"## Family {family}", "", f"{share:.0%} of a default run's devices: "]
        lines[-1] += FAMILY_NOTES[family]
        lines.append("")
        for s in scenarios.CATALOG:
            if s.family == family:
                lines += _scenario_lines(s)
    return "\n".join(lines)
