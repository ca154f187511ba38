import math

import pytest

from firepipe.core.training.promotion import (
    AS_SIMULATED_FALSE_ALARMS_PER_1000H,
    FALSE_ALARMS_PER_1000H,
    MEDIAN_LEAD_S,
    PRE_IGNITION_ALARMS,
    SHARE_NO_LATER_THAN_MEDIAN,
    WARM_UP_BASIS_METRIC,
    WARM_UP_METRIC,
    ApprovalError,
    PromotionPolicy,
    check_approval_transition,
    decide,
)


def metrics(lead: float = 20.0, share: float = 0.9, alarms: float = 0.0, pre: float = 0.0):
    return {
        MEDIAN_LEAD_S: lead,
        SHARE_NO_LATER_THAN_MEDIAN: share,
        FALSE_ALARMS_PER_1000H: alarms,
        PRE_IGNITION_ALARMS: pre,
    }


def failed(decision) -> list[str]:
    return [r for r in decision.reasons if r.startswith("fail:")]


def test_first_candidate_passing_the_floors_is_promoted() -> None:
    decision = decide(metrics(), None)
    assert decision.promote
    assert "pass: no champion yet: the floors decide" in decision.reasons
    assert all(r.startswith("pass:") for r in decision.reasons)


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (metrics(pre=1), "fail: pre-ignition alarms 1 (at most 0)"),
        (metrics(alarms=2.5), "fail: false alarms 2.5 per 1000 device-hours (at most 0)"),
        (
            metrics(lead=math.nan),
            "fail: median lead unknown: the model did not alarm at half the NIST stations",
        ),
    ],
)
def test_first_candidate_below_a_floor_is_refused(candidate, reason: str) -> None:
    decision = decide(candidate, None)
    assert not decision.promote
    assert failed(decision) == [reason]


def test_share_floor_comes_from_the_policy() -> None:
    policy = PromotionPolicy(min_share_no_later_than_median=0.95)
    decision = decide(metrics(share=0.9), None, policy)
    assert not decision.promote
    assert failed(decision) == [
        "fail: share no later than the median real alarm 0.900 (at least 0.950)"
    ]


def test_candidate_that_leads_earlier_replaces_the_champion() -> None:
    decision = decide(metrics(lead=25.0), metrics(lead=20.0))
    assert decision.promote
    assert "pass: median lead 25 s vs champion 20 s: +5 s (needs +0)" in decision.reasons


def test_candidate_no_better_than_the_champion_is_refused() -> None:
    decision = decide(metrics(), metrics())
    assert not decision.promote
    assert failed(decision) == [
        "fail: better than the champion on real-fire lead time (median lead or share)"
    ]


def test_more_false_alarms_block_a_faster_candidate() -> None:
    policy = PromotionPolicy(max_false_alarms_per_1000h=5.0, max_false_alarm_increase_per_1000h=1.0)
    decision = decide(metrics(lead=30.0, alarms=3.0), metrics(alarms=1.0), policy)
    assert not decision.promote
    assert failed(decision) == [
        "fail: false alarms 3 vs champion 1 per 1000 device-hours: +2 (may rise by 1)"
    ]
    assert decide(metrics(lead=30.0, alarms=1.5), metrics(alarms=1.0), policy).promote


def test_a_champion_evaluated_before_the_profiles_compares_by_its_test_split_as_simulated() -> None:
    old = {**metrics(alarms=0.0), AS_SIMULATED_FALSE_ALARMS_PER_1000H: 4.0}
    del old[FALSE_ALARMS_PER_1000H]
    policy = PromotionPolicy(max_false_alarms_per_1000h=10.0)
    decision = decide(metrics(lead=30.0, alarms=6.0), old, policy)
    assert failed(decision) == [
        "fail: false alarms 6 vs champion 4 per 1000 device-hours: +2 (may rise by 0)"
    ]
    # the profiles' rate is the one read when a version has both
    both = {**metrics(alarms=7.0), AS_SIMULATED_FALSE_ALARMS_PER_1000H: 0.0}
    assert decide(metrics(lead=30.0, alarms=6.0), both, policy).promote


def test_lead_gain_threshold_and_share_drop() -> None:
    policy = PromotionPolicy(min_lead_gain_s=10.0)
    assert not decide(metrics(lead=25.0), metrics(lead=20.0), policy).promote
    assert decide(metrics(lead=30.0), metrics(lead=20.0), policy).promote
    # faster on median but at fewer stations no later than the median alarm
    decision = decide(metrics(lead=30.0, share=0.8), metrics(share=0.9))
    assert failed(decision) == [
        "fail: share no later than the median alarm 0.800 vs champion 0.900: -0.100 "
        "(may fall by 0.000)"
    ]
    # a better share alone is a gain when the median lead holds
    assert decide(metrics(share=1.0), metrics(share=0.9)).promote


def test_a_median_lead_left_out_of_the_metrics_fails_its_floor() -> None:
    """flat_metrics leaves out a None median lead (the model missed half the NIST stations or
    more): the candidate is refused with that reason, and a champion cannot be beaten by it."""
    unmeasured = {k: v for k, v in metrics().items() if k != MEDIAN_LEAD_S}
    decision = decide(unmeasured, None)
    assert not decision.promote
    assert failed(decision) == [
        "fail: median lead unknown: the model did not alarm at half the NIST stations"
    ]
    assert not decide(unmeasured, metrics()).promote


def test_figures_of_different_nist_replays_do_not_compare() -> None:
    """A champion replayed from ignition (or evaluated before the replay had a warm-up, so
    without the metric), or one whose warm-up held the first reading (before the warm-up held
    a median, so without the basis), cannot be beaten, or defended, by figures from a 300 s
    warm-up of the first 10 s's median."""
    replay = {WARM_UP_METRIC: 300.0, WARM_UP_BASIS_METRIC: 10.0}
    warm = {**metrics(lead=40.0), **replay}
    for legacy, was in (
        (metrics(), "0 s of 0 s"),
        ({**metrics(), WARM_UP_METRIC: 0.0}, "0 s of 0 s"),
        ({**metrics(), WARM_UP_METRIC: 300.0}, "300 s of 0 s"),
    ):
        decision = decide(warm, legacy)
        assert not decision.promote
        assert failed(decision) == [
            "fail: NIST replay warm-up 300 s of the first 10 s's median vs champion "
            f"{was}: the figures do not compare (README, 'When the replay changes')"
        ]
    same = decide(warm, {**metrics(), **replay})
    assert same.promote
    assert same.reasons[4] == (
        "pass: NIST replay warm-up 300 s of the first 10 s's median vs champion 300 s of 10 s: "
        "the same replay, so the figures compare"
    )


def test_missing_metrics_and_bad_policy_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="candidate metrics lack real_pre_ignition_alarms"):
        decide({k: v for k, v in metrics().items() if k != PRE_IGNITION_ALARMS}, None)
    with pytest.raises(ValueError, match="champion metrics lack"):
        decide(metrics(), {})
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        PromotionPolicy(min_share_no_later_than_median=1.5)
    with pytest.raises(ValueError, match="must be finite"):
        PromotionPolicy(min_lead_gain_s=math.inf)


def test_approval_transitions() -> None:
    check_approval_transition("PendingManualApproval", "Approved")
    check_approval_transition("Approved", "Rejected")
    check_approval_transition("Rejected", "Approved")
    with pytest.raises(ApprovalError, match="cannot go from Approved to PendingManualApproval"):
        check_approval_transition("Approved", "PendingManualApproval")
    with pytest.raises(ApprovalError, match="unknown approval status 'approved'"):
        check_approval_transition("PendingManualApproval", "approved")
