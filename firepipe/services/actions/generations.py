"""getGeneration and listGenerations: one generation as the history and Dagster know it.

The generation history is the one record of what was generated: a custom table is recorded
there under CUSTOM_ASSET with its generation id as the record's run id; a fire generation's
partitions are recorded by the bronze asset under the Dagster run id of each run, and the
runs carry the generation id as a tag (runs.GENERATION_TAG), so a generation's records are
found by run id, however old.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from firepipe import names
from firepipe.core.genai.fire_request import DATA_TYPE as FIRE
from firepipe.core.history import GenerationRecord, timestamp_text
from firepipe.core.simulation.partitions import SEED_STRIDE_PER_CONFIG_SEED
from firepipe.services.actions.fire import TABLE, run_infos
from firepipe.services.actions.models import Generation, PartitionQuality, QualitySummary
from firepipe.services.actions.runs import FireRuns, RunState, generation_status

CUSTOM_ASSET = "genai/custom_table"
FIRE_ASSET = "/".join(names.SYNTHETIC_READINGS)


def find(generation_id: str, runs: FireRuns, history: Any) -> Generation | None:
    """The generation with this id, or None."""
    fire = _fire_of(generation_id, runs, history)
    if fire is not None:
        return fire
    custom = history.of_run(CUSTOM_ASSET, generation_id)
    return _custom(custom[0]) if custom else None


def latest(limit: int, runs: FireRuns, history: Any) -> list[Generation]:
    """The latest `limit` generations of both kinds, newest first: the newest ids of each kind
    are merged first, so only the fire generations listed are looked up, each once."""
    custom: list[tuple[datetime, GenerationRecord | str]] = [
        (r.started_at, r) for r in history.recent(limit, asset_key=CUSTOM_ASSET)
    ]
    fire: list[tuple[datetime, GenerationRecord | str]] = [
        (created, generation_id) for generation_id, created in runs.generations(limit)
    ]
    newest = sorted([*custom, *fire], key=lambda item: item[0], reverse=True)[:limit]
    found = [
        _custom(entry) if isinstance(entry, GenerationRecord) else _fire_of(entry, runs, history)
        for _, entry in newest
    ]
    return [generation for generation in found if generation is not None]


def _fire_of(generation_id: str, runs: FireRuns, history: Any) -> Generation | None:
    states = runs.runs_of(generation_id)
    if not states:
        return None
    records = [r for s in states for r in history.of_run(FIRE_ASSET, s.run_id)]
    return _fire(generation_id, states, records)


def _custom(record: GenerationRecord) -> Generation:
    return Generation(
        generation_id=record.run_id,
        data_type="custom",
        status="completed" if record.status == "succeeded" else record.status,
        records_generated=record.rows,
        output_location=record.location,
        started_at=timestamp_text(record.started_at),
        duration_s=round(record.duration_s, 3),
        seed=record.seed,
    )


def _fire(
    generation_id: str, states: Sequence[RunState], records: list[GenerationRecord]
) -> Generation:
    succeeded = [r for r in records if r.status == "succeeded"]
    started = min((r.started_at for r in records), default=None)
    return Generation(
        generation_id=generation_id,
        data_type=FIRE,
        status=generation_status(states),
        records_generated=sum(r.rows for r in succeeded),
        output_location=succeeded[0].location if succeeded else TABLE,
        started_at=None if started is None else timestamp_text(started),
        duration_s=round(sum(r.duration_s for r in records), 3) if records else None,
        # A partition's seed is the request's seed times the stride plus family and batch.
        seed=records[0].seed // SEED_STRIDE_PER_CONFIG_SEED if records else None,
        runs=run_infos(states),
        partitions=sorted({s.partition_key for s in states if s.partition_key}),
        quality_summary=_summary(states, succeeded),
    )


def _summary(
    states: Sequence[RunState], succeeded: list[GenerationRecord]
) -> QualitySummary | None:
    """The bronze checks' outcomes per partition of the runs that evaluated them, with the
    rows each wrote once its run succeeded; None before any check has run."""
    rows = {r.partition_key: r.rows for r in succeeded}
    partitions = [
        PartitionQuality(
            partition=s.partition_key or "",
            passed=sorted(name for name, ok in s.checks.items() if ok),
            failed=sorted(name for name, ok in s.checks.items() if not ok),
            rows=rows.get(s.partition_key) if s.status == "SUCCESS" else None,
        )
        for s in states
        if s.checks
    ]
    if not partitions:
        return None
    return QualitySummary(passed=not any(p.failed for p in partitions), partitions=partitions)
