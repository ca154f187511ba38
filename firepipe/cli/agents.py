"""Commands about the agents: `agents run|status`, `alerts list|ack`, and `replay`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from firepipe import settings

if TYPE_CHECKING:
    from firepipe.services.agents.runtime import Ports


def _ports() -> Ports:
    from firepipe.lib.plain_resources import UnsetVariableError
    from firepipe.services.agents.runtime import ports

    try:
        found = ports()
    except UnsetVariableError as error:
        raise click.ClickException(str(error)) from None
    found.wire()
    return found


def _sending(command: Callable[..., None]) -> Callable[..., None]:
    """The options of a command that sends readings through the agents and waits for them."""
    for option in reversed(
        [
            click.option(
                "--speed",
                type=click.FloatRange(min=0),
                default=0.0,
                show_default=True,
                help="Times faster than the readings' own clock; 0: as fast as the agents "
                "take them.",
            ),
            click.option(
                "--timeout-s", type=click.FloatRange(min=1), default=600.0, show_default=True
            ),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        ]
    ):
        command = option(command)
    return command


@click.group()
def agents() -> None:
    """The monitoring, analysis and response agents (locally: worker processes under
    FIREPIPE_HOME, on its SQLite queues, state store and outbox)."""


@agents.command("run")
@click.option(
    "--agent",
    "names",
    multiple=True,
    type=click.Choice(["monitoring", "analysis", "response"]),
    help="Run only these agents (repeat the option) [default: all three].",
)
def agents_run(names: tuple[str, ...]) -> None:
    """Start the agents' workers and keep them running (a worker that dies is started again)
    until Ctrl-C. Logs: $FIREPIPE_HOME/agents/<agent>.log."""
    from firepipe.services.agents.runtime import AGENTS
    from firepipe.services.agents.supervisor import Supervisor, running_supervisor

    home = settings.local_paths().home
    if settings.environment() != settings.Environment.LOCAL:
        raise click.ClickException("agents run starts local workers; in AWS, ECS runs them")
    other = running_supervisor(home)
    if other is not None:
        raise click.ClickException(f"the agents already run for {home} (pid {other})")
    _ports()
    supervisor = Supervisor(home, names or AGENTS)
    supervisor.start()
    click.echo(f"agents running for {home}: {', '.join(supervisor.agents)} (Ctrl-C stops them)")
    click.echo(f"logs: {supervisor.folder}/<agent>.log")
    try:
        supervisor.run()
    except KeyboardInterrupt:
        click.echo("stopping the agents")
    finally:
        supervisor.stop()


@agents.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def agents_status(as_json: bool) -> None:
    """Each agent queue's depth and dead letters, and whether local workers run."""
    from firepipe.services.agents.runtime import QUEUE_OF
    from firepipe.services.agents.supervisor import running_supervisor

    ports = _ports()
    queues: dict[str, dict[str, Any]] = {}
    for agent, queue in QUEUE_OF.items():
        depth = ports.queues.depth(queue)
        queues[queue] = {
            "agent": agent,
            "visible": depth.visible,
            "in_flight": depth.in_flight,
            "dead": depth.dead,
            "dead_letters": [
                {"id": d.id, "reason": d.reason} for d in ports.queues.dead_letters(queue, 5)
            ],
        }
    supervisor = running_supervisor(settings.local_paths().home) if ports.local else None
    if as_json:
        click.echo(json.dumps({"supervisor": supervisor, "queues": queues}))
        return
    workers = f"running (pid {supervisor})" if supervisor else "not running"
    click.echo(f"local workers: {workers}")
    for queue, q in queues.items():
        click.echo(
            f"{queue:<10} {q['agent']:<11} visible {q['visible']:<6} in flight "
            f"{q['in_flight']:<6} dead {q['dead']}"
        )
        for letter in q["dead_letters"]:
            click.echo(f"  dead letter {letter['id']}: {letter['reason']}")


