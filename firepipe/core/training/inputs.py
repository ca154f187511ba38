"""Which gold features a detector reads, and in which of them its score may only rise.

Real instruments read the same air differently: the NIST gas analysers report 5-37 ppm of CO
in clean air and one reads 220 ppm of CO2, below outdoor air. A feature that reads a channel's
level (its rolling mean or maximum, the CO/CO2 ratio) moves with such an offset, and a detector
that learned those levels from simulated sensors alarms, or stays silent, on the offset rather
than the fire. Trained on every gold feature, `make run`'s detector reached the median
commercial alarm at 83 % of the NIST stations with one seed and at 14 % with another.

The `offset_robust` set keeps what a constant offset cannot move: a channel's change over a
lag, its rate of rise, its recent mean's rise over its longer mean, and the smoke-heat lag
(onsets are rises). Rolling standard deviations are left out too: they read a sensor's noise
as much as the air, and the NIST meters are 13-20 times noisier than the simulated sensors.

`increasing` names the inputs in which the score must not fall (LightGBM's monotone
constraints): more rise of a channel a fire raises is never less evidence of a fire. Humidity
is not among them: steam raises it, and a fire may lower it.
"""

from __future__ import annotations

from typing import Literal

from firepipe.core.features.spec import (
    Difference,
    Feature,
    FeatureSpec,
    RateOfRise,
    Rise,
    SmokeHeatLag,
)
from firepipe.core.readings import CHANNEL_NAMES

FeatureSet = Literal["offset_robust", "all"]
FEATURE_SETS: tuple[FeatureSet, ...] = ("offset_robust", "all")

# Channels a fire raises: every one but humidity.
FIRE_RAISES: tuple[str, ...] = tuple(c for c in CHANNEL_NAMES if c != "humidity_pct")


def _is_change(feature: Feature) -> bool:
    return isinstance(feature, Difference | RateOfRise | Rise | SmokeHeatLag)


def detector_inputs(spec: FeatureSpec, feature_set: FeatureSet) -> tuple[str, ...]:
    """The names of `spec`'s features that a detector of `feature_set` reads, in spec order."""
    if feature_set == "all":
        return spec.names
    if feature_set != "offset_robust":
        raise ValueError(f"feature_set must be one of {FEATURE_SETS}, got {feature_set!r}")
    names = tuple(f.name for f in spec.features if _is_change(f))
    if not names:
        raise ValueError(
            "the feature spec has no change (difference, rate of rise, rise over a baseline, "
            "smoke-heat lag): an offset_robust detector would read nothing"
        )
    return names


def increasing_inputs(spec: FeatureSpec, names: tuple[str, ...]) -> tuple[str, ...]:
    """Of `names`, those in which the score must not fall: the difference, rate of rise or rise
    over a baseline of a channel a fire raises."""
    chosen = set(names)
    return tuple(
        f.name
        for f in spec.features
        if f.name in chosen
        and isinstance(f, Difference | RateOfRise | Rise)
        and f.channel in FIRE_RAISES
    )
