"""Commands that look at the lakehouse: lake tables/show/query, features versions/diff."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from firepipe import names, settings
from firepipe.cli.context import lakehouse

if TYPE_CHECKING:
    import polars as pl


@click.group()
def features() -> None:
    """Versions of the feature table and what changed between them."""


FEATURE_TABLE = names.table_name(names.SENSOR_FEATURES)


@features.command("versions")
@click.option("--table", default=FEATURE_TABLE, show_default=True)
def features_versions(table: str) -> None:
    """Every Iceberg snapshot of the feature table, oldest first."""
    from firepipe.lib.lakehouse.tables import LakehouseError

    try:
        snapshots = lakehouse().snapshots(table)
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

    from firepipe.core.features.spec import diff_features
    from firepipe.lib.lakehouse.tables import LakehouseError

    lake = lakehouse()
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


@click.group()
def lake() -> None:
    """Look at the lakehouse tables."""


@lake.command("tables")
def lake_tables() -> None:
    """List every table with its row count."""
    house = lakehouse()
    for identifier in house.list_tables():
        click.echo(f"{identifier:<40}{house.table_rows(identifier):>14,}")


@lake.command("show")
@click.argument("table")
@click.option("--limit", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--columns", default=None, help="Comma-separated columns to show, in this order.")
@click.option("--vertical", is_flag=True, help="A block per row, a `column: value` line each.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row and line.")
def lake_show(table: str, limit: int, columns: str | None, vertical: bool, as_json: bool) -> None:
    """Print the first rows of TABLE (namespace.name). The table fits the terminal: columns
    that do not fit are left out of the middle (see them with --columns, --vertical or
    --json)."""
    import shutil

    from firepipe.lib.lakehouse.tables import LakehouseError, split_identifier

    if vertical and as_json:
        raise click.UsageError("--vertical and --json are two layouts: choose one")
    house = lakehouse()
    try:
        split_identifier(table)
        lazy = house.scan(table)
    except LakehouseError as e:
        raise click.ClickException(f"{e}; existing tables: {_listing(house.list_tables())}") from e
    if columns is not None:
        lazy = lazy.select(_chosen_columns(columns, lazy.collect_schema().names(), table))
    frame = lazy.head(limit).collect()
    if as_json:
        click.echo(frame.write_ndjson(), nl=False)
    elif vertical:
        click.echo(vertical_rows(frame), nl=False)
    else:
        click.echo(fitted_table(frame, shutil.get_terminal_size().columns))


def _listing(identifiers: list[str]) -> str:
    return ", ".join(identifiers) or "none yet (`make run` materialises them)"


def _chosen_columns(option: str, names: list[str], table: str) -> list[str]:
    chosen = [c.strip() for c in option.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in names]
    if not chosen or unknown:
        what = f"no column {', '.join(unknown)}" if unknown else "--columns names no column"
        raise click.ClickException(f"{table} has {what}; its columns: {', '.join(names)}")
    return chosen


def vertical_rows(frame: pl.DataFrame) -> str:
    """Each row as a block of `column: value` lines under a `-[ row N ]` header (psql's \\x)."""
    width = max((len(name) for name in frame.columns), default=0)
    blocks = []
    for number, row in enumerate(frame.iter_rows(named=True), start=1):
        lines = [f"-[ row {number} ]"]
        lines += [f"{name + ':':<{width + 1}} {_cell(value)}" for name, value in row.items()]
        blocks.append("\n".join(lines) + "\n")
    return "".join(blocks) if blocks else f"(no rows; columns: {', '.join(frame.columns)})\n"


def _cell(value: object) -> str:
    return "null" if value is None else str(value)


def fitted_table(frame: pl.DataFrame, width: int) -> str:
    """polars' table of `frame` no wider than `width` characters: as many columns as fit, the
    others left out of the middle (polars marks them with a … column); cells are not wrapped,
    since a table wrapped into narrow columns is unreadable."""
    import polars as pl

    def render(shown: int) -> str:
        # polars wraps cells to fit tbl_width_chars (at most 65,535): wide, it drops columns.
        with pl.Config(tbl_cols=shown, tbl_width_chars=65_535, tbl_rows=-1):
            return str(frame)

    def fits(text: str) -> bool:
        return max(map(len, text.splitlines())) <= width

    low, high = 1, max(frame.width, 1)  # the most columns that fit lies in [low, high]
    if fits(render(high)):
        return render(high)
    while low < high:  # the table widens with each column it shows
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(render(middle)) else (low, middle - 1)
    text = render(low)
    return f"{text}\n{low} of {frame.width} columns shown: --columns, --vertical or --json for all"


@lake.command("query")
@click.argument("sql")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row and line.")
def lake_query(sql: str, as_json: bool) -> None:
    """Run SQL over the lake (tables named namespace.table): DuckDB locally, Athena on AWS."""
    import polars as pl

    from firepipe.lib.lakehouse.tables import LakehouseError
    from firepipe.resources import resource_for
    from firepipe.resources.query import QueryError

    env, paths = settings.environment(), settings.local_paths()
    resource = resource_for("query_engine", env, paths)
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
