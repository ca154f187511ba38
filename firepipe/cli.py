"""`firepipe`: the command line for people and scripts outside the Dagster UI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from firepipe import settings

if TYPE_CHECKING:
    from firepipe.resources.lakehouse.catalogs import Lakehouse
    from firepipe.resources.registry import ModelRegistry


def _initialised(resource: Any) -> Any:
    """A Dagster resource's value, its dg.EnvVar fields resolved as a run would resolve them
    (unresolved, they read as the variables' names), for the running command: its init
    context closes with the command, not in the interpreter's teardown."""
    return click.get_current_context().with_resource(resource.process_config_and_initialize_cm())


def _lakehouse() -> Lakehouse:
    # Imported here so `firepipe --help` answers without loading dagster and pyiceberg.
    from firepipe.resources import lakehouse_for

    lakehouse: Lakehouse = _initialised(
        lakehouse_for(settings.environment(), settings.local_paths())
    )
    return lakehouse


def _model_registry() -> ModelRegistry:
    from firepipe.resources import model_registry_for

    registry: ModelRegistry = _initialised(
        model_registry_for(settings.environment(), settings.local_paths())
    )
    return registry


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
def seed() -> None:
    """Fill the local field sources: the DuckDB field warehouse (the NIST tests replayed as
    field devices, once; then the next 5 minutes of a synthetic field stream on every call)
    and demo files in the landing folder (once)."""
    import time

    from firepipe.resources.field_seed import seed_landing, seed_local_warehouse
    from firepipe.resources.ingestion import LOCAL_FIELD_TABLE, landing_zone_for

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
    zone = landing_zone_for(settings.Environment.LOCAL, paths)
    dropped = seed_landing(zone)
    click.echo(f"landing folder {paths.landing}: {len(dropped)} file(s) dropped")
    for key in dropped:
        click.echo(f"  {key}")
    if dropped:
        # Ingestion takes only files older than the zone's settle time: wait it out, so a run
        # started right after this sees them.
        time.sleep(zone.settle_s)


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
    result.where["models"] = _model_registry().describe()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), default=str))
    else:
        click.echo(render(result, str(home)))
    if not result.succeeded:
        sys.exit(1)


# The folder of the NIST tests (../shared/data/nist_smoke_alarms): calibrate, evaluate-real.
NIST_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of NIST_Smoke_Alarms_*.csv tests and Activation_Times.csv "
    "[default: $FIREPIPE_NIST_DATA_DIR].",
)


@main.command()
@NIST_DATA_DIR
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the ranges [default: the committed calibrated_flaming.json].",
)
def calibrate(data_dir: Path | None, out: Path | None) -> None:
    """Refit the flaming-fire physics to the NIST fires and write the calibrated ranges."""
    from firepipe.core.nist import NistDataError
    from firepipe.core.simulation import calibrated, calibration

    try:
        folder = data_dir or settings.nist_data_dir()
        result = calibration.calibrate(folder)
    except (settings.SettingsError, NistDataError) as e:
        raise click.ClickException(str(e)) from e
    target = out or calibrated.CALIBRATED_RANGES_PATH
    calibrated.write_calibrated_ranges(result.ranges, target)
    click.echo(result.ranges.to_json(), nl=False)
    for name, value in result.summary().items():
        click.echo(f"{name:<46}{'n/a' if value is None else f'{value:.3f}'}")
    click.echo(f"wrote {target}")


