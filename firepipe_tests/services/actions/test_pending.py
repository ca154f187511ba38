"""The file of runs a service executes itself: claimed once, released when their claimant
died, kept with the reason when they could not start."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from firepipe.services.actions.pending import PendingRuns, _alive, this_process

CONFIG = {"ops": {"bronze__synthetic_readings": {"config": {"devices": 2}}}}


def queue(tmp_path: Path) -> PendingRuns:
    pending = PendingRuns(str(tmp_path / "pending.db"))
    pending.add("gen-1", [("r1", "001|flaming", CONFIG), ("r2", "001|smouldering", CONFIG)])
    pending.add("gen-2", [("r3", "002|flaming", CONFIG)])
    return pending


def test_each_run_is_claimed_once_oldest_first(tmp_path: Path) -> None:
    pending = queue(tmp_path)
    first, second = pending.claim_next("host:1"), pending.claim_next("host:2")
    third, none = pending.claim_next("host:1"), pending.claim_next("host:3")
    assert [r.run_id for r in (first, second, third) if r] == ["r1", "r2", "r3"]
    assert none is None
    assert first is not None
    assert first.run_config == CONFIG
    assert first.generation_id == "gen-1"


def test_a_dead_claimants_runs_are_released_and_others_kept(tmp_path: Path) -> None:
    pending = queue(tmp_path)
    pending.claim_next("dead:1")
    pending.claim_next("alive:2")
    assert pending.release_dead(alive=lambda owner: owner.startswith("alive")) == 1
    again = pending.claim_next("host:3")
    assert again is not None
    assert again.run_id == "r1"


def test_done_removes_and_failed_keeps_the_reason(tmp_path: Path) -> None:
    pending = queue(tmp_path)
    pending.done("r1")
    pending.failed("r2", "ImportError: no code")
    assert [(r.run_id, r.status, r.reason) for r in pending.rows("gen-1")] == [
        ("r2", "FAILURE", "ImportError: no code")
    ]
    claimed = pending.claim_next("host:1")
    assert claimed is not None
    assert claimed.run_id == "r3"  # a failed run is not started again
    assert pending.claim_next("host:1") is None


def test_this_process_is_alive_and_a_finished_one_is_not() -> None:
    assert _alive(this_process())
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert not _alive(f"{socket.gethostname()}:{child}:token")
    assert _alive(f"another-host:{child}:token")  # another host's process cannot be checked
    # an earlier process with this process's pid (a restarted container is pid 1 again)
    assert not _alive(f"{socket.gethostname()}:{os.getpid()}:an-earlier-process")


def test_an_empty_generation_id_finds_no_rows(tmp_path: Path) -> None:
    assert queue(tmp_path).rows("") == []
