"""DagsterRuns on a temporary instance, without executing anything: one writer per partition
across threads and runs from elsewhere, a stopped service starting nothing more, and the
generations listed newest first a page at a time."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from firepipe import settings
from firepipe.core.genai.fire_request import FireRequest, plan
from firepipe.services.actions import runs as runs_module
from firepipe.services.actions.runs import GENERATION_TAG, DagsterRuns, PartitionBusyError


@pytest.fixture
def runs(firepipe_home: Path, monkeypatch: pytest.MonkeyPatch) -> DagsterRuns:
    settings.ensure_dagster_home()
    runs = DagsterRuns()
    monkeypatch.setattr(runs, "resume", lambda: None)  # queue only: nothing is executed here
    return runs


def flaming(batch: int | None) -> Any:
    """A plan maker: two flaming devices in `batch` (None: the lowest free one)."""
    request = FireRequest(devices=2, duration_s=30, seed=1, families=["flaming"], batch=batch)
    return lambda occupied: plan(request, occupied)


def test_two_requests_for_one_partition_at_once_queue_it_once(runs: DagsterRuns) -> None:
    outcomes: list[object] = []
    start = threading.Barrier(4)

    def ask() -> None:
        start.wait()
        try:
            outcomes.append(runs.launch(f"gen-{threading.get_ident()}", flaming(1))[1])
        except PartitionBusyError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    launched = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if isinstance(o, PartitionBusyError)]
    assert len(launched) == 1
    assert len(refused) == 3
    assert "001|flaming" in str(refused[0])
    assert [p.partition_key for p in runs.pending.rows()] == ["001|flaming"]
    assert runs.launch("gen-other", flaming(2))[1][0].partition_key == "002|flaming"


def test_requests_leaving_the_batch_out_at_once_get_distinct_batches(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two services (two DagsterRuns, as two processes would have) on one instance: only the
    file lock keeps them from choosing the same free batch."""
    settings.ensure_dagster_home()
    services = [DagsterRuns(), DagsterRuns()]
    for service in services:
        monkeypatch.setattr(service, "resume", lambda: None)
        assert service.instance is not None  # opened before the race (its storage is made once)
    chosen: list[str] = []
    start = threading.Barrier(6)

    def ask(service: DagsterRuns) -> None:
        start.wait()
        _, states = service.launch(f"gen-{threading.get_ident()}", flaming(None))
        chosen.extend(s.partition_key or "" for s in states)

    threads = [threading.Thread(target=ask, args=(services[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(chosen) == [f"00{b}|flaming" for b in range(1, 7)]


def test_a_launch_waits_for_the_lock_another_process_holds(runs: DagsterRuns) -> None:
    import fcntl

    lock = Path(runs.instance.root_directory) / runs_module.LAUNCH_LOCK_FILE
    done = threading.Event()
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: (runs.launch("gen-w", flaming(1)), done.set()))
        worker.start()
        assert not done.wait(1.0)  # held elsewhere: the launch waits
        assert runs.pending.rows() == []
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(30)
    assert done.is_set()
    assert [p.partition_key for p in runs.pending.rows()] == ["001|flaming"]


def test_a_partition_a_dagster_run_writes_is_busy(runs: DagsterRuns) -> None:
    runs.instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id="0b5e0d6c-6d7b-4a37-9d5e-5d1f0a3c2b11",
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": "003|flaming"},  # a run from the UI: no generation tag
        )
    )
    with pytest.raises(PartitionBusyError, match=re.escape("003|flaming")):
        runs.launch("gen-a", flaming(3))
    assert runs.occupied()["flaming"] == {"003"}


def test_a_stopped_service_starts_nothing_more(runs: DagsterRuns) -> None:
    runs.launch("gen-a", flaming(1))
    runs.close()
    runs._drain()  # what the worker would do now
    [left] = runs.pending.rows()
    assert left.status == "QUEUED"
    assert runs.pending.claim_next("next-service:1") is not None  # unclaimed: the next one runs it


def test_generations_are_listed_newest_first_a_page_at_a_time(
    runs: DagsterRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_module, "_PAGE", 2)
    for n, generation in enumerate(["g1", "g1", "g2", "g3", "g3", "g4"]):
        runs.instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB",
                run_id=f"00000000-0000-4000-8000-{n:012d}",
                status=dg.DagsterRunStatus.SUCCESS,
                tags={GENERATION_TAG: generation},
            )
        )
        time.sleep(0.01)  # distinct creation times
    assert [g for g, _ in runs.generations(2)] == ["g4", "g3"]
    assert [g for g, _ in runs.generations(10)] == ["g4", "g3", "g2", "g1"]


def test_a_busy_partition_is_a_409_with_the_reason(runs: DagsterRuns) -> None:
    from firepipe.services.actions.models import GenerateRequest
    from firepipe.services.actions.operations import ActionError, Actions

    actions = Actions(runs=runs)
    request = GenerateRequest.model_validate(
        {"data_type": "fire_scenarios", "families": ["flaming"], "devices": 2, "batch": 4}
    )
    actions.generate_synthetic_data(request)
    with pytest.raises(ActionError, match=re.escape("004|flaming")) as busy:
        actions.generate_synthetic_data(request)
    assert busy.value.status == 409
