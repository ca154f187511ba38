"""`firepipe generate`: synthetic readings into Parquet files, outside Dagster."""

from __future__ import annotations

import sys

import click


@click.command()
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