@main.command("evaluate-real")
@NIST_DATA_DIR
@click.option(
    "--model",
    "model_uri",
    default=None,
    help="models:/NAME@ALIAS, models:/NAME/VERSION or a saved detector folder "
    "[default: the current champion].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--baseline", is_flag=True, help="Also replay the fixed-threshold reference (smoke, heat)."
)
@click.option(
    "--warm-up-s",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds of each station's quiet start (the median of its first 10 s) replayed before "
    "ignition; 0: the records as they are [default: 300].",
)
def evaluate_real(
    data_dir: Path | None,
    model_uri: str | None,
    as_json: bool,
    baseline: bool,
    warm_up_s: float | None,
) -> None:
    """Replay every NIST test station by station through the model, causally, and compare its
    alarm with the real smoke alarms' (Activation_Times.csv)."""
    from firepipe.core import nist
    from firepipe.core.features import default_spec
    from firepipe.core.training import real_fires
    from firepipe.defs.training.assets import MODEL_NAME
    from firepipe.resources.registry import CHAMPION_ALIAS

    try:
        folder = data_dir or settings.nist_data_dir()
        tests = nist.read_tests(folder)
        activations = nist.read_activation_times(folder)
    except (settings.SettingsError, nist.NistDataError) as e:
        raise click.ClickException(str(e)) from e
    registry = _model_registry()
    uri = model_uri or f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"
    try:
        detector = registry.load_detector(uri)
    except Exception as e:
        hint = "" if model_uri else " (no champion yet? `make run` trains and promotes one)"
        raise click.ClickException(f"cannot load the model {uri}{hint}: {e}") from e
    spec = default_spec()
    try:
        real_fires.check_feature_spec(detector, spec)
    except ValueError as e:
        raise click.ClickException(f"model {uri}: {e}") from e
    warm_up = real_fires.WARM_UP_S if warm_up_s is None else warm_up_s
    if not 0 <= warm_up <= real_fires.MAX_WARM_UP_S:  # click's FloatRange lets NaN through
        raise click.BadParameter(
            f"must be in [0, {real_fires.MAX_WARM_UP_S:g}] seconds", param_hint="--warm-up-s"
        )
    report = real_fires.replay_detector(tests, activations, detector, spec, warm_up)
    reference = (
        real_fires.fixed_threshold_baseline(tests, activations, warm_up) if baseline else None
    )
    if as_json:
        out = {"model": uri, **report.as_json()}
        if reference is not None:
            out["fixed_threshold_baseline"] = reference.summary
        click.echo(json.dumps(out, default=str))
        return
    click.echo(f"model: {uri}")
    click.echo(report.table())
    if reference is not None:
        click.echo("\nfixed-threshold reference (smoke OD +0.02 /m or temperature +5 degC):")
        click.echo("\n".join(f"{k}: {v}" for k, v in reference.summary.items()))


@main.command()
@click.argument("version", type=int)
@click.option("--reason", required=True, help="Why, recorded on the version.")
def promote(version: int, reason: str) -> None:
    """Make VERSION of the fire detector the champion by hand. For when ml/champion cannot
    compare a candidate with the champion (their NIST replays or feature specs differ)."""
    from firepipe.core.training.promotion import ApprovalError
    from firepipe.defs.training.assets import MODEL_NAME

    registry = _model_registry()
    try:
        registry.promote(MODEL_NAME, version, f"by hand: {reason}")
    except (ApprovalError, KeyError) as e:
        raise click.ClickException(str(e).strip("'\"")) from e
    click.echo(f"{MODEL_NAME} version {version} is the champion")


@main.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record and line.")
def history(limit: int, as_json: bool) -> None:
    """The latest generation runs, newest first (SQLite locally, DynamoDB with FIREPIPE_ENV=aws)."""
    from firepipe.resources import generation_history_for

    store = _initialised(generation_history_for(settings.environment(), settings.local_paths()))
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


@main.group()
def features() -> None:
    """Versions of the feature table and what changed between them."""


FEATURE_TABLE = "gold.sensor_features"


@features.command("versions")
@click.option("--table", default=FEATURE_TABLE, show_default=True)
def features_versions(table: str) -> None:
    """Every Iceberg snapshot of the feature table, oldest first."""
    from firepipe.resources.lakehouse.tables import LakehouseError

    try:
        snapshots = _lakehouse().snapshots(table)
    except LakehouseError as exc:
        raise click.ClickException(str(exc)) from exc
    for s in snapshots:
        rows = f"{s.rows:>12,}" if s.rows is not None else " " * 12
        click.echo(
            f"{s.snapshot_id:<22}{s.committed_at:%Y-%m-%d %H:%M:%S}  {s.operation:<10}{rows}"
        )


@features.command("diff")
@click.argument("before", type=int)
@click.argument("after", type=int)
@click.option("--table", default=FEATURE_TABLE, show_default=True)
@click.option("--sample-rows", type=click.IntRange(min=1), default=200_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def features_diff(before: int, after: int, table: str, sample_rows: int, as_json: bool) -> None:
    """What changed between two snapshots (BEFORE, AFTER) of the feature table: columns added,
    removed or retyped, and the distribution shift of each shared column (KS complement)."""
    from dataclasses import asdict

    from firepipe.core.features import diff_features
    from firepipe.resources.lakehouse.tables import LakehouseError

    lake = _lakehouse()
    try:
        diff = diff_features(
            lake.scan(table, snapshot_id=before),
            lake.scan(table, snapshot_id=after),
            sample_rows=sample_rows,
        )
    except LakehouseError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(asdict(diff)))
        return
    click.echo(
        f"{table}: {before} ({diff.rows_before:,} rows) -> {after} ({diff.rows_after:,} rows)"
    )
    click.echo(f"added:   {', '.join(diff.added) or '-'}")
    click.echo(f"removed: {', '.join(diff.removed) or '-'}")
    click.echo(f"retyped: {', '.join(diff.type_changed) or '-'}")
    click.echo("shift per column (KS complement: 1 = same distribution), least similar first:")
    for s in diff.shifts:
        ks = f"{s.ks_complement:.3f}" if s.ks_complement is not None else "-"
        means = f"mean {_fmt(s.mean_before)} -> {_fmt(s.mean_after)}"
        click.echo(f"  {s.column:<44}{ks:>7}   {means}")


