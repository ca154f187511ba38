"""Agents: readings through the monitoring and analysis workers, and how long an alarm takes to
become an alert under that load, against the serving core alone, in the same run.

The three workers run as `firepipe agents run` starts them (`Supervisor`: one process per
agent, on the local queues, topic, state store and outbox) in a throwaway FIREPIPE_HOME whose
registry holds the champion. The readings are simulated devices' (`--devices`, default 2,000,
`--seconds` of readings each, default 60, at 1 Hz), as gateways forward them: every 10 s, the
last 10 s of each of their devices, in readings messages of 500 (50 devices x 10 s;
`messages.encode_readings`, encoded before any timing).

- `readings_per_s`: every reading of the devices' first `--seconds` enqueued at once, divided
  by the time from the first enqueue until the readings and scores queues are empty (the last
  score event applied by the analysis agent). Baseline: the same readings scored in one call
  by the serving core in this process (`ScoringEngine.score_columns`), best of --repeats.
- `load_readings_per_s`: the devices' next `--seconds` of readings sent at a steady rate,
  --rate readings/s or 80% of `readings_per_s` (at most the 50,000/s target); the rate held.
- `alarm_latency_p50_ms`, `alarm_latency_p99_ms`: under that load, from the enqueue of the
  reading that sounds a fire device's alarm to the alert's notification in the outbox. The fire
  devices (one per 40 devices, at least 3) stream with the others, quiet until their onsets,
  spread over the load; a dry run of their readings through the serving core says which reading
  sounds each alarm. Baseline: the same with the agents idle (a fire device's readings sent
  alone, IDLE_FIRES times, one after another).

The model is --model (a firepipe home, whose champion is copied with its registry, or a
models:/ URI of FIREPIPE_HOME's registry) or, by default, the small detector `bench serve`
trains and registers.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from firepipe import names, settings
from firepipe.bench import BenchOptions, Figure, best_seconds, serve
from firepipe.core.agents import messages
from firepipe.core.lake.standardise import to_silver
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.serving.engine import ReadingColumns, ScoringEngine
from firepipe.core.serving.scoring import ServingModel, load_serving_model
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.lib import aws_env
from firepipe.lib.plain_resources import resolved
from firepipe.resources import resource_for
from firepipe.resources.notifier import LocalNotifier
from firepipe.resources.queue import MessageQueue
from firepipe.resources.registry import CHAMPION_ALIAS, LocalModelRegistry
from firepipe.services.agents import runtime
from firepipe.services.agents.replay import drain
from firepipe.services.agents.supervisor import Supervisor, agents_dir

BENCH = "agents"
DEFAULT_DEVICES = 2_000
DEFAULT_SECONDS = 60
BATCH = 500
# Readings reach the agents as a gateway forwards them: its devices' last 10 s in one batch
# (500 readings: 50 devices x 10 s), not one reading of each of 500 devices.
GATEWAY_S = 10
TARGET_READINGS_PER_S = 50_000.0
LOAD_SHARE = 0.8
DEVICES_PER_FIRE = 40
MIN_FIRES = 3
IDLE_FIRES = 5
FIRE_QUIET_S = 120  # an idle fire's history before its onset: its features' windows fill
FIRE_BURN_S = 60
# The load's fires start within this share of its seconds, so each alarms before it ends.
ONSETS = (0.1, 0.7)
START_TIMEOUT_S = 300.0  # the workers import and load the model
ALERT_TIMEOUT_S = 60.0
POLL_S = 0.02
SEND_EVERY = 10  # messages per send_batch while the whole run is enqueued
_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")
# Variables of the caller's that would change what the workers do (a webhook POST per alert,
# other policies): the bench runs the defaults.
_WORKER_ENV_DROPPED = (
    aws_env.ALERT_WEBHOOK_URL_VAR,
    runtime.ACK_TIMEOUT_VAR,
    runtime.ESCALATION_LEVELS_VAR,
    runtime.MAX_RECEIVES_VAR,
)


@dataclass(frozen=True)
class Stream:
    """The readings of both runs, in gateway windows, and each fire device's alarm reading."""

    throughput: pl.DataFrame  # device_id, ts (text), channels: the first `seconds`
    load: pl.DataFrame  # the next `seconds`
    alarms: dict[str, str]  # fire device -> ts of the reading that sounds its alarm


