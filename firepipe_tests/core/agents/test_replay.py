"""A replay's plan: every station of a NIST test a device named after the run, after
evaluate-real's warm-up, in time-ordered batches; its timeline: each device's first alarm at or
after ignition."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from firepipe import settings
from firepipe.core.agents.replay import MAX_BATCH_READINGS, nist_plan, synthetic_plan, timeline
from firepipe.core.realdata import nist
from firepipe.core.training.real_fires import WARM_UP_S, with_warm_up


@pytest.fixture(scope="module")
def test_record() -> nist.NistTest:
    return nist.read_tests(settings.nist_data_dir())[0]


def test_nist_plan_holds_every_station_after_the_warm_up(test_record: nist.NistTest) -> None:
    plan = nist_plan(test_record, "r1", WARM_UP_S)
    readings = test_record.readings()
    assert {d.station for d in plan.devices.values()} == set(test_record.stations)
    expected = 0
    for station in test_record.stations:
        own = readings.filter(pl.col("device_id") == test_record.device_id(station)).sort("ts")
        expected += with_warm_up(own, WARM_UP_S).height
        device = plan.devices[f"r1.{test_record.device_id(station)}"]
        assert device.test == test_record.name
        assert device.station == station
        first = own.row(0, named=True)
        assert device.ignition == first["ts"] - timedelta(seconds=first["seconds_since_ignition"])
    assert plan.readings == expected
    sent = [r for b in plan.batches for r in b.readings]
    assert [r["ts"] for r in sent] == sorted(r["ts"] for r in sent)
    assert all(len(b.readings) <= MAX_BATCH_READINGS for b in plan.batches)
    assert plan.batches[0].at_s == 0
    assert plan.batches[-1].at_s > WARM_UP_S
    # a channel is sent only with a value
    assert all(v == v for r in sent for k, v in r.items() if k not in ("device_id", "ts"))


def test_timeline_takes_the_first_alarm_at_or_after_ignition(test_record: nist.NistTest) -> None:
    plan = nist_plan(test_record, "r2", WARM_UP_S)
    first, second, *_ = plan.devices.values()
    assert first.ignition is not None
    assert second.ignition is not None
    alarms = {
        first.device_id: [
            first.ignition - timedelta(seconds=20),
            first.ignition + timedelta(seconds=42.5),
        ],
        second.device_id: [second.ignition - timedelta(seconds=5)],
    }
    rows = {(r["test"], r["station"]): r["alarm_s"] for r in timeline(plan, alarms)}
    assert rows[(first.test, first.station)] == 42.5
    assert rows[(second.test, second.station)] is None  # only a pre-ignition alarm
    assert len(rows) == len(plan.devices)


def test_synthetic_plan_names_each_device_by_its_scenario() -> None:
    plan = synthetic_plan("flaming", "r3", devices=3, duration_s=120, seed=1)
    assert len(plan.devices) == 3
    assert plan.readings == 3 * 120
    assert all(
        d.device_id.startswith("r3.") and d.ignition is not None for d in plan.devices.values()
    )
    assert all(d.test != "flaming" for d in plan.devices.values())  # the scenario, by name
    with pytest.raises(ValueError, match="no scenario family 'arson'"):
        synthetic_plan("arson", "r4")