@agents.command("feed")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_sending
def agents_feed(path: Path, speed: float, timeout_s: float, as_json: bool) -> None:
    """Send the readings of a file through the agents, as the landing zone takes files (CSV,
    Parquet or JSON lines: device_id, ts and channels, in any unit silver converts), and print
    the alarms each device raised. Rows silver would quarantine are counted and not sent."""
    from datetime import UTC, datetime

    import polars as pl

    from firepipe.core.agents.replay import frame_plan
    from firepipe.core.ingestion.landing import QuarantineError, parse_landed_file
    from firepipe.core.lake.standardise import to_silver
    from firepipe.core.readings import CHANNEL_NAMES
    from firepipe.services.agents import replay as driver
    from firepipe.services.agents.supervisor import agents_running

    try:
        landed = parse_landed_file(path.name, path.read_bytes(), datetime.now(UTC))
    except QuarantineError as error:
        raise click.ClickException(f"{path}: {error}") from None
    silver = to_silver({"landed": landed})
    readings = silver.readings.filter(~pl.col("is_gap")).select("device_id", "ts", *CHANNEL_NAMES)
    if readings.is_empty():
        raise click.ClickException(
            f"{path}: no reading to send ({silver.quarantine.height} quarantined by silver)"
        )
    plan = frame_plan(readings, driver.new_run_id(), path.name, {}, rename=False)
    ports = _ports()
    with agents_running(settings.local_paths().home, local=ports.local):
        result = driver.push(plan, ports.queues, ports.store, speed, timeout_s=timeout_s)
    first, last = readings["ts"].min(), readings["ts"].max()
    devices = [
        {
            "device_id": device,
            "alarms": [
                t.isoformat()
                for t in result.alarms.get(device, [])
                if first <= t <= last  # type: ignore[operator]
            ],
        }
        for device in plan.devices
    ]
    out = {
        "readings": result.readings,
        "quarantined": silver.quarantine.height,
        "seconds": round(result.drained_s, 3),
        "devices": devices,
    }
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(
        f"{result.readings} readings of {len(devices)} devices through the agents in "
        f"{result.drained_s:.1f} s ({out['quarantined']} rows quarantined, not sent)"
    )
    for row in devices:
        alarms = ", ".join(row["alarms"]) or "no alarm"
        click.echo(f"  {row['device_id']}: {alarms}")


@click.group()
def alerts() -> None:
    """Fire alerts the response agent raised (kept in the state store)."""


