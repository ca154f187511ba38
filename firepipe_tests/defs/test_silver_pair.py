"""silver's two tables across a kill: quarantine is committed first and readings publish the pair,
so a run killed before, between or after the two commits leaves every reading of the published
pair in exactly one table, new bronze rows pending, and the next run converges.

A reading moves between the tables from run to run when its `future_ts` verdict changes with the
clock: the clock runs forward (quarantine -> readings) or, standing for a rule change, backward
(readings -> quarantine). The kill is an exception no handler catches, raised in the Iceberg
write; `test_a_process_killed_between_the_commits` kills a real process with os._exit.
"""

import contextlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from firepipe.core.ingestion.landing import LANDED_SCHEMA
from firepipe.core.lake.standardise import to_silver
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.defs.lake import assets
from firepipe.defs.lake.assets import QUARANTINE_TABLE, READINGS_TABLE
from firepipe.lib.lakehouse import pairs, tables
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe_tests.defs.test_lake_assets import NO_FIELD, run

T0 = datetime.now(UTC).replace(microsecond=0)
LATER = T0 + timedelta(hours=1)
Keys = set[tuple[str, datetime]]


class Killed(BaseException):
    """The process dies here: not an Exception, so no handler on the way up cleans up."""


def landed(*rows: tuple[str, datetime, float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": [d for d, _, _ in rows],
            "ts": [t for _, t, _ in rows],
            "temperature_f": [f for _, _, f in rows],
            "source_file": [f"in/{d}.csv" for d, _, _ in rows],
            "ingested_at": [T0 - timedelta(hours=2)] * len(rows),
        }
    ).cast({"temperature_f": pl.Float32, "ts": LANDED_SCHEMA["ts"]})


SYNTHETIC = simulate(GenerationSpec(devices=2, duration_s=60, seed=3))
# m1 is stamped between the two clocks: future at T0, valid an hour later. b1 is out of range.
OLD = [
    ("l1", T0 - timedelta(hours=1), 70.0),
    ("b1", T0 - timedelta(hours=1), 5000.0),
    ("m1", T0 + timedelta(minutes=30), 70.0),
]
NEW = [("n1", T0 - timedelta(hours=1), 71.0), ("n2", T0 - timedelta(hours=1), 5000.0)]


def keys(frame: pl.DataFrame) -> Keys:
    return {(d, t) for d, t in frame.select("device_id", "ts").iter_rows()}


def expected(rows: list[tuple[str, datetime, float]], now: datetime) -> tuple[Keys, Keys]:
    result = to_silver({"synthetic": SYNTHETIC, "landed": landed(*rows)}, now=now)
    return keys(result.readings.filter(~pl.col("is_gap"))), keys(result.quarantine)


def published(lakehouse: LocalLakehouse) -> tuple[Keys, Keys]:
    """What a reader of the pair sees: readings now, quarantine at the snapshot they name."""
    snapshot = pairs.published_partner(lakehouse.catalog(), READINGS_TABLE, QUARANTINE_TABLE)
    readings = lakehouse.read(READINGS_TABLE).filter(~pl.col("is_gap"))
    return keys(readings), keys(lakehouse.scan(QUARANTINE_TABLE, snapshot_id=snapshot).collect())


def current_quarantine(lakehouse: LocalLakehouse) -> Keys:
    return keys(lakehouse.read(QUARANTINE_TABLE))


def state(lakehouse: LocalLakehouse) -> pairs.PairState:
    return pairs.pair_state(lakehouse.catalog(), READINGS_TABLE, QUARANTINE_TABLE)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """silver's clock, set by assigning clock[0]."""
    now = [T0]

    class Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return now[0]

    monkeypatch.setattr(assets, "datetime", Clock)
    return now


