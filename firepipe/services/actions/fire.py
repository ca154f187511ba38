"""Fire-scenario data through the action API: a request becomes Dagster runs of the bronze
asset (runs.py), and partitions of bronze.synthetic_readings are measured the way the bronze
checks measure them (the same comparison with the family's reference batch, the same floors)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import polars as pl

from firepipe import names
from firepipe.core.genai.fire_request import FirePlan, FireRequest, FireRequestError, plan
from firepipe.core.lake import quality
from firepipe.core.readings import CHANNEL_NAMES, KEY_COLUMNS
from firepipe.core.schemas import validate_readings
from firepipe.core.simulation.partitions import (
    BATCH_COLUMN,
    BATCHES,
    FAMILIES,
    FAMILY_COLUMN,
    REFERENCE_BATCH,
)
from firepipe.lib.lakehouse import tables
from firepipe.services.actions.models import GenerateRequest, RunInfo
from firepipe.services.actions.runs import FireRuns, RunState

TABLE = names.table_name(names.SYNTHETIC_READINGS)
_PARTITION = re.compile(r"^(\d{3})\|([a-z]+)$")


class FireError(ValueError):
    """A fire request or measurement that cannot be served; the message says why."""


class LakeError(RuntimeError):
    """The lake cannot be read here (its catalog or files are out of reach); the message
    says why."""


def launch(
    request: GenerateRequest, seed: int, generation_id: str, runs: FireRuns
) -> tuple[FirePlan, list[RunState]]:
    """The request's plan, and its runs as launched."""
    fire = FireRequest(
        devices=request.devices,
        duration_s=request.duration_s,
        seed=seed,
        fault_share=request.fault_share,
        families=request.families,
        mix=request.mix,
        use_gpu=request.use_gpu,
        batch=request.batch,
    )

    def choose(occupied: dict[str, set[str]]) -> FirePlan:
        try:
            return plan(fire, occupied)
        except FireRequestError as exc:
            raise FireError(str(exc)) from exc

    return runs.launch(generation_id, choose)


def run_infos(states: Sequence[RunState]) -> list[RunInfo]:
    return [
        RunInfo(run_id=s.run_id, partition=s.partition_key, status=s.status, checks=s.checks)
        for s in states
    ]


def parse_partitions(keys: Sequence[str]) -> list[tuple[str, str]]:
    """('batch', 'family') of each 'batch|family' key; a key that is no partition is refused."""
    cells = []
    for key in keys:
        match = _PARTITION.match(key.strip())
        if not match or match[1] not in BATCHES or match[2] not in FAMILIES:
            raise FireError(
                f"{key!r} is not a partition of {TABLE}: 'batch|family' with batch "
                f"{BATCHES[0]}-{BATCHES[-1]} and family one of {', '.join(FAMILIES)}"
            )
        cells.append((match[1], match[2]))
    return cells


def _scope(cells: Sequence[tuple[str, str]]) -> tables.Scope:
    return tables.Scope(
        tuple(
            (tables.Values(BATCH_COLUMN, (batch,)), tables.Values(FAMILY_COLUMN, (family,)))
            for batch, family in cells
        )
    )


