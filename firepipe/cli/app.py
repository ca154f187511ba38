"""`firepipe`: the command line for people and scripts outside the Dagster UI.

Each command imports what it needs when it runs, so `firepipe --help` answers without loading
dagster, polars or pyiceberg; nothing here imports `firepipe.defs`.
"""

from __future__ import annotations

import click

from firepipe.cli import bench, generate, lake, models, runs


@click.group()
def main() -> None:
    """firepipe: synthetic fire-sensor data, lakehouse and detectors on Dagster."""


for command in (
    runs.home,
    runs.seed,
    runs.summary,
    runs.history,
    generate.generate,
    models.calibrate,
    models.evaluate_real,
    models.promote,
    lake.features,
    lake.lake,
    bench.bench,
):
    main.add_command(command)