def run(options: BenchOptions) -> list[Figure]:
    devices = options.devices or DEFAULT_DEVICES
    seconds = options.seconds or DEFAULT_SECONDS
    with tempfile.TemporaryDirectory(prefix="firepipe-bench-agents-") as tmp:
        work = Path(tmp)
        home = work / "home"
        champion_home(options.model, home, work)
        model = champion_model(home, work)
        stream = reading_stream(model, devices, seconds, seed=7)
        bodies = encode(stream.throughput, "t")
        readings = ReadingColumns.concat([messages.decode_readings(b).readings for b in bodies])
        baseline_s = engine_seconds(model, readings, options)
        del readings
        agents = RunningAgents(home)
        agents.start()
        try:
            idle = agents.idle_latencies(IDLE_FIRES)
            pipeline_s = agents.throughput(bodies)
            readings_per_s = stream.throughput.height / pipeline_s
            rate = options.rate or min(LOAD_SHARE * readings_per_s, TARGET_READINGS_PER_S)
            held, loaded = agents.latencies_under_load(stream, rate)
        finally:
            agents.stop()
    baseline_per_s = stream.throughput.height / baseline_s
    p50, p99 = percentiles_ms(loaded)
    idle_p50, idle_p99 = percentiles_ms(idle)
    return [
        Figure(BENCH, "readings_per_s", readings_per_s, "readings/s", baseline_per_s),
        Figure(BENCH, "load_readings_per_s", held, "readings/s", None),
        Figure(BENCH, "alarm_latency_p50_ms", p50, "ms", idle_p50, False),
        Figure(BENCH, "alarm_latency_p99_ms", p99, "ms", idle_p99, False),
    ]


def percentiles_ms(latencies_s: list[float]) -> tuple[float, float]:
    if not latencies_s:
        raise RuntimeError("no alarm latency was measured")
    p50, p99 = np.percentile(np.array(latencies_s) * 1000.0, [50, 99])
    return float(p50), float(p99)


# -- the model ------------------------------------------------------------------------------


def champion_home(model: str | None, home: Path, work: Path) -> None:
    """Give `home`'s registry a champion of names.MODEL_NAME, which the workers follow: a copy
    of --model's registry (a firepipe home, or FIREPIPE_HOME's with the URI's version made
    champion in the copy) or, without --model, the detector `bench serve` trains."""
    target = settings.LocalPaths(home=home).mlflow
    if model is None:
        with serve._stdout_to_stderr():
            uri = serve.register_small_detector(home, work)
        _promote(target, int(uri.rsplit("/", 1)[1]))
        return
    given = settings.LocalPaths(home=Path(model).expanduser()).mlflow
    if (given / "mlflow.db").is_file():
        shutil.copytree(given, target)
        return
    found = _MODELS_URI.fullmatch(model)
    if found is None or found["name"] != names.MODEL_NAME:
        raise ValueError(
            f"--model {model!r}: a firepipe home or models:/{names.MODEL_NAME}/N "
            f"(or @{CHAMPION_ALIAS}) of FIREPIPE_HOME's registry"
        )
    if found["alias"] not in (None, CHAMPION_ALIAS):
        raise ValueError(f"--model {model!r}: name the version (models:/NAME/N), not an alias")
    source = settings.local_paths().mlflow
    if not (source / "mlflow.db").is_file():
        raise ValueError(f"--model {model!r}: FIREPIPE_HOME has no registry ({source})")
    shutil.copytree(source, target)
    if found["version"] is not None:
        _promote(target, int(found["version"]))


def _promote(mlflow_dir: Path, version: int) -> None:
    LocalModelRegistry(root=str(mlflow_dir)).promote(names.MODEL_NAME, version, "bench agents")


