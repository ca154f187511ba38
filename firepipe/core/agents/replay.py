"""A replay's plan and its timeline: the readings of a NIST test (every station a device, after
evaluate-real's warm-up) or of a synthetic scenario, in batches on the record's own clock, and
the alarm each device raised, in seconds after ignition.

Each replay names its devices after its run id (`<run>.<device>`), so a replay run again on the
same home is new devices with new incidents: nothing of an earlier replay is stale to it or
deduplicated against it. The readings keep the record's own times; `--speed` only paces when
the batches are sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.realdata.nist import NistTest
from firepipe.core.training.dataset import SECONDS_SINCE_IGNITION as SINCE
from firepipe.core.training.real_fires import with_warm_up

# Readings per message: ~100 bytes each as JSON, so a batch stays far under SQS's 256 KB.
MAX_BATCH_READINGS = 500


@dataclass(frozen=True)
class ReplayDevice:
    device_id: str  # as the agents see it: <run>.<source device>
    test: str  # the NIST test, or the scenario
    station: str  # the NIST station, or the synthetic device
    ignition: datetime | None  # on the record's clock; None: no fire
    channels: tuple[str, ...]  # the channel profile it measured


@dataclass(frozen=True)
class Batch:
    at_s: float  # seconds after the replay's first reading, on the record's clock
    readings: list[dict[str, Any]]


@dataclass(frozen=True)
class ReplayPlan:
    run_id: str
    devices: dict[str, ReplayDevice]  # by device_id
    batches: list[Batch]

    @property
    def readings(self) -> int:
        return sum(len(b.readings) for b in self.batches)

    def profiles(self) -> dict[str, list[str]]:
        return {d.device_id: list(d.channels) for d in self.devices.values()}


def nist_plan(test: NistTest, run_id: str, warm_up_s: float) -> ReplayPlan:
    """Every station of `test` after `warm_up_s` of held quiet start (`with_warm_up`, as
    evaluate-real replays it)."""
    readings = test.readings()
    frames, devices = [], {}
    for station in test.stations:
        source = test.device_id(station)
        own = with_warm_up(readings.filter(pl.col("device_id") == source).sort("ts"), warm_up_s)
        device = _device_id(run_id, source)
        first = own.row(0, named=True)
        ignition = first["ts"] - timedelta(seconds=float(first[SINCE]))
        channels = tuple(c for c in CHANNEL_NAMES if c in own.columns and own[c].count())
        devices[device] = ReplayDevice(device, test.name, station, ignition, channels)
        frames.append(own.with_columns(pl.lit(device).alias("device_id")))
    return ReplayPlan(run_id, devices, _batches(pl.concat(frames, how="diagonal_relaxed")))


def frame_plan(
    frame: pl.DataFrame,
    run_id: str,
    test: str,
    ignitions: Mapping[str, datetime | None],
    *,
    rename: bool = True,
) -> ReplayPlan:
    """A plan of readings already in hand (a synthetic scenario's: device_id, ts, channels);
    `ignitions`: each device's ignition, None for a device with no fire. `rename=False` keeps
    the devices' own ids (a feed of real readings, not a replay)."""
    devices, renamed = {}, {}
    for source in frame["device_id"].unique(maintain_order=True):
        own = frame.filter(pl.col("device_id") == source)
        device = _device_id(run_id, source) if rename else source
        channels = tuple(c for c in CHANNEL_NAMES if c in own.columns and own[c].count())
        devices[device] = ReplayDevice(device, test, source, ignitions.get(source), channels)
        renamed[source] = device
    named = frame.with_columns(pl.col("device_id").replace_strict(renamed))
    return ReplayPlan(run_id, devices, _batches(named))


def _device_id(run_id: str, source: str) -> str:
    return f"{run_id}.{source}"


def _batches(frame: pl.DataFrame) -> list[Batch]:
    """The readings in time order, a batch per second of record time (split at
    MAX_BATCH_READINGS), each reading as the inference service takes it."""
    channels = [c for c in CHANNEL_NAMES if c in frame.columns]
    rows = frame.sort("ts", "device_id", maintain_order=True).select(
        "device_id",
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias("ts_text"),
        pl.col("ts").dt.epoch("us").alias("us"),
        *channels,
    )
    start_us = rows["us"][0]
    batches: list[Batch] = []
    current: list[dict[str, Any]] = []
    second = None
    for row in rows.iter_rows(named=True):
        at = (row["us"] - start_us) // 1_000_000
        if current and (at != second or len(current) >= MAX_BATCH_READINGS):
            batches.append(Batch(float(second or 0), current))
            current = []
        second = at
        reading: dict[str, Any] = {"device_id": row["device_id"], "ts": row["ts_text"]}
        for c in channels:
            value = row[c]
            if value is not None and not math.isnan(value):
                reading[c] = value
        current.append(reading)
    if current:
        batches.append(Batch(float(second or 0), current))
    return batches


def timeline(plan: ReplayPlan, alarms: Mapping[str, Sequence[datetime]]) -> list[dict[str, Any]]:
    """One row per device: {"test", "station", "alarm_s"}, alarm_s the first of its alarms (the
    incidents the agents opened, by their event's time) at or after ignition, in seconds after
    it on the record's clock; None when it raised none then (or has no ignition)."""
    rows = []
    for device in plan.devices.values():
        alarm_s = None
        if device.ignition is not None:
            after = [t for t in alarms.get(device.device_id, ()) if t >= device.ignition]
            if after:
                alarm_s = round((min(after) - device.ignition).total_seconds(), 6)
        rows.append({"test": device.test, "station": device.station, "alarm_s": alarm_s})
    return rows


def synthetic_plan(
    family: str, run_id: str, *, devices: int = 8, duration_s: int = 900, seed: int = 0
) -> ReplayPlan:
    """`devices` synthetic devices of one scenario family (the generator's physics and sensor
    noise, no faults), `duration_s` seconds each; a device's `test` is its scenario."""
    from firepipe.core.simulation import scenarios, simulator

    if family not in scenarios.FAMILIES:
        raise ValueError(f"no scenario family {family!r}: one of {', '.join(scenarios.FAMILIES)}")
    spec = simulator.GenerationSpec(
        devices=devices, duration_s=duration_s, seed=seed, families=(family,), fault_share=0.0
    )
    frame = pl.concat(simulator.simulate_chunks(spec, workers=1))
    firsts = frame.group_by("device_id", maintain_order=True).first()
    plan = frame_plan(
        frame.select("device_id", "ts", *CHANNEL_NAMES),
        run_id,
        family,
        dict(zip(firsts["device_id"], firsts["ignition_ts"], strict=True)),
    )
    scenario_of = dict(zip(firsts["device_id"], firsts["scenario"], strict=True))
    renamed = {
        device_id: ReplayDevice(
            d.device_id, scenario_of[d.station], d.station, d.ignition, d.channels
        )
        for device_id, d in plan.devices.items()
    }
    return ReplayPlan(plan.run_id, renamed, plan.batches)
