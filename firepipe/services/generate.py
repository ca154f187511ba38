"""The generator as a Dagster Pipes workload: `python -m firepipe.services.generate`.

Dagster starts it through a `GeneratorCompute` resource: in a local subprocess, or in a container
on AWS Batch (CPU or GPU queue). It reads what to generate from the Pipes extras, streams the
simulator's Parquet files into the given directory, logs progress through Pipes and reports what
it wrote as one custom message. It reports no materialisation: the asset commits the files to
Iceberg and materialises then, with the snapshot id. For runs by hand use `firepipe generate`.

On AWS the Pipes context and messages travel through S3: the bootstrap parameters Dagster sets
name a bucket, and then the S3 loader and writer are used (credentials from the task role).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dagster_pipes import PipesContext

from firepipe.core.simulation.simulator import GenerationSpec, write_parquet
from firepipe.services.pipes_io import run_under_pipes

# The Pipes extras the entry point reads; GeneratorCompute writes them.
EXTRA_SPEC = "spec"
EXTRA_DIRECTORY = "directory"
EXTRA_BACKEND = "backend"
EXTRA_CONSTANT_COLUMNS = "constant_columns"
EXTRA_STORAGE_OPTIONS = "storage_options"
EXTRA_WORKERS = "workers"
# The key of the custom message that carries the report.
REPORT_KIND = "firepipe.generation"

# Progress is logged at most this often: a line per chunk would flood the Dagster event log on
# a billion-row run (a chunk takes well under a second). Chosen, not measured.
PROGRESS_INTERVAL_S = 5.0


class GenerateRequestError(ValueError):
    """The Pipes extras do not describe a generation this entry point can run."""


def _string_map(extras: Mapping[str, Any], key: str) -> dict[str, str]:
    value = extras.get(key) or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise GenerateRequestError(f"extra {key!r} must map strings to strings, got {value!r}")
    return dict(value)


def run(pipes: PipesContext) -> dict[str, Any]:
    """Generate what the extras ask for and report it; returns the report."""
    extras = pipes.extras
    missing = [k for k in (EXTRA_SPEC, EXTRA_DIRECTORY) if k not in extras]
    if missing:
        raise GenerateRequestError(f"the Pipes extras lack {missing}; got {sorted(extras)}")
    spec = GenerationSpec.from_json(extras[EXTRA_SPEC])
    directory = str(extras[EXTRA_DIRECTORY])
    backend = str(extras.get(EXTRA_BACKEND) or "numpy")
    expected_rows = spec.rows
    done = 0
    last_log = time.monotonic()

    def progress(added_rows: int) -> None:
        nonlocal done, last_log
        done += added_rows
        now = time.monotonic()
        if now - last_log >= PROGRESS_INTERVAL_S or done >= expected_rows:
            last_log = now
            pipes.log.info(
                f"generated {done:,} of {expected_rows:,} rows ({done / expected_rows:.0%})"
            )

    pipes.log.info(
        f"generating {expected_rows:,} rows ({spec.devices} devices x {spec.duration_s} s, "
        f"families {', '.join(spec.families)}, seed {spec.seed}) with {backend} into {directory}"
    )
    optional: dict[str, Any] = {}
    if extras.get(EXTRA_WORKERS):
        optional["workers"] = int(extras[EXTRA_WORKERS])
    result = write_parquet(
        spec,
        directory,
        backend=backend,
        constant_columns=_string_map(extras, EXTRA_CONSTANT_COLUMNS),
        storage_options=_string_map(extras, EXTRA_STORAGE_OPTIONS) or None,
        progress=progress,
        **optional,
    )
    report = {
        "kind": REPORT_KIND,
        "rows": result.rows,
        "files": list(result.files),
        "seconds": result.seconds,
        "backend": backend,
    }
    pipes.log.info(
        f"wrote {result.rows:,} rows in {len(result.files)} file(s) in {result.seconds:.1f} s"
    )
    pipes.report_custom_message(report)
    return report


def main() -> None:
    run_under_pipes(
        run,
        outside_dagster=(
            "firepipe.services.generate runs under Dagster Pipes (the GeneratorCompute resource "
            "starts it); to generate by hand use `firepipe generate`"
        ),
    )


if __name__ == "__main__":
    main()