def champion_model(home: Path, work: Path) -> ServingModel:
    """The champion as the monitoring workers load it."""
    registry = LocalModelRegistry(root=str(settings.LocalPaths(home=home).mlflow))
    champion = registry.champion(names.MODEL_NAME)
    if champion is None:
        raise ValueError(f"{home} has no champion of {names.MODEL_NAME}")
    folder = registry.download_model(champion.uri, work / "model")
    return load_serving_model(folder, f"{names.MODEL_NAME}/{champion.version}")


# -- the readings ---------------------------------------------------------------------------


def reading_stream(model: ServingModel, devices: int, seconds: int, seed: int) -> Stream:
    """`devices` simulated devices and their fire devices over 2 x `seconds`, ending a minute
    ago (the engine refuses readings from the future), split into the two runs."""
    spec = GenerationSpec(devices=devices, duration_s=2 * seconds, seed=seed)
    bronze = simulate(spec, workers=1)
    silver = to_silver({"synthetic": bronze}).readings.filter(~pl.col("is_gap"))
    first = int(silver.select(pl.col("ts").min().dt.epoch("s")).item())
    start = int(time.time()) - 60 - 2 * seconds
    simulated = silver.select(
        pl.col("device_id").cast(pl.String),
        (pl.col("ts").dt.epoch("s") - first + start).alias("epoch_s"),
        *CHANNEL_NAMES,
    )
    count = max(MIN_FIRES, devices // DEVICES_PER_FIRE)
    low, high = (seconds + int(share * seconds) for share in ONSETS)
    onsets = np.linspace(low, high, count).astype(np.int64)
    fires = pl.concat(
        [
            fire_frame(f"fire-{k:04d}", start, int(onset), 2 * seconds, seed=k)
            for k, onset in enumerate(onsets)
        ]
    )
    # As gateways forward them: each device's last GATEWAY_S seconds together, window by window.
    window = pl.col("epoch_s") // GATEWAY_S
    frame = pl.concat([simulated, fires], how="diagonal_relaxed").sort(
        window, "device_id", "epoch_s"
    )
    split = start + seconds
    alarms = alarm_moments(model, fires)
    early = [device for device, ts in alarms.items() if ts < _ts_text(split)]
    missing = sorted(set(fires["device_id"]) - set(alarms))
    if early or missing:
        raise ValueError(
            f"fire devices {early + missing} do not sound their alarm during the load "
            f"with this model: give more --seconds (now {seconds})"
        )

    def texts(part: pl.DataFrame) -> pl.DataFrame:
        ts = pl.from_epoch("epoch_s", "s").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("ts")
        return part.select("device_id", ts, *CHANNEL_NAMES)

    return Stream(
        texts(frame.filter(pl.col("epoch_s") < split)),
        texts(frame.filter(pl.col("epoch_s") >= split)),
        alarms,
    )


def fire_frame(device: str, start: int, onset_s: int, count: int, seed: int) -> pl.DataFrame:
    """`count` seconds of a device with heat, smoke and CO sensors from `start` (Unix s): quiet
    until `onset_s`, then a growing fire (smoke, heat and CO rising together)."""
    since = np.arange(count, dtype=np.float64) - onset_s
    burn = np.clip(since, 0.0, None)
    noise = np.random.default_rng(seed).normal(0.0, 0.05, count)
    return pl.DataFrame(
        {
            "device_id": [device] * count,
            "epoch_s": start + np.arange(count, dtype=np.int64),
            "temperature_c": 21.0 + noise + np.minimum(0.5 * burn, 80.0),
            "smoke_obscuration_pct_per_m": 0.05 + np.minimum(0.3 * burn, 25.0),
            "co_ppm": 1.0 + np.minimum(2.0 * burn, 400.0),
        }
    )


def alarm_moments(model: ServingModel, fires: pl.DataFrame) -> dict[str, str]:
    """Each fire device's first alarming reading (its ts text), as the monitoring worker will
    score it: the devices' readings in order through a fresh engine."""
    rows = _rows(fires.sort("device_id", "epoch_s").with_columns(_ts_column()))
    readings = messages.decode_readings(messages.encode_readings("dry", rows)).readings
    scored = ScoringEngine(model).score_columns(readings, skip_late=True)
    alarms: dict[str, str] = {}
    for prediction in scored.predictions():
        if prediction.alarm:
            alarms.setdefault(prediction.device_id, prediction.ts)
    return alarms


def _ts_column() -> pl.Expr:
    return pl.from_epoch("epoch_s", "s").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("ts")


def _ts_text(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The readings as the service takes them: device_id, ts and the channels sent."""
    columns = ["device_id", "ts", *CHANNEL_NAMES]
    present = [c for c in columns if c in frame.columns]
    return [
        {k: v for k, v in row.items() if v is not None} for row in frame.select(present).to_dicts()
    ]


def encode(frame: pl.DataFrame, prefix: str) -> list[str]:
    """`frame`'s readings in messages of BATCH, in order, without `sent_at` (see `stamped`)."""
    return [
        messages.encode_readings(f"{prefix}{k}", _rows(frame.slice(start, BATCH)))
        for k, start in enumerate(range(0, frame.height, BATCH))
    ]


def stamped(body: str, sent_at: float) -> str:
    """`body` (a readings message without `sent_at`) with `sent_at`: the load's messages are
    encoded before it starts and only stamped as each is enqueued."""
    if not body.endswith("}") or '"sent_at"' in body:
        raise ValueError("stamped takes a readings message encoded without sent_at")
    return f'{body[:-1]},"sent_at":{sent_at!r}}}'


# -- the serving core alone -----------------------------------------------------------------


def engine_seconds(model: ServingModel, readings: ReadingColumns, options: BenchOptions) -> float:
    """Seconds for a fresh engine to score `readings` in one call, the best of --repeats."""
    engines: list[ScoringEngine] = []

    def fresh() -> None:
        engines[:] = [ScoringEngine(model)]

    def score() -> None:
        engines[0].score_columns(readings, skip_late=True)

    return best_seconds(score, options.repeats, fresh, options.min_seconds)


# -- the agents -----------------------------------------------------------------------------


class RunningAgents:
    """The three workers on `home`, and what the bench sends them and reads back."""

    def __init__(self, home: Path) -> None:
        self.home = home
        paths, local = settings.LocalPaths(home=home), settings.Environment.LOCAL
        self.queues: MessageQueue = resolved(resource_for("queues", local, paths))
        self.notifier = LocalNotifier(path=str(paths.notifications))
        runtime.wire(self.queues, resolved(resource_for("events_topic", local, paths)))
        tracking = f"sqlite:///{paths.mlflow / 'mlflow.db'}"
        env = {k: v for k, v in os.environ.items() if k not in _WORKER_ENV_DROPPED}
        env |= {
            settings.HOME_VAR: str(home),
            settings.ENV_VAR: local.value,
            "MLFLOW_TRACKING_URI": tracking,
            "MLFLOW_REGISTRY_URI": tracking,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        self.supervisor = Supervisor(home, env=env)
        self._sent = 0

    def start(self) -> None:
        self.supervisor.start()

    def stop(self) -> None:
        self.supervisor.stop()

    def _alive(self) -> None:
        restarted = self.supervisor.check()
        if restarted:
            logs = agents_dir(self.home)
            tails = {a: _tail(logs / f"{a}.log") for a in restarted}
            raise RuntimeError(f"agent workers {restarted} died during the bench: {tails}")

    def _send(self, bodies: list[str]) -> float:
        """Enqueue `bodies` stamped now; returns the enqueue time (Unix s)."""
        sent_at = time.time()
        self.queues.send_batch(
            messages.READINGS_QUEUE, [(stamped(body, sent_at), {}) for body in bodies]
        )
        return sent_at

    def _alerts(self, since: datetime) -> dict[str, datetime]:
        """The alarm notifications' times, by device, in the outbox since `since`."""
        found: dict[str, datetime] = {}
        for record in self.notifier.recent(limit=1_000_000, since=since):
            attributes = record.notification.attributes
            if attributes.get("kind") == "alarm":
                found.setdefault(attributes["device_id"], record.created_at)
        return found

    def idle_latencies(self, fires: int) -> list[float]:
        """Seconds from enqueue to alert of `fires` fire devices sent one at a time to idle
        agents, after a first one that waits for the workers to start."""
        latencies = []
        for k in range(fires + 1):
            device = f"idle-fire-{k}"
            start = int(time.time()) - 60 - FIRE_QUIET_S - FIRE_BURN_S
            frame = fire_frame(device, start, FIRE_QUIET_S, FIRE_QUIET_S + FIRE_BURN_S, seed=k)
            body = messages.encode_readings(f"idle{k}", _rows(frame.with_columns(_ts_column())))
            since = datetime.now(UTC)
            sent_at = self._send([body])
            timeout = START_TIMEOUT_S if k == 0 else ALERT_TIMEOUT_S
            alerted = self._wait_alert(device, since, timeout)
            if k > 0:
                latencies.append(alerted.timestamp() - sent_at)
        drain(self.queues, timeout_s=ALERT_TIMEOUT_S)
        return latencies

    def _wait_alert(self, device: str, since: datetime, timeout_s: float) -> datetime:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            alerted = self._alerts(since).get(device)
            if alerted is not None:
                return alerted
            self._alive()
            time.sleep(POLL_S)
        raise RuntimeError(f"no alert for {device} within {timeout_s:g} s: see {self.home}/agents")

    def throughput(self, bodies: list[str]) -> float:
        """Seconds from the first enqueue of `bodies` until the readings and then the scores
        queue are empty with nothing in flight."""
        start = time.perf_counter()
        for k in range(0, len(bodies), SEND_EVERY):
            self._send(bodies[k : k + SEND_EVERY])
        deadline = time.monotonic() + 60.0 + len(bodies) * BATCH / 200.0
        while time.monotonic() < deadline:
            # Readings first: once none is left, every score event has been published.
            if self._empty(messages.READINGS_QUEUE) and self._empty(messages.SCORES_QUEUE):
                elapsed = time.perf_counter() - start
                drain(self.queues, timeout_s=ALERT_TIMEOUT_S)  # the incidents too
                return elapsed
            self._alive()
            time.sleep(POLL_S)
        raise RuntimeError(f"the agents did not work through the readings: see {self.home}")

    def _empty(self, queue: str) -> bool:
        depth = self.queues.depth(queue)
        return depth.visible == 0 and depth.in_flight == 0

    def latencies_under_load(self, stream: Stream, rate: float) -> tuple[float, list[float]]:
        """The load's messages sent at `rate` readings/s: the rate held and, for each fire
        device, seconds from its alarm reading's enqueue to its alert."""
        bodies = encode(stream.load, "l")
        rows = stream.load.with_row_index("row").select("row", "device_id", "ts")
        wanted = pl.DataFrame(
            {"device_id": list(stream.alarms), "ts": list(stream.alarms.values())}
        )
        batch_of = {
            device: row // BATCH
            for row, device in rows.join(wanted, on=["device_id", "ts"])
            .select("row", "device_id")
            .iter_rows()
        }
        since = datetime.now(UTC)
        sent = []
        first = time.monotonic()
        for k, body in enumerate(bodies):
            pause = first + k * BATCH / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent.append(self._send([body]))
        held = stream.load.height / max(sent[-1] - sent[0] + BATCH / rate, 1e-9)
        drain(self.queues, timeout_s=60.0 + stream.load.height / 200.0)
        self._alive()
        alerts = self._alerts(since)
        missing = sorted(set(stream.alarms) - set(alerts))
        if missing:
            raise RuntimeError(f"fire devices {missing} raised no alert: see {self.home}/agents")
        return held, [alerts[d].timestamp() - sent[batch_of[d]] for d in stream.alarms]


def _tail(log: Path, lines: int = 20) -> str:
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