@pytest.fixture
def kill(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Kills silver's write at the point assigned to kill[0] ("" for none): before its first
    commit, between its two commits, or after both."""
    point = [""]
    write = tables.write_table
    committed: list[str] = []

    def killing_write(catalog, identifier, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not identifier.startswith("silver.") or not point[0]:
            return write(catalog, identifier, *args, **kwargs)
        if point[0] == "before" or (point[0] == "between" and committed):
            raise Killed(point[0])
        result = write(catalog, identifier, *args, **kwargs)
        committed.append(identifier)
        if point[0] == "after" and len(committed) == 2:
            raise Killed(point[0])
        return result

    monkeypatch.setattr(tables, "write_table", killing_write)
    return point


def materialise(lakehouse: LocalLakehouse, rows: list, synthetic: pl.DataFrame = SYNTHETIC) -> bool:
    with contextlib.suppress(Killed):
        return run(lakehouse, synthetic, NO_FIELD, landed(*rows), iceberg=True).success
    return False


@pytest.mark.parametrize("point", ["before", "between", "after"])
@pytest.mark.parametrize(("first", "second"), [(T0, LATER), (LATER, T0)], ids=["q2r", "r2q"])
def test_a_kill_at_any_point_leaves_every_reading_in_one_table_or_pending(
    lakehouse: LocalLakehouse,
    clock: list[datetime],
    kill: list[str],
    point: str,
    first: datetime,
    second: datetime,
) -> None:
    clock[0] = first
    assert materialise(lakehouse, OLD)
    before = expected(OLD, first)
    assert published(lakehouse) == before
    mover = ("m1", OLD[2][1])
    assert mover in (before[1] if first == T0 else before[0])  # it moves in the second run

    clock[0], kill[0] = second, point
    assert not materialise(lakehouse, OLD + NEW)
    after = expected(OLD + NEW, second)
    readings, quarantine = published(lakehouse)
    assert not readings & quarantine
    assert (readings, quarantine) == (after if point == "after" else before)
    # Every reading silver showed before the kill is shown once; a new one is in one table once
    # the run published, else pending (in neither, for the next run).
    for key in before[0] | before[1]:
        assert (key in readings) != (key in quarantine), key
    for device, ts, _ in NEW:
        assert ((device, ts) in readings | quarantine) == (point == "after")
    assert state(lakehouse).complete == (point != "between")
    if point == "between":  # quarantine's current snapshot is a run ahead of the readings
        assert current_quarantine(lakehouse) == after[1] != quarantine

    kill[0] = ""
    assert materialise(lakehouse, OLD + NEW)
    assert published(lakehouse) == after
    assert state(lakehouse).complete
    assert current_quarantine(lakehouse) == after[1]


def test_the_next_run_repairs_the_pair_even_when_its_checks_fail(
    lakehouse: LocalLakehouse, clock: list[datetime], kill: list[str]
) -> None:
    clock[0] = T0
    assert materialise(lakehouse, OLD)
    before = expected(OLD, T0)
    clock[0], kill[0] = LATER, "between"
    assert not materialise(lakehouse, OLD + NEW)
    assert not state(lakehouse).complete

    kill[0] = ""
    replayed = pl.concat([SYNTHETIC, SYNTHETIC.head(60)])  # fails duplicate_rate
    assert not materialise(lakehouse, OLD + NEW, replayed)
    repaired = state(lakehouse)
    assert repaired.complete
    assert repaired.current == repaired.published
    assert current_quarantine(lakehouse) == before[1]
    assert published(lakehouse) == before


CHILD = """
import os, sys
from firepipe.lib.lakehouse import tables
from firepipe_tests.defs import test_silver_pair as t
from firepipe.resources.lakehouse import LocalLakehouse

write = tables.write_table
def dying_write(catalog, identifier, *args, **kwargs):
    result = write(catalog, identifier, *args, **kwargs)
    if identifier == t.QUARANTINE_TABLE:
        os._exit(9)
    return result
if sys.argv[2] == "kill":
    tables.write_table = dying_write
t.materialise(LocalLakehouse(root=sys.argv[1]), t.OLD + (t.NEW if sys.argv[2] == "kill" else []))
"""


def test_a_process_killed_between_the_commits(tmp_path: Path) -> None:
    """os._exit right after the quarantine commit: no handler, no finally, no Dagster event."""
    root = str(tmp_path / "lake")

    def child(mode: str) -> int:
        env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
        command = [sys.executable, "-c", CHILD, root, mode]
        return subprocess.run(command, env=env, timeout=300, check=False).returncode

    assert child("complete") == 0
    lakehouse = LocalLakehouse(root=root)
    before = published(lakehouse)
    assert child("kill") == 9
    assert not state(lakehouse).complete
    assert published(lakehouse) == before
    # The child's clock made its own T0: compare devices.
    readings, quarantine = ({d for d, _ in part} for part in before)
    assert not readings & quarantine
    assert {"l1", "b1", "m1"} <= readings | quarantine
    assert "n2" in {d for d, _ in current_quarantine(lakehouse)} - quarantine  # ahead, unpublished
    assert not {"n1", "n2"} & (readings | quarantine)  # pending, for the next run
