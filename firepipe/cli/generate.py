"""`firepipe generate`: synthetic readings into Parquet files, outside Dagster.

Two ways to say what to generate: `--rows N` (N readings, rounded up to whole devices, from
the families asked for), or `--family F --batch B`: partition (F, B) of the bronze asset under
config seed `--seed`, with `--devices`/`--duration-s`/`--sites`/`--fault-share`/`--start` as
the asset's run config (their defaults are the asset's). A partition is made by the same core
function the asset uses (`firepipe.core.simulation.partitions.partition_generation`), so its
files hold the same bytes as the asset's staged files for that partition.

Before anything is generated, the destination is checked: an empty or root --out is refused, and
so is a local one whose disk has less free space than the files' estimated size.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

# The defaults of the partition options are the asset's (core.simulation.partitions'
# PartitionSettings), read when the command runs: importing them here would load numpy and
# polars for `firepipe --help`.
PLAIN_DURATION_S = 3600


def _batch(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A batch as the asset names it: "3" and "003" are both batch "003"."""
    if value is None:
        return None
    from firepipe.core.simulation.partitions import BATCHES

    if not value.isdigit() or f"{int(value):03d}" not in BATCHES:
        raise click.BadParameter(
            f"{value!r} is not a batch of the asset: {BATCHES[0]}-{BATCHES[-1]}"
        )
    return f"{int(value):03d}"


