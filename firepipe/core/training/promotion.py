"""Champion/challenger: whether a candidate detector replaces the champion, and why.

The issue's rule: promote only a candidate that beats the champion on real-fire lead time and
does no worse on false alarms, within thresholds in config. Every check is written out in the
decision's reasons, passed or failed, so the record says why either way.

The metrics are flat names (as logged to the registry): the real-fire summary of
`firepipe evaluate-real` prefixed `real_`, and the non-fire false-alarm rate of the test split
seen through every channel profile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
PENDING, APPROVED, REJECTED = APPROVAL_STATUSES
# A reviewed version is never sent back to review; everything else is a legitimate change of
# mind (SageMaker's own UpdateModelPackage allows any change).
_ALLOWED_TRANSITIONS = {
    PENDING: (APPROVED, REJECTED),
    APPROVED: (REJECTED,),
    REJECTED: (APPROVED,),
}

MEDIAN_LEAD_S = "real_median_lead_s"  # median lead of the model over the median real alarm
SHARE_NO_LATER_THAN_MEDIAN = "real_share_no_later_than_median_alarm"
PRE_IGNITION_ALARMS = "real_pre_ignition_alarms"  # model alarms before ignition, all stations
# The NIST replay's warm-up (real_fires.WARM_UP_S) and the stretch whose median it holds
# (real_fires.WARM_UP_BASIS_S): leads compare only under the same replay.
WARM_UP_METRIC = "real_warm_up_s"
WARM_UP_BASIS_METRIC = "real_warm_up_basis_s"
# Every non-fire device of the test split (nuisance and baseline), seen through every channel
# profile, each at its profile's operating point (ml/evaluation): evaluation.flat_metrics name.
# (evaluation.PROFILES_REPORT and ALL_PROFILES, spelled out here so that this module stays free
# of evaluation's imports; firepipe_tests/defs/test_training_assets.py checks it is logged.)
FALSE_ALARMS_PER_1000H = "test_profiles/all/false_alarms_per_1000_device_hours"
# Versions evaluated before the profiles were measured the test split as simulated only.
AS_SIMULATED_FALSE_ALARMS_PER_1000H = "test/false_alarms_per_1000_device_hours"
PROMOTION_METRICS = (
    MEDIAN_LEAD_S,
    SHARE_NO_LATER_THAN_MEDIAN,
    PRE_IGNITION_ALARMS,
    FALSE_ALARMS_PER_1000H,
    WARM_UP_METRIC,
    WARM_UP_BASIS_METRIC,
)


class ApprovalError(ValueError):
    """An approval status firepipe does not know, or a change between statuses it refuses."""


def check_approval_transition(current: str, new: str) -> None:
    """Raise ApprovalError unless a version may go from `current` to `new`."""
    for status in (current, new):
        if status not in APPROVAL_STATUSES:
            raise ApprovalError(
                f"unknown approval status {status!r}: use one of {', '.join(APPROVAL_STATUSES)}"
            )
    if new not in _ALLOWED_TRANSITIONS[current]:
        allowed = ", ".join(_ALLOWED_TRANSITIONS[current])
        raise ApprovalError(f"approval cannot go from {current} to {new} (allowed: {allowed})")


@dataclass(frozen=True)
class PromotionPolicy:
    """Thresholds for `decide`. The floors hold for every candidate, champion or not."""

    # Gains over the champion (the issue: "beats the champion ... within thresholds in config").
    min_lead_gain_s: float = 0.0
    max_share_decrease: float = 0.0  # of the share of stations no later than the median alarm
    max_false_alarm_increase_per_1000h: float = 0.0
    # Floors. Issue 5's goal figures: no alarm before ignition, 0 false alarms per 1,000
    # device-hours on the nuisance hold-out. No floor on the share by default: a first champion
    # that misses the goal (every station) is still worth serving, and a later one must beat it.
    max_pre_ignition_alarms: int = 0
    max_false_alarms_per_1000h: float = 0.0
    min_share_no_later_than_median: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "min_lead_gain_s",
            "max_share_decrease",
            "max_false_alarm_increase_per_1000h",
            "max_pre_ignition_alarms",
            "max_false_alarms_per_1000h",
            "min_share_no_later_than_median",
        ):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"PromotionPolicy.{name} must be finite, got {value}")
        for name in ("max_share_decrease", "max_pre_ignition_alarms"):
            if getattr(self, name) < 0:
                raise ValueError(f"PromotionPolicy.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_share_no_later_than_median <= 1.0:
            raise ValueError(
                "PromotionPolicy.min_share_no_later_than_median must be in [0, 1], got "
                f"{self.min_share_no_later_than_median}"
            )


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]


def _metrics(metrics: Mapping[str, float], who: str) -> dict[str, float]:
    # The median lead is left out of the logged metrics when it is not a number: the model
    # missed at least half the stations (real_fires.summarise). That is a failed floor, not an
    # error; any other missing metric means the version was never evaluated. Versions evaluated
    # before the replay had a warm-up replayed the records from ignition (a warm-up of 0 s), and
    # those before it held a median held the first reading (a basis of 0 s).
    # Versions evaluated before the test split was seen through the channel profiles have its
    # rate as simulated.
    present = {MEDIAN_LEAD_S: math.nan, WARM_UP_METRIC: 0.0, WARM_UP_BASIS_METRIC: 0.0, **metrics}
    if FALSE_ALARMS_PER_1000H not in present and AS_SIMULATED_FALSE_ALARMS_PER_1000H in present:
        present[FALSE_ALARMS_PER_1000H] = present[AS_SIMULATED_FALSE_ALARMS_PER_1000H]
    missing = [name for name in PROMOTION_METRICS if name not in present]
    if missing:
        raise ValueError(f"{who} metrics lack {', '.join(missing)}")
    return {name: float(present[name]) for name in PROMOTION_METRICS}


def _floors(candidate: dict[str, float], policy: PromotionPolicy) -> list[tuple[bool, str]]:
    pre = candidate[PRE_IGNITION_ALARMS]
    false_alarms = candidate[FALSE_ALARMS_PER_1000H]
    share = candidate[SHARE_NO_LATER_THAN_MEDIAN]
    lead = candidate[MEDIAN_LEAD_S]
    return [
        (
            pre <= policy.max_pre_ignition_alarms,
            f"pre-ignition alarms {pre:g} (at most {policy.max_pre_ignition_alarms})",
        ),
        (
            false_alarms <= policy.max_false_alarms_per_1000h,
            f"false alarms {false_alarms:g} per 1000 device-hours "
            f"(at most {policy.max_false_alarms_per_1000h:g})",
        ),
        (
            share >= policy.min_share_no_later_than_median,
            f"share no later than the median real alarm {share:.3f} "
            f"(at least {policy.min_share_no_later_than_median:.3f})",
        ),
        # NaN (or not logged) when the model alarmed at under half the stations.
        (
            not math.isnan(lead),
            "median lead unknown: the model did not alarm at half the NIST stations"
            if math.isnan(lead)
            else f"median lead {lead:g} s (the model alarmed at half the stations or more)",
        ),
    ]


def _against_champion(
    candidate: dict[str, float], champion: dict[str, float], policy: PromotionPolicy
) -> list[tuple[bool, str]]:
    lead_gain = candidate[MEDIAN_LEAD_S] - champion[MEDIAN_LEAD_S]
    share_change = candidate[SHARE_NO_LATER_THAN_MEDIAN] - champion[SHARE_NO_LATER_THAN_MEDIAN]
    alarm_change = candidate[FALSE_ALARMS_PER_1000H] - champion[FALSE_ALARMS_PER_1000H]
    pre_change = candidate[PRE_IGNITION_ALARMS] - champion[PRE_IGNITION_ALARMS]
    replay = (WARM_UP_METRIC, WARM_UP_BASIS_METRIC)
    same_replay = all(candidate[m] == champion[m] for m in replay)
    replays = (
        f"warm-up {candidate[WARM_UP_METRIC]:g} s of the first {candidate[WARM_UP_BASIS_METRIC]:g} "
        f"s's median vs champion {champion[WARM_UP_METRIC]:g} s of "
        f"{champion[WARM_UP_BASIS_METRIC]:g} s"
    )
    return [
        (
            same_replay,
            f"NIST replay {replays}: the same replay, so the figures compare"
            if same_replay
            else f"NIST replay {replays}: the figures do not compare (README, 'When the "
            "replay changes')",
        ),
        (
            lead_gain >= policy.min_lead_gain_s,
            f"median lead {candidate[MEDIAN_LEAD_S]:g} s vs champion "
            f"{champion[MEDIAN_LEAD_S]:g} s: {lead_gain:+g} s (needs {policy.min_lead_gain_s:+g})",
        ),
        (
            share_change >= -policy.max_share_decrease,
            f"share no later than the median alarm {candidate[SHARE_NO_LATER_THAN_MEDIAN]:.3f} vs "
            f"champion {champion[SHARE_NO_LATER_THAN_MEDIAN]:.3f}: {share_change:+.3f} "
            f"(may fall by {policy.max_share_decrease:.3f})",
        ),
        (
            lead_gain > 0 or share_change > 0,
            "better than the champion on real-fire lead time (median lead or share)",
        ),
        (
            alarm_change <= policy.max_false_alarm_increase_per_1000h,
            f"false alarms {candidate[FALSE_ALARMS_PER_1000H]:g} vs champion "
            f"{champion[FALSE_ALARMS_PER_1000H]:g} per 1000 device-hours: {alarm_change:+g} "
            f"(may rise by {policy.max_false_alarm_increase_per_1000h:g})",
        ),
        (
            pre_change <= 0,
            f"pre-ignition alarms {candidate[PRE_IGNITION_ALARMS]:g} vs champion "
            f"{champion[PRE_IGNITION_ALARMS]:g}: no more than the champion",
        ),
    ]


def decide(
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    policy: PromotionPolicy | None = None,
) -> Decision:
    """Promote when the candidate passes every floor and, with a champion, beats it on lead
    time without doing worse on false alarms. Each reason starts "pass:" or "fail:"."""
    policy = policy or PromotionPolicy()
    candidate = _metrics(candidate_metrics, "candidate")
    checks = _floors(candidate, policy)
    if champion_metrics is None:
        checks.append((True, "no champion yet: the floors decide"))
    else:
        checks += _against_champion(candidate, _metrics(champion_metrics, "champion"), policy)
    reasons = tuple(f"{'pass' if ok else 'fail'}: {text}" for ok, text in checks)
    return Decision(promote=all(ok for ok, _ in checks), reasons=reasons)
