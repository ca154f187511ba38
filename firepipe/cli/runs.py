"""Commands about the local home and the runs: home, seed, summary, history."""

from __future__ import annotations

import json
import sys

import click

from firepipe import settings
from firepipe.cli.context import dagster_home, initialised, lakehouse, model_registry


@click.command()
def home() -> None:
    """Create the local home (with its Dagster instance config) and print where it is."""
    paths = settings.local_paths()
    settings.ensure_dagster_home(paths)
    click.echo(paths.home)


@click.command()
def seed() -> None:
    """Fill the local field sources: the DuckDB field warehouse (the NIST tests replayed as
    field devices, once; then the field stream's readings since the last call, at most 5
    minutes of them)
    and demo files in the landing folder (once)."""
    import time

    from firepipe.lib.field_seed import seed_landing, seed_local_warehouse
    from firepipe.resources import LOCAL_FIELD_TABLE, resource_for

    if settings.environment() is not settings.Environment.LOCAL:
        raise click.ClickException(
            "firepipe seed fills the local stand-ins only; in AWS the field data is in "
            "Snowflake and files land in the S3 landing bucket"
        )
    paths = settings.local_paths()
    try:
        nist_folder = settings.nist_data_dir()
    except settings.SettingsError as e:
        raise click.ClickException(str(e)) from e
    rows = seed_local_warehouse(str(paths.field_warehouse), LOCAL_FIELD_TABLE, nist_folder)
    click.echo(f"field warehouse {paths.field_warehouse}: {rows:,} rows added")
    zone = resource_for("landing_zone", settings.Environment.LOCAL, paths)
    dropped = seed_landing(zone)
    click.echo(f"landing folder {paths.landing}: {len(dropped)} file(s) dropped")
    for key in dropped:
        click.echo(f"  {key}")
    if dropped:
        # Ingestion takes only files older than the zone's settle time: wait it out, so a run
        # started right after this sees them.
        time.sleep(zone.settle_s)


@click.command()
@click.option("--job", default="end_to_end", show_default=True, help="Job whose last run to show.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def summary(job: str, as_json: bool) -> None:
    """What the last run of JOB materialised, and where the data is."""
    import dataclasses

    import dagster as dg

    from firepipe.cli.summary import last_run, render

    home = dagster_home()
    instance = dg.DagsterInstance.from_config(str(home))
    result = last_run(instance, job, lakehouse())
    if result is None:
        raise click.ClickException(f"no run of {job} in the Dagster instance at {home}")
    result.where["models"] = model_registry().describe()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), default=str))
    else:
        click.echo(render(result, str(home)))
    if not result.succeeded:
        sys.exit(1)


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record and line.")
def history(limit: int, as_json: bool) -> None:
    """The latest generation runs, newest first (SQLite locally, DynamoDB with FIREPIPE_ENV=aws)."""
    from firepipe.resources import resource_for

    store = initialised(
        resource_for("generation_history", settings.environment(), settings.local_paths())
    )
    records = store.recent(limit)
    if as_json:
        for record in records:
            click.echo(json.dumps(record.to_flat()))
        return
    if not records:
        click.echo(f"no generation runs recorded ({store.describe()})")
        return
    click.echo(
        f"{'started (UTC)':<21}{'asset':<28}{'partition':<16}{'rows':>14}{'seconds':>10}"
        f"  {'seed':<8}{'backend':<10}{'status':<11}who"
    )
    for r in records:
        click.echo(
            f"{r.started_at:%Y-%m-%d %H:%M:%S}  {r.asset_key:<28}{r.partition_key or '-':<16}"
            f"{r.rows:>14,}{r.duration_s:>10.1f}  {r.seed:<8}{r.backend:<10}{r.status:<11}"
            f"{r.user}@{r.host}"
        )