def _fmt(value: float | None) -> str:
    return f"{value:.4g}" if value is not None else "-"


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


@lake.command("query")
@click.argument("sql")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row and line.")
def lake_query(sql: str, as_json: bool) -> None:
    """Run SQL over the lake (tables named namespace.table): DuckDB locally, Athena on AWS."""
    import polars as pl

    from firepipe.resources import lakehouse_for, query_engine_for
    from firepipe.resources.lakehouse.tables import LakehouseError
    from firepipe.resources.query import QueryError

    env, paths = settings.environment(), settings.local_paths()
    resource = query_engine_for(env, lakehouse_for(env, paths))
    try:
        # The context manager resolves the nested lakehouse and any dg.EnvVar fields.
        with resource.process_config_and_initialize_cm() as engine:
            frame = engine.query(sql)
    except (QueryError, LakehouseError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(frame.write_ndjson(), nl=False)
        return
    with pl.Config(tbl_cols=-1, tbl_rows=-1, tbl_width_chars=200):
        click.echo(frame)


@main.command()
@click.option("--rows", type=click.IntRange(min=2), required=True, help="Readings to generate.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--out",
    required=True,
    help="Folder (local path or s3://bucket/prefix) for part-NNNNN.parquet files.",
)
@click.option(
    "--duration-s",
    type=click.IntRange(min=2),
    default=3600,
    show_default=True,
    help="Seconds per device; the rows are rounded up to whole devices.",
)
@click.option(
    "--family",
    "families",
    multiple=True,
    help="Scenario family to draw from (repeatable); default: all, in the catalog's mix.",
)
@click.option("--fault-share", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True)
@click.option("--sites", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--backend",
    type=click.Choice(["numpy", "cupy", "torch"]),
    default="numpy",
    show_default=True,
    help="Array library: numpy on the CPU, CuPy or PyTorch on a GPU.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Default: all cores.")
def generate(
    rows: int,
    seed: int,
    out: str,
    duration_s: int,
    families: tuple[str, ...],
    fault_share: float,
    sites: int,
    backend: str,
    workers: int | None,
) -> None:
    """Generate synthetic readings into Parquet files, outside Dagster."""
    from firepipe.core.simulation.simulator import GenerationSpec, write_parquet

    duration = min(duration_s, rows)
    try:
        spec = GenerationSpec(
            devices=-(-rows // duration),
            duration_s=duration,
            sites=sites,
            seed=seed,
            fault_share=fault_share,
            **({"families": families} if families else {}),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(
        f"{spec.rows:,} readings: {spec.devices:,} devices x {spec.duration_s:,} s, "
        f"seed {seed}, {backend} -> {out}",
        err=True,
    )
    try:
        with click.progressbar(length=spec.rows, label="generating", file=sys.stderr) as bar:
            result = write_parquet(spec, out, backend=backend, workers=workers, progress=bar.update)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote {result.rows:,} readings in {len(result.files)} file(s), "
        f"{result.seconds:.1f} s ({result.rows / result.seconds:,.0f} readings/s)",
        err=True,
    )
    for path in result.files:
        click.echo(path)


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
@click.option("--devices", type=int, default=None, help="lake: devices (default 2,000).")
@click.option("--seconds", type=int, default=None, help="lake: seconds per device (default 5,000).")
def bench(
    suites: tuple[str, ...],
    as_json: bool,
    rows: int | None,
    repeats: int,
    min_seconds: float,
    devices: int | None,
    seconds: int | None,
) -> None:
    """Run benchmark SUITES (all when none is named) and print their figures."""
    from firepipe.bench import BenchOptions, render_table
    from firepipe.bench.suites import SUITES

    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise click.BadParameter(
            f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}"
        )
    options = BenchOptions(
        rows=rows, repeats=repeats, min_seconds=min_seconds, devices=devices, seconds=seconds
    )
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
