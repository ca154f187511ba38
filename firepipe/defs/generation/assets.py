"""Synthetic readings: the physics simulator's output, landed in bronze.

Partitions are scenario family x batch, both static:

- family (baseline, flaming, smouldering, nuisance) is the unit the checks judge (scenario mix
  within a family, distributions against the family's reference batch) and the unit of hold-out
  splits downstream, so one family is one generator run with one expected mix.
- batch "000".."015" is a fixed set of slices of the same distribution. A static set keeps
  partition keys, seeds and reference partitions ("000" of each family) stable in code and
  reviewable, lets the UI show the whole grid and backfill any part of it, and bounds the
  fan-out onto AWS Batch to 64 jobs (run side by side up to the compute's max_concurrent). A
  bigger data set is more devices per batch (run config), not more keys; dynamic partitions
  would make the key set live only in the instance database.

Each partition's seed is `seed * 10_000 + family_index * 1_000 + batch`, distinct for every
(config seed, family, batch), so partitions never repeat devices. The generator runs through the
`generator_compute` resource (a subprocess locally, AWS Batch in AWS), writes Parquet files into a
per-run staging folder inside the table's own location, and the asset then commits them to
`bronze.synthetic_readings` in one Iceberg transaction that replaces exactly the partitions of the
run: a crash before the commit leaves no partial data, and re-running never duplicates.
"""

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl

from firepipe import names
from firepipe.core.history import GenerationRecord
from firepipe.core.simulation import scenarios
from firepipe.core.simulation.simulator import GenerationSpec
from firepipe.defs.generation import checks
from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import write_metadata
from firepipe.resources.compute import GenerationReport, GenerationRequest, GeneratorCompute
from firepipe.resources.history import GenerationHistory
from firepipe.resources.lakehouse import Lakehouse

ASSET_KEY = checks.ASSET_KEY
TABLE = names.table_name(names.SYNTHETIC_READINGS)
FAMILIES = scenarios.FAMILIES
BATCHES = tuple(f"{i:03d}" for i in range(16))
FAMILY_DIM, BATCH_DIM = "family", "batch"
PARTITION_COLUMNS = {FAMILY_DIM: "scenario_family", BATCH_DIM: "batch"}
PARTITIONS = dg.MultiPartitionsDefinition(
    {
        FAMILY_DIM: dg.StaticPartitionsDefinition(list(FAMILIES)),
        BATCH_DIM: dg.StaticPartitionsDefinition(list(BATCHES)),
    }
)
# Seeds per config seed and per family: batches stay below 1_000, families below 10.
SEED_STRIDE_PER_CONFIG_SEED = 10_000
SEED_STRIDE_PER_FAMILY = 1_000


class SyntheticReadingsConfig(dg.Config):
    """How much synthetic data each partition gets, and where it is computed."""

    # 100 devices a partition: enough for the distribution check to tell a real shift from the
    # room-to-room spread of a handful of devices (see checks.KS_DEVICE_SIGNIFICANCE).
    devices: int = 100
    duration_s: int = 600
    sites: int = 4
    seed: int = 0
    fault_share: float = 0.05
    start: str = "2026-01-01T00:00:00+00:00"
    backend: str = "numpy"
    use_gpu: bool | None = None  # None: the generator_compute resource's own setting