@click.command()
@click.option("--rows", type=click.IntRange(min=2), default=None, help="Readings to generate.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--out",
    required=True,
    help="Folder (local path or s3://bucket/prefix) for part-NNNNN.parquet files.",
)
@click.option(
    "--duration-s",
    type=click.IntRange(min=2),
    default=None,
    help=f"Seconds per device (default {PLAIN_DURATION_S} with --rows, the asset's with "
    "--batch); with --rows the readings are rounded up to whole devices.",
)
@click.option(
    "--family",
    "families",
    multiple=True,
    help="Scenario family to draw from (repeatable); default: all, in the catalog's mix. "
    "With --batch: the partition's family (exactly one).",
)
@click.option(
    "--batch",
    callback=_batch,
    default=None,
    help="Generate the bronze asset's partition (--family, --batch), batch 000-015, under "
    "config seed --seed, instead of --rows.",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=None,
    help="With --batch: devices in the partition (default: the asset's).",
)
@click.option(
    "--fault-share",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Share of devices with a sensor fault (default: the asset's).",
)
@click.option(
    "--sites",
    type=click.IntRange(min=1),
    default=None,
    help="Sites the devices are spread over (default: the asset's).",
)
@click.option(
    "--start",
    default=None,
    help="The first reading's time, ISO 8601 with a timezone (default: the asset's).",
)
@click.option(
    "--backend",
    type=click.Choice(["numpy", "cupy", "torch"]),
    default="numpy",
    show_default=True,
    help="Array library: numpy on the CPU, CuPy or PyTorch on a GPU.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Default: all cores.")
def generate(
    rows: int | None,
    seed: int,
    out: str,
    duration_s: int | None,
    families: tuple[str, ...],
    batch: str | None,
    devices: int | None,
    fault_share: float | None,
    sites: int | None,
    start: str | None,
    backend: str,
    workers: int | None,
) -> None:
    """Generate synthetic readings into Parquet files, outside Dagster."""
    import polars as pl

    from firepipe.core.simulation.backends import BackendUnavailableError, get_backend
    from firepipe.core.simulation.output_size import estimated_parquet_bytes
    from firepipe.core.simulation.partitions import PartitionSettings, partition_generation
    from firepipe.core.simulation.simulator import GenerationSpec, write_parquet

    asset = PartitionSettings()
    settings = PartitionSettings(
        devices=devices or asset.devices,
        duration_s=duration_s or asset.duration_s,
        sites=sites or asset.sites,
        seed=seed,
        fault_share=asset.fault_share if fault_share is None else fault_share,
        start=start or asset.start,
    )
    constant_columns: dict[str, str] = {}
    try:
        if batch is not None:
            if rows is not None or len(families) != 1:
                raise click.UsageError(
                    "--batch names one partition of the bronze asset: give exactly one "
                    "--family with it, and --devices (not --rows) for its size"
                )
            partition = partition_generation(settings, families[0], batch)
            spec, constant_columns = partition.spec, partition.constant_columns
        else:
            if rows is None or devices is not None:
                raise click.UsageError(
                    "give --rows N (readings to generate), or --family F --batch B (one "
                    "partition of the bronze asset, sized by --devices)"
                )
            duration = min(duration_s or PLAIN_DURATION_S, rows)
            spec = GenerationSpec(
                devices=-(-rows // duration),
                duration_s=duration,
                sites=settings.sites,
                seed=seed,
                start=settings.start_time(),
                fault_share=settings.fault_share,
                **({"families": families} if families else {}),
            )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        get_backend(backend)  # now, not after the folder is made: cupy or torch may be missing
    except BackendUnavailableError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend") from exc
    folder = check_out(out)
    needed_bytes = estimated_parquet_bytes(spec)
    if folder is not None:
        check_free_space(out, folder, needed_bytes)
    what = f"partition ({families[0]}, {batch}) of seed {seed}: " if batch is not None else ""
    click.echo(
        f"{what}{spec.rows:,} readings: {spec.devices:,} devices x {spec.duration_s:,} s, "
        f"seed {spec.seed}, {backend} -> {out} (at most about {_size(needed_bytes)})",
        err=True,
    )
    try:
        with click.progressbar(length=spec.rows, label="generating", file=sys.stderr) as bar:
            result = write_parquet(
                spec,
                out,
                backend=backend,
                constant_columns=constant_columns,
                workers=workers,
                progress=bar.update,
            )
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    except (OSError, pl.exceptions.PolarsError) as exc:
        if "://" not in out:
            raise  # a local path's error names its file: the app's one line says it
        # An object store that cannot be reached or refuses the write (no bucket, no
        # credentials): one line that names the destination, not a storage client's trace.
        raise click.ClickException(f"cannot write to {out}: {_first_line(exc)}") from exc
    click.echo(
        f"wrote {result.rows:,} readings in {len(result.files)} file(s), "
        f"{result.seconds:.1f} s ({result.rows / result.seconds:,.0f} readings/s)",
        err=True,
    )
    for path in result.files:
        click.echo(path)


def _first_line(exc: BaseException) -> str:
    """The gist of a storage error: its first line, without an XML error body after it."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.partition("<?xml")[0].rstrip(": ")


def check_out(out: str) -> Path | None:
    """Refuse an --out the generator cannot write into, before anything is generated.

    Returns the nearest local folder that exists on the way to --out (the one whose disk the
    files will fill), None for an object store.
    """
    if not out.strip():
        raise click.BadParameter(
            "is empty: name a folder for the Parquet files", param_hint="--out"
        )
    if "://" in out:
        return None  # an object store: reachability shows on the first write (see the caller)
    path = Path(out).expanduser().absolute()
    if path == Path(path.anchor):
        raise click.BadParameter(
            f"{out} is the filesystem root: name a folder for the Parquet files", param_hint="--out"
        )
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise click.BadParameter(
            f"cannot write under {out}: {existing} is not a folder", param_hint="--out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.BadParameter(
            f"cannot write under {out}: {existing} is not writable", param_hint="--out"
        )
    return existing


def check_free_space(out: str, folder: Path, needed_bytes: int) -> None:
    """Refuse a generation into `out` whose files would not fit on the disk of `folder` (the
    nearest existing folder of `out`), before writing.

    `needed_bytes` is an upper estimate (core.simulation.output_size), so the check errs towards
    refusing early rather than filling the disk half-way through a run. An object store has no
    free space to ask for: the caller skips it.
    """
    free_bytes = shutil.disk_usage(folder).free
    if needed_bytes > free_bytes:
        raise click.ClickException(
            f"not enough disk space for {out}: the files would take up to about "
            f"{_size(needed_bytes)} "
            f"(estimated), and {folder} has {_size(free_bytes)} free; generate fewer readings "
            "or choose another --out"
        )


def _size(n_bytes: int) -> str:
    """Bytes for people, in decimal units as `df -H` gives them."""
    size = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            break
        size /= 1000
    return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
