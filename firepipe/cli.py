"""`firepipe`: the command line for people and scripts outside the Dagster UI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from firepipe import settings

if TYPE_CHECKING:
    from firepipe.resources.lakehouse.catalogs import Lakehouse


def _lakehouse() -> Lakehouse:
    # Imported here so `firepipe --help` answers without loading dagster and pyiceberg.
    from firepipe.resources import lakehouse_for

    resource = lakehouse_for(settings.environment(), settings.local_paths())
    # Resolves dg.EnvVar fields the way a Dagster run would.
    return resource.process_config_and_initialize()


def _dagster_home() -> Path:
    raw = os.environ.get("DAGSTER_HOME")
    home = Path(raw) if raw else settings.local_paths().dagster_home
    if not home.is_dir():
        raise click.ClickException(f"no Dagster instance at {home}: run `make run` first")
    return home


@click.group()
def main() -> None:
    """firepipe: synthetic fire-sensor data, lakehouse and detectors on Dagster."""


@main.command()
def home() -> None:
    """Create the local home (with its Dagster instance config) and print where it is."""
    paths = settings.local_paths()
    settings.ensure_dagster_home(paths)
    click.echo(paths.home)


@main.command()
@click.option("--job", default="end_to_end", show_default=True, help="Job whose last run to show.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def summary(job: str, as_json: bool) -> None:
    """What the last run of JOB materialised, and where the data is."""
    import dataclasses

    import dagster as dg

    from firepipe.run_summary import last_run, render

    home = _dagster_home()
    instance = dg.DagsterInstance.from_config(str(home))
    result = last_run(instance, job, _lakehouse())
    if result is None:
        raise click.ClickException(f"no run of {job} in the Dagster instance at {home}")
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), default=str))
    else:
        click.echo(render(result, str(home)))
    if not result.succeeded:
        sys.exit(1)


@main.group()
def lake() -> None:
    """Look at the lakehouse tables."""


@lake.command("tables")
def lake_tables() -> None:
    """List every table with its row count."""
    house = _lakehouse()
    for identifier in house.list_tables():
        click.echo(f"{identifier:<40}{house.table_rows(identifier):>14,}")


@lake.command("show")
@click.argument("table")
@click.option("--limit", default=10, show_default=True)
def lake_show(table: str, limit: int) -> None:
    """Print the first rows of TABLE (namespace.name)."""
    import polars as pl

    from firepipe.resources.lakehouse.tables import LakehouseError

    try:
        frame = _lakehouse().scan(table).head(limit).collect()
    except LakehouseError as e:
        raise click.ClickException(str(e)) from e
    with pl.Config(tbl_cols=-1, tbl_width_chars=200):
        click.echo(frame)


@main.command()
@click.argument("suites", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per figure and line.")
@click.option("--rows", type=int, default=None, help="Override each suite's data size.")
@click.option(
    "--repeats", type=int, default=3, show_default=True, help="Best of at least this many."
)
@click.option(
    "--min-seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="Keep sampling each figure until this much time was measured (at most 50 calls).",
)
def bench(
    suites: tuple[str, ...], as_json: bool, rows: int | None, repeats: int, min_seconds: float
) -> None:
    """Run benchmark SUITES (all when none is named) and print their figures."""
    from firepipe.bench import BenchOptions, render_table
    from firepipe.bench.suites import SUITES

    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise click.BadParameter(
            f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}"
        )
    options = BenchOptions(rows=rows, repeats=repeats, min_seconds=min_seconds)
    figures = []
    for name in suites or tuple(SUITES):
        for figure in SUITES[name](options):
            figures.append(figure)
            if as_json:
                click.echo(json.dumps(figure.as_json()))
    if not as_json:
        click.echo(render_table(figures))


if __name__ == "__main__":
    main()