def measure(lakehouse: Any, cells: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Completeness, validity, uniqueness and, per family, the SDMetrics-style comparison with
    the family's reference batch, of the given partitions of the bronze table. A lake that
    cannot be read raises LakeError; partitions that cannot be measured, FireError."""
    try:
        return _measure(lakehouse, cells)
    except FireError:
        raise
    except _read_errors() as exc:
        raise LakeError(f"cannot read {TABLE} from the lake: {_gist(exc)}") from exc
    except ValueError as exc:  # the measures' own refusals, e.g. a column the table lacks
        keys = ", ".join(f"{b}|{f}" for b, f in cells)
        raise FireError(f"cannot measure partitions {keys} of {TABLE}: {exc}") from exc


def _measure(lakehouse: Any, cells: Sequence[tuple[str, str]]) -> dict[str, Any]:
    if not lakehouse.catalog().table_exists(TABLE):
        raise FireError(f"the lake has no table {TABLE} yet: generate fire scenarios first")
    readings = lakehouse.scan(TABLE, _scope(cells))
    rows = int(readings.select(pl.len()).collect().item())
    if rows == 0:
        keys = ", ".join(f"{b}|{f}" for b, f in cells)
        raise FireError(f"partitions {keys} of {TABLE} hold no rows")
    # The columns that hold a value in every row but for a faulty sensor's gaps; the label and
    # fault columns are null by design (no ignition, no fault).
    present = set(readings.collect_schema().names())
    columns = [c for c in (*KEY_COLUMNS, *CHANNEL_NAMES) if c in present]
    nulls = readings.select(pl.col(columns).null_count()).collect().row(0, named=True)
    completeness = {c: round(1.0 - nulls[c] / rows, 6) for c in columns}
    ranges = quality.range_violations(readings)
    labels = quality.label_report(readings)
    contract = validate_readings(readings)
    duplicates = quality.duplicate_key_count(readings)
    by_family = {
        family: _distribution(lakehouse, readings, family, [b for b, f in cells if f == family])
        for family in sorted({f for _, f in cells})
    }
    return {
        "table": TABLE,
        "partitions": [f"{b}|{f}" for b, f in cells],
        "rows": rows,
        "completeness": {
            "overall": round(sum(completeness.values()) / len(completeness), 6),
            "fields": completeness,
        },
        "validity": {
            "schema_failures": contract,
            "range_violations": ranges,
            "label_inconsistent_rows": labels.inconsistent_rows,
            "overall": round(1.0 - min(sum(ranges.values()), rows) / rows, 6),
        },
        # Silver keeps one row per key, so a duplicate is a reading lost downstream.
        "uniqueness": {
            "key": list(KEY_COLUMNS),
            "duplicate_rows": duplicates,
            "overall": round(1.0 - duplicates / rows, 6),
        },
        "distribution_vs_reference": by_family,
    }


def _distribution(
    lakehouse: Any, readings: pl.LazyFrame, family: str, batches: Sequence[str]
) -> dict[str, Any]:
    """One family's comparison, as the bronze check makes it (quality.distribution_verdict):
    its batches other than the reference against the reference batch."""
    compared = [b for b in batches if b != REFERENCE_BATCH]
    if not compared:
        return {"note": f"batch {REFERENCE_BATCH} is the reference itself: nothing to compare"}
    candidate = readings.filter(
        (pl.col(FAMILY_COLUMN) == family) & pl.col(BATCH_COLUMN).is_in(compared)
    )
    reference = lakehouse.scan(TABLE, _scope([(REFERENCE_BATCH, family)]))
    if reference.select(pl.len()).collect().item() == 0:
        return {"note": f"no reference partition {REFERENCE_BATCH}|{family} yet"}
    verdict = quality.distribution_verdict(candidate, reference)
    report = verdict.report
    return {
        "reference": f"{REFERENCE_BATCH}|{family}",
        "compared_batches": compared,
        "ks_complement": report.ks_complement,
        "correlation_similarity": {
            f"{a} ~ {b}": s for (a, b), s in report.correlation_similarity.items()
        },
        "overall": report.overall,
        "ks_floor": round(verdict.ks_floor, 6),
        "overall_floor": round(verdict.overall_floor, 6),
        "channels_below_floor": list(verdict.channels_below_floor),
        "channels_missing_on_one_side": list(verdict.one_sided_nulls),
        "passed": verdict.passed,
        "skipped": report.skipped,
    }


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading the lake raises when its catalog or files cannot be reached: the
    service's configuration or the lake's state, not the request."""
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
    from pyiceberg import exceptions as iceberg
    from sqlalchemy.exc import SQLAlchemyError

    return (
        tables.LakehouseError,
        OSError,
        pl.exceptions.PolarsError,
        BotoCoreError,
        ClientError,
        SQLAlchemyError,
        iceberg.NoSuchTableError,
        iceberg.NoSuchNamespaceError,
        iceberg.RESTError,
    )


def _gist(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
