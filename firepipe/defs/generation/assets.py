"""Synthetic readings: the physics simulator's output, landed in bronze.

Partitioned by scenario family x batch (firepipe.defs.generation.partitions); each partition's
seed and spec come from firepipe.core.simulation.partitions, the same function
`firepipe generate --family F --batch B` calls. The generator runs through the
`generator_compute` resource (subprocesses locally, AWS Batch jobs in AWS), all of a run's
partitions side by side, and writes Parquet files into a per-run staging folder inside the
table's own location; the checks judge them, and only then are they committed to
`bronze.synthetic_readings` in one Iceberg transaction that replaces exactly the partitions of
the run (`stage_check_commit`): a crash or a failed blocking check leaves no partial data, and
re-running never duplicates.

The generation history gets one record per partition the compute really started, with when it
started and, if it finished, what it reported; a partition it never started has none.
"""

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from firepipe import names
from firepipe.core.history import GenerationRecord
from firepipe.core.simulation.partitions import (
    PartitionGeneration,
    PartitionSettings,
    partition_generation,
)
from firepipe.defs.generation import checks
from firepipe.defs.generation.partitions import (
    PARTITION_COLUMNS,
    PARTITIONS,
    Cell,
    cells_scope,
    partition_cells,
)
from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import write_metadata
from firepipe.lib.lakehouse.staged import stage_check_commit
from firepipe.resources.compute import (
    GenerationProgress,
    GenerationReport,
    GenerationRequest,
    GeneratorCompute,
)
from firepipe.resources.history import GenerationHistory
from firepipe.resources.lakehouse import Lakehouse

ASSET_KEY = checks.ASSET_KEY
TABLE = checks.TABLE
_DEFAULTS = PartitionSettings()


class SyntheticReadingsConfig(dg.Config):
    """How much synthetic data each partition gets, and where it is computed."""

    # 100 devices a partition: enough for the distribution check to tell a real shift from the
    # room-to-room spread of a handful of devices (core/lake/quality.py: KS_DEVICE_SIGNIFICANCE).
    devices: int = _DEFAULTS.devices
    duration_s: int = _DEFAULTS.duration_s
    sites: int = _DEFAULTS.sites
    seed: int = _DEFAULTS.seed
    fault_share: float = _DEFAULTS.fault_share
    start: str = _DEFAULTS.start
    backend: str = "numpy"
    use_gpu: bool | None = None  # None: the generator_compute resource's own setting

    def settings(self) -> PartitionSettings:
        return PartitionSettings(
            devices=self.devices,
            duration_s=self.duration_s,
            sites=self.sites,
            seed=self.seed,
            fault_share=self.fault_share,
            start=self.start,
        )


@dataclass(frozen=True)
class Generated:
    """What the generator wrote for each partition of a run."""

    reports: dict[Cell, GenerationReport]
    by_cell: dict[Cell, list[str]]  # staged file URIs
    wall_s: float  # from handing the partitions to the compute until the last one finished

    @property
    def files(self) -> list[str]:
        return [f for files in self.by_cell.values() for f in files]


def generate_cells(
    context: dg.AssetExecutionContext,
    compute: GeneratorCompute,
    lakehouse: Lakehouse,
    config: SyntheticReadingsConfig,
    generations: dict[Cell, PartitionGeneration],
    staging: str,
    progress: GenerationProgress[Cell],
) -> Generated:
    """Every partition's files, generated together under `staging`; `progress` keeps when each
    started and what each reported."""
    requests = {
        cell: GenerationRequest(
            spec=generation.spec,
            directory=_writer_path(f"{staging}/scenario_family={cell.family}/batch={cell.batch}"),
            backend=config.backend,
            use_gpu=config.use_gpu,
            constant_columns=generation.constant_columns,
            storage_options=lakehouse.storage_options(),
        )
        for cell, generation in generations.items()
    }
    began = time.monotonic()
    reports = compute.generate_all(context, requests, progress)
    wall_s = time.monotonic() - began
    by_cell = {cell: _as_uri(report.files, staging) for cell, report in reports.items()}
    return Generated(reports, by_cell, wall_s)


