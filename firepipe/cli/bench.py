"""`firepipe bench`: the benchmark suites."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("suites", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per figure and line.")
@click.option(
    "--rows", type=click.IntRange(min=1), default=None, help="Override each suite's data size."
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Best of at least this many.",
)
@click.option(
    "--min-seconds",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Keep sampling each figure until this much time was measured (at most 50 calls).",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=None,
    help="lake: devices (default 2,000); serve: devices streaming readings (default 300); "
    "agents: devices streaming readings (default 2,000).",
)
@click.option(
    "--seconds",
    type=click.IntRange(min=1),
    default=None,
    help="lake: seconds per device (default 5,000); serve: seconds of load (default 30); "
    "agents: seconds of readings per device in each run (default 60).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=None,
    help="serve: requests per second of the open-loop load (default 1,000); agents: readings "
    "per second of the load under which alarm latency is measured (default 80% of "
    "readings_per_s, at most 50,000).",
)
@click.option(
    "--model",
    default=None,
    help="serve, agents: a registered model's URI or a firepipe home (its champion); "
    "default: a small detector trained for the bench.",
)
def bench(
    suites: tuple[str, ...],
    as_json: bool,
    rows: int | None,
    repeats: int,
    min_seconds: float,
    devices: int | None,
    seconds: int | None,
    rate: float | None,
    model: str | None,
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
        rows=rows,
        repeats=repeats,
        min_seconds=min_seconds,
        devices=devices,
        seconds=seconds,
        rate=rate,
        model=model,
    )
    figures = []
    for name in suites or tuple(SUITES):
        for figure in SUITES[name](options):
            figures.append(figure)
            if as_json:
                click.echo(json.dumps(figure.as_json()))
    if not as_json:
        click.echo(render_table(figures))