@alerts.command("list")
@click.option(
    "--status",
    type=click.Choice(["open", "acknowledged", "resolved", "all"]),
    default="all",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per alert and line.")
def alerts_list(status: str, limit: int, as_json: bool) -> None:
    """The latest alerts, newest first."""
    from firepipe.services.agents.response import alert_records

    records = [r for r in alert_records(_ports().store) if status == "all" or r.status == status]
    records.sort(key=lambda r: r.alert.created_at, reverse=True)
    records = records[:limit]
    if as_json:
        for record in records:
            click.echo(json.dumps({"status": record.status, **record.to_dict()}))
        return
    if not records:
        click.echo("no alerts")
        return
    click.echo(f"{'alert':<30}{'status':<14}{'created (UTC)':<21}{'escalated':<10}device")
    for r in records:
        a = r.alert
        escalated = ",".join(str(level) for level in r.escalated) or "-"
        click.echo(
            f"{a.alert_id:<30}{r.status:<14}{a.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{escalated:<10}{a.device_id}"
        )


@alerts.command("ack")
@click.argument("alert_id")
@click.option("--by", default=None, help="Who acknowledges [default: the login name].")
def alerts_ack(alert_id: str, by: str | None) -> None:
    """Acknowledge ALERT_ID: its escalation stops."""
    from firepipe.core.history import current_user
    from firepipe.services.agents.runtime import Agents

    record = Agents(_ports()).response.acknowledge(alert_id, by or current_user())
    click.echo(
        f"alert {alert_id} acknowledged by {record.acknowledged_by} at "
        f"{record.acknowledged_at:%Y-%m-%d %H:%M:%S} UTC"
    )


@click.command()
@click.option(
    "--nist-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the NIST tests [default: $FIREPIPE_NIST_DATA_DIR, else the packaged ones].",
)
@click.option("--test", "test_name", default=None, help="The NIST test to replay, e.g. SDC02.")
@click.option(
    "--family",
    type=click.Choice(["flaming", "smouldering", "nuisance", "baseline"]),
    default=None,
    help="Replay synthetic devices of this scenario family instead of a NIST test.",
)
@click.option("--devices", type=click.IntRange(1, 1000), default=8, show_default=True)
@click.option("--duration-s", type=click.IntRange(60, 86_400), default=900, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@_sending
def replay(
    nist_dir: Path | None,
    test_name: str | None,
    family: str | None,
    devices: int,
    duration_s: int,
    seed: int,
    speed: float,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Push a NIST test (every station a device) or a synthetic scenario through the
    monitoring, analysis and response agents and print each device's alarm against the real
    alarms. Uses the running agents (`firepipe agents run`), else starts them for the replay."""
    from firepipe.core.agents.replay import synthetic_plan
    from firepipe.services.agents import replay as driver
    from firepipe.services.agents.replay import new_run_id

    if (test_name is None) == (family is None):
        raise click.UsageError("name one of --test SDCxx or --family FAMILY")
    if family is not None:
        plan = synthetic_plan(
            family, new_run_id(), devices=devices, duration_s=duration_s, seed=seed
        )
        real: dict[tuple[str, str], dict[str, float | None]] = {}
    else:
        plan, real = _nist_plan(nist_dir, str(test_name))
    ports = _ports()
    from firepipe.services.agents.supervisor import agents_running

    with agents_running(settings.local_paths().home, local=ports.local):
        result = driver.push(plan, ports.queues, ports.store, speed, timeout_s=timeout_s)
    from firepipe.core.agents.replay import timeline

    rows = timeline(plan, result.alarms)
    for row in rows:
        row.update(real.get((row["test"], row["station"]), {}))
    if as_json:
        out: dict[str, Any] = {
            "run_id": plan.run_id,
            "speed": speed,
            "readings": result.readings,
            "seconds": round(result.drained_s, 3),
            "stations": rows,
        }
        click.echo(json.dumps(out))
        return
    click.echo(
        f"replay {plan.run_id}: {result.readings} readings through the agents in "
        f"{result.drained_s:.1f} s"
    )
    click.echo(
        f"{'test':<10}{'station':<12}{'agents_s':>9}{'first_real_s':>13}{'median_real_s':>14}"
    )
    for row in rows:
        click.echo(
            f"{row['test']:<10}{row['station']:<12}{_cell(row['alarm_s']):>9}"
            f"{_cell(row.get('first_real_s')):>13}{_cell(row.get('median_real_s')):>14}"
        )


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _nist_plan(
    nist_dir: Path | None, test_name: str
) -> tuple[Any, dict[tuple[str, str], dict[str, float | None]]]:
    from firepipe.core.agents.replay import nist_plan
    from firepipe.core.realdata import nist
    from firepipe.core.training.real_fires import WARM_UP_S
    from firepipe.services.agents.replay import new_run_id

    run_id = new_run_id()
    folder = nist_dir or settings.nist_data_dir()
    tests = {t.name: t for t in nist.read_tests(folder)}
    if test_name not in tests:
        raise click.BadParameter(
            f"no test {test_name!r} in {folder}: one of {', '.join(sorted(tests))}",
            param_hint="--test",
        )
    return nist_plan(tests[test_name], run_id, WARM_UP_S), _real_alarms(folder, test_name)


def _real_alarms(folder: Path, test: str) -> dict[tuple[str, str], dict[str, float | None]]:
    import polars as pl

    from firepipe.core.realdata import nist

    times = nist.read_activation_times(folder).filter(pl.col("test") == test)
    found = times.group_by("test", "station").agg(
        pl.col("activation_s").min().alias("first_real_s"),
        pl.col("activation_s").median().alias("median_real_s"),
    )
    return {(r["test"], r["station"]): r for r in found.iter_rows(named=True)}