@dg.asset(
    key=ASSET_KEY,
    group_name=names.group_name(names.SYNTHETIC_READINGS),
    kinds={"polars", "iceberg"},
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"partition_expr": PARTITION_COLUMNS},
    check_specs=checks.check_specs(),
)
def synthetic_readings(
    context: dg.AssetExecutionContext,
    config: SyntheticReadingsConfig,
    lakehouse: Lakehouse,
    generator_compute: GeneratorCompute,
    generation_history: GenerationHistory,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Physics-informed fire-sensor readings, one row per simulated device per second.

    Each device is a room with a ceiling-mounted multi-sensor: a clean baseline, a flaming or
    smouldering fire, or a nuisance source (cooking, steam, dust...), with sensor faults on a
    share of devices. Partitioned by scenario family x batch; the size is run config.
    """
    cells = partition_cells(context.partition_keys)
    generations = {c: partition_generation(config.settings(), c.family, c.batch) for c in cells}
    staging = lakehouse.staging_directory(TABLE, context.run.run_id)
    progress: GenerationProgress[Cell] = GenerationProgress()

    def record(cell: Cell, status: str, where: str, report: GenerationReport | None) -> None:
        started_at = progress.started[cell]
        elapsed = (datetime.now(UTC) - started_at).total_seconds()
        generation_history.record(
            GenerationRecord(
                run_id=context.run.run_id,
                asset_key=ASSET_KEY.to_user_string(),
                partition_key=cell.key,
                spec=generations[cell].spec.to_json(),
                seed=generations[cell].spec.seed,
                rows=report.rows if report else 0,
                location=where,
                started_at=started_at,
                duration_s=report.seconds if report else max(elapsed, 0.0),
                backend=report.backend if report else config.backend,
                status=status,
                dagster_job=context.job_name,
                dagster_run_id=context.run.run_id,
            )
        )

    try:
        # Write, audit, publish: only rows that pass the blocking checks are committed.
        published = stage_check_commit(
            lakehouse,
            TABLE,
            staging,
            stage=lambda folder: generate_cells(
                context, generator_compute, lakehouse, config, generations, folder, progress
            ),
            check=lambda generated: checks.audit_staged(lakehouse, generated.by_cell),
            partitioning=[tables.PartitionColumn(c) for c in sorted(PARTITION_COLUMNS.values())],
            scope=cells_scope(cells),
        )
        if published.write is None:
            yield from published.audit.results  # recorded in the check history, then the run fails
            raise checks.blocking_failure(published.audit.results)
    except BaseException:
        # Nothing was committed. A partition that finished keeps its rows and seconds, one that
        # was stopped the time until now; one the compute never started is not recorded.
        for cell in progress.started:
            record(cell, "failed", staging, progress.finished.get(cell))
        raise
    result, staged = published.write, published.staged
    for cell in cells:
        record(cell, "succeeded", result.location, staged.reports[cell])
    yield dg.MaterializeResult(
        metadata={
            # One result covers every partition of the run: its row count is the run's.
            **write_metadata(result, row_count=len(cells) == 1),
            "rows_by_partition": {cell.key: staged.reports[cell].rows for cell in cells},
            "files": len(staged.files),
            # The partitions run side by side: the run's throughput is per second of wall time.
            "generation_wall_s": round(staged.wall_s, 3),
            "rows_per_wall_s": round(result.rows_written / staged.wall_s) if staged.wall_s else 0,
            # Each generator's own seconds, added up: above the wall time when they overlapped.
            "generation_s_summed_over_partitions": round(
                sum(r.seconds for r in staged.reports.values()), 3
            ),
            "backends": ", ".join(sorted({r.backend for r in staged.reports.values()})),
            "seeds": {cell.key: generations[cell].spec.seed for cell in cells},
        }
    )
    yield from published.audit.results


def _writer_path(uri: str) -> str:
    """The generator writes to a local path or an s3:// URI; a local table location is file://."""
    return uri.removeprefix("file://")


def _as_uri(files: Sequence[str], staging: str) -> list[str]:
    """The generator reports local files as paths; the table refers to them as file:// URIs."""
    if not staging.startswith("file://"):
        return list(files)
    return [f if "://" in f else f"file://{f}" for f in files]
