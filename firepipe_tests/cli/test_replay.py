"""`firepipe replay` and `firepipe agents feed` through real worker processes: a NIST test's
stations alarm when `firepipe evaluate-real` says they do, with the same model; a replay run
again on the same home raises its alerts again; a landed file's devices report their alarms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firepipe.services.agents.response import alert_records
from firepipe.services.agents.runtime import ports
from firepipe_tests.services.agents.processes import register_champion

TEST = "SDC02"


FIREPIPE = str(Path(sys.executable).parent / "firepipe")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A FIREPIPE_HOME whose champion is the sample detector; the environment of a command."""
    home = str(tmp_path / "home")
    monkeypatch.setenv("FIREPIPE_HOME", home)
    monkeypatch.setenv("FIREPIPE_ENV", "local")
    register_champion(tmp_path / "detector")
    return {**os.environ, "FIREPIPE_HOME": home, "FIREPIPE_ENV": "local"}


@pytest.mark.slow
def test_replay_alarms_as_evaluate_real_and_again_when_run_again(env: dict[str, str]) -> None:

    def run(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [FIREPIPE, *args, "--json"], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        document: dict[str, object] = json.loads(done.stdout)
        return document

    first = run("replay", "--test", TEST, "--speed", "0")
    expected = run("evaluate-real")
    (test,) = [t for t in expected["tests"] if t["test"] == TEST]  # type: ignore[attr-defined]
    want = {s["station"]: s["model_alarm_s"] for s in test["stations"]}
    got = {s["station"]: s["alarm_s"] for s in first["stations"]}  # type: ignore[attr-defined]
    assert got.keys() == want.keys()
    for station, alarm_s in got.items():
        assert (alarm_s is None) == (want[station] is None), station
        if alarm_s is not None:
            assert alarm_s == pytest.approx(want[station], abs=1e-3), station
    alarms = sum(a is not None for a in got.values())
    assert alarms > 0  # the sample detector alarms on the fires

    second = run("replay", "--test", TEST, "--speed", "0")
    assert second["run_id"] != first["run_id"]
    assert {s["station"]: s["alarm_s"] for s in second["stations"]} == got  # type: ignore[attr-defined]
    records = list(alert_records(ports().store))
    for run_id in (first["run_id"], second["run_id"]):  # new incidents each time
        mine = [r for r in records if r.alert.device_id.startswith(f"{run_id}.")]
        assert len({r.alert.alert_id for r in mine}) >= alarms


@pytest.mark.slow
def test_agents_feed_sends_a_landed_file_and_reports_each_device(
    tmp_path: Path, env: dict[str, str]
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    lines = ["device_id,ts,temperature_f,smoke_obscuration_pct_per_m"]
    for k in range(120):
        ts = (start + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        hot = k >= 60
        lines.append(f"kitchen,{ts},{203.0 if hot else 70.0},{6.0 if hot else 0.1}")
        lines.append(f"hall,{ts},70.0,0.1")
    lines.append(f"hall,{start:%Y-%m-%dT%H:%M:%SZ},5000.0,0.1")  # quarantined: out of range
    landed = tmp_path / "readings.csv"
    landed.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [FIREPIPE, "agents", "feed", str(landed), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["readings"] == 240
    assert report["quarantined"] >= 1
    alarms = {d["device_id"]: d["alarms"] for d in report["devices"]}
    # 203 degF is 95 degC: the sample detector alarms at the first hot reading
    assert alarms == {"kitchen": [(start + timedelta(seconds=60)).isoformat()], "hall": []}

    bad = tmp_path / "readings.xlsx"
    bad.write_bytes(b"x")
    refused = subprocess.run(
        [FIREPIPE, "agents", "feed", str(bad)], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith(f"Error: {bad}: unsupported_format")