def partition_seed(seed: int, family: str, batch: str) -> int:
    """The simulator seed of one partition, distinct for every (seed, family, batch)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if family not in FAMILIES or not batch.isdigit() or int(batch) >= SEED_STRIDE_PER_FAMILY:
        raise ValueError(f"no partition ({family!r}, {batch!r}): families {FAMILIES}, batch 0-999")
    family_offset = FAMILIES.index(family) * SEED_STRIDE_PER_FAMILY
    return seed * SEED_STRIDE_PER_CONFIG_SEED + family_offset + int(batch)


@dataclass(frozen=True)
class Cell:
    family: str
    batch: str

    @property
    def key(self) -> str:
        return f"{self.batch}|{self.family}"

    @property
    def scope(self) -> tuple[tables.Constraint, ...]:
        return (
            tables.Values(PARTITION_COLUMNS[BATCH_DIM], (self.batch,)),
            tables.Values(PARTITION_COLUMNS[FAMILY_DIM], (self.family,)),
        )


def partition_cells(keys: Sequence[str]) -> list[Cell]:
    by_dim = [PARTITIONS.get_partition_key_from_str(k).keys_by_dimension for k in keys]
    return [Cell(k[FAMILY_DIM], k[BATCH_DIM]) for k in by_dim]


def _spec(config: SyntheticReadingsConfig, cell: Cell) -> GenerationSpec:
    return GenerationSpec(
        devices=config.devices,
        duration_s=config.duration_s,
        sites=config.sites,
        seed=partition_seed(config.seed, cell.family, cell.batch),
        start=datetime.fromisoformat(config.start),
        families=(cell.family,),
        fault_share=config.fault_share,
    )


REFERENCE_BATCH = BATCHES[0]


def _check_results(
    lakehouse: Lakehouse, staged: Mapping[Cell, Sequence[str]]
) -> list[dg.AssetCheckResult]:
    """Every check, per family, on lazy scans of the run's staged files, before any commit.

    The blocking checks read every staged batch; the distribution check compares a family's
    other batches with its reference batch "000" (staged in this run, or committed before); a
    run of batch "000" alone has nothing to compare with. A check passes when it passes for
    every family; its metadata keeps each family's.
    """
    options = lakehouse.storage_options() or None

    def scan(cells: Sequence[Cell]) -> pl.LazyFrame:
        return pl.scan_parquet([f for c in cells for f in staged[c]], storage_options=options)

    table_exists = lakehouse.catalog().table_exists(TABLE)  # once, not per family
    per_family: dict[str, list[dg.AssetCheckResult]] = {}
    for family in sorted({c.family for c in staged}):
        cells = sorted((c for c in staged if c.family == family), key=lambda c: c.batch)
        compared = [c for c in cells if c.batch != REFERENCE_BATCH]
        reference_cell = Cell(family, REFERENCE_BATCH)
        reference: pl.LazyFrame | None = None
        if compared and reference_cell in staged:
            reference = scan([reference_cell])
        elif compared and table_exists:
            committed = lakehouse.scan(TABLE, _scope([reference_cell]))
            reference = committed if committed.select(pl.len()).collect().item() else None
        judged = [name for name in checks.CHECK_NAMES if name != checks.DISTRIBUTION]
        per_family[family] = [
            *checks.evaluate_checks(
                scan(cells), family=family, reference=None, reference_label="", names=judged
            ),
            *checks.evaluate_checks(
                scan(compared or cells),
                family=family,
                reference=reference,
                reference_label=reference_cell.key,
                names=[checks.DISTRIBUTION],
            ),
        ]
    merged = []
    for spec in checks.check_specs():
        results = {
            family: next(r for r in results if r.check_name == spec.name)
            for family, results in per_family.items()
        }
        failed = sorted(f for f, r in results.items() if not r.passed)
        merged.append(
            dg.AssetCheckResult(
                check_name=spec.name,
                passed=not failed,
                severity=next(iter(results.values())).severity,
                metadata={
                    "families": ", ".join(results),
                    "failed_families": ", ".join(failed) or "none",
                    **{f"{f}/{k}": v for f, r in results.items() for k, v in r.metadata.items()},
                },
            )
        )
    return merged


def _scope(cells: Sequence[Cell]) -> tables.Scope:
    return tables.Scope(tuple(cell.scope for cell in cells))


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
    specs = {cell: _spec(config, cell) for cell in cells}
    staging = lakehouse.staging_directory(TABLE, context.run.run_id)
    reports: dict[Cell, GenerationReport] = {}
    started: dict[Cell, datetime] = {}

    def record(cell: Cell, status: str, where: str) -> None:
        report = reports.get(cell) if status == "succeeded" else None
        elapsed = (datetime.now(UTC) - started[cell]).total_seconds()
        generation_history.record(
            GenerationRecord(
                run_id=context.run.run_id,
                asset_key=ASSET_KEY.to_user_string(),
                partition_key=cell.key,
                spec=specs[cell].to_json(),
                seed=specs[cell].seed,
                rows=report.rows if report else 0,
                location=where,
                started_at=started[cell],
                duration_s=report.seconds if report else elapsed,
                backend=report.backend if report else config.backend,
                status=status,
                dagster_job=context.job_name,
                dagster_run_id=context.run.run_id,
            )
        )

    try:
        stop = threading.Event()

        def generate(cell: Cell) -> GenerationReport:
            started[cell] = datetime.now(UTC)
            return generator_compute.generate(
                context,
                GenerationRequest(
                    spec=specs[cell],
                    directory=_writer_path(
                        f"{staging}/scenario_family={cell.family}/batch={cell.batch}"
                    ),
                    backend=config.backend,
                    use_gpu=config.use_gpu,
                    constant_columns={PARTITION_COLUMNS[BATCH_DIM]: cell.batch},
                    storage_options=lakehouse.storage_options(),
                ),
                stop,
            )

        if generator_compute.max_concurrent == 1:
            # On the step's own thread, where Dagster delivers an interrupt.
            reports.update({cell: generate(cell) for cell in cells})
        else:
            # Side by side; the first failure, or an interrupt of the step (which only the main
            # thread sees), stops the others: Batch jobs are terminated, not left running.
            with ThreadPoolExecutor(generator_compute.max_concurrent) as pool:
                futures = {cell: pool.submit(generate, cell) for cell in cells}
                try:
                    wait(futures.values(), return_when=FIRST_EXCEPTION)
                finally:
                    stop.set()
                    for future in futures.values():
                        future.cancel()
            ran = [f for f in futures.values() if not f.cancelled()]
            failures = [error for f in ran if (error := f.exception()) is not None]
            if failures:
                raise failures[0]
            reports.update({cell: future.result() for cell, future in futures.items()})
        staged = {cell: _as_uri(report.files, staging) for cell, report in reports.items()}
        # Write, audit, publish: the blocking checks judge the staged files, and only data
        # that passes them is committed.
        check_results = _check_results(lakehouse, staged)
        failed = [r for r in check_results if not r.passed and r.check_name in checks.BLOCKING]
        if failed:
            yield from check_results  # recorded in the check history, then the run fails
            raise dg.Failure(
                description="blocking checks failed on the generated rows, nothing committed: "
                + ", ".join(
                    f"{r.check_name} ({r.metadata['failed_families'].value})" for r in failed
                ),
                metadata={r.check_name: dg.MetadataValue.json(_plain(r.metadata)) for r in failed},
            )
        files = [f for cell_files in staged.values() for f in cell_files]
        partitioning = [tables.PartitionColumn(c) for c in sorted(PARTITION_COLUMNS.values())]
        result = lakehouse.commit_staged(TABLE, files, partitioning, _scope(cells))
    except BaseException:
        # Nothing was committed: the staged files of this run belong to no table snapshot.
        lakehouse.discard_staged(staging)
        for cell in started:
            record(cell, "failed", staging)
        raise
    for cell in cells:
        record(cell, "succeeded", result.location)

    seconds = sum(r.seconds for r in reports.values())
    rows_by_partition = {cell.key: reports[cell].rows for cell in cells}
    yield dg.MaterializeResult(
        metadata={
            # One result covers every partition of the run: its row count is the run's.
            **write_metadata(result, row_count=len(cells) == 1),
            "rows_by_partition": rows_by_partition,
            "files": len(files),
            "generation_seconds": round(seconds, 3),
            "rows_per_s": round(result.rows_written / seconds) if seconds > 0 else 0,
            "backends": ", ".join(sorted({r.backend for r in reports.values()})),
            "seeds": {cell.key: specs[cell].seed for cell in cells},
        }
    )
    yield from check_results


def _plain(metadata: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(getattr(v, "value", v)) for k, v in metadata.items()}


def _writer_path(uri: str) -> str:
    """The generator writes to a local path or an s3:// URI; a local table location is file://."""
    return uri.removeprefix("file://")


def _as_uri(files: Sequence[str], staging: str) -> list[str]:
    """The generator reports local files as paths; the table refers to them as file:// URIs."""
    if not staging.startswith("file://"):
        return list(files)
    return [f if "://" in f else f"file://{f}" for f in files]
