"""Serve: the inference service under load, against MLflow's own scoring server of the same
registered model, in the same run.

The bench starts `firepipe serve` (with its own API key) and then `mlflow models serve
--env-manager local`, each alone on loopback, and drives each with locust in a separate process
(`serve_load.py`; gevent never enters this process). The requests are single readings of a
few hundred simulated devices, each device's readings in order at 1 Hz of data time; MLflow's
server gets the same reading's gold feature row, which is what it can score.

- `p99_ms`, `p50_ms`: open loop at --rate requests/s (default 1,000) for --seconds (default
  30) after a warm-up: enough users at a fixed pace each that the rate holds whatever the
  latency. `rps_held` says what rate was reached.
- `max_rps`: closed loop, a few users sending as fast as answers come back.
- `score_us_per_row`: the compiled model scoring one row at a time (distinct rows, as a stream
  of readings gives them), LightGBM native as the baseline.

The model is --model (a registered model's URI, with the firepipe home of FIREPIPE_HOME, or a
firepipe home, whose champion is used) or, by default, one trained here: a small LightGBM
detector on simulated devices, fitted and registered in a throwaway home as ml/detector does.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from firepipe import names, settings
from firepipe.bench import BenchOptions, Figure
from firepipe.bench.train import training_set
from firepipe.core.features.spec import compute_features
from firepipe.core.lake.standardise import to_silver
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.serving.scoring import NativeScorer, load_serving_model
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.core.training import candidate
from firepipe.core.training.models import Detector, feature_matrix

BENCH = "serve"
DEFAULT_RATE_RPS = 1_000.0
DEFAULT_SECONDS = 30
DEFAULT_DEVICES = 300
WARM_UP_S = 3  # spawning users and the servers' first calls; left out of the figures
# Open loop: a few users share the schedule (serve_load.py). Locust runs every user in one
# process, so each more user adds client-side queueing to what is measured: measured at
# 1,000 rps, p99 was 1.7 ms with 2 users, 2.3 ms with 4 and 5 ms with 10; 4 users still keep
# the schedule through a 4 ms stall of the server.
OPEN_LOOP_USERS = 4
CLOSED_LOOP_USERS = 8
CLOSED_LOOP_S = 10
STREAM_S = 120  # seconds of each simulated device's readings, sent again and again
TRAIN_DEVICES = 60  # the bench's own model: 36,000 readings of 600 s devices
START_TIMEOUT_S = 180.0
# The streams' first ts is this far behind the clock: a device sends its 1 Hz data faster than
# real time, and the service refuses readings more than 300 s ahead of its clock.
TS_BEHIND_S = 86_400
SCORE_ROWS = 2_000
LOAD_FILE = Path(__file__).with_name("serve_load.py")


@dataclass(frozen=True)
class Served:
    """The model both servers serve: its URI, the home whose registry resolves it, and the
    detector folder downloaded from it."""

    uri: str
    home: Path
    detector_dir: Path


def run(options: BenchOptions) -> list[Figure]:
    rate = options.rate or DEFAULT_RATE_RPS
    seconds = options.seconds or DEFAULT_SECONDS
    devices = options.devices or DEFAULT_DEVICES
    with tempfile.TemporaryDirectory(prefix="firepipe-bench-serve-") as tmp:
        work = Path(tmp)
        served = served_model(options.model, work)
        detector = Detector.load(served.detector_dir)
        stream = reading_stream(detector, devices, seed=7)
        stream_file = work / "stream.json"
        stream_file.write_text(json.dumps(stream_document(stream, detector)))
        figures = score_figures(served, stream, options)
        key = secrets.token_urlsafe(24)
        results: dict[str, dict[str, float]] = {}
        for target in ("firepipe", "mlflow"):
            with server(target, served, work, key) as url:
                load = LoadRun(url, target, key, stream_file, work)
                open_loop = load.run("open", rate, seconds, devices)
                closed = load.run("closed", 0.0, min(seconds, CLOSED_LOOP_S), devices)
            results[target] = {**open_loop, "max_rps": closed["rps"]}
    ours, mlflow = results["firepipe"], results["mlflow"]
    return [
        Figure(BENCH, "p99_ms", ours["p99_ms"], "ms", mlflow["p99_ms"], False),
        Figure(BENCH, "p50_ms", ours["p50_ms"], "ms", mlflow["p50_ms"], False),
        Figure(BENCH, "rps_held", ours["rps"], "requests/s", mlflow["rps"]),
        Figure(BENCH, "max_rps", ours["max_rps"], "requests/s", mlflow["max_rps"]),
        *figures,
    ]


# -- the model ------------------------------------------------------------------------------


def served_model(model: str | None, work: Path) -> Served:
    """The --model given (a URI, or a firepipe home's champion), else one trained here."""
    if model is None:
        home = work / "home"
        with _stdout_to_stderr():
            uri = register_small_detector(home, work)
    elif (Path(model).expanduser() / "mlflow" / "mlflow.db").is_file():
        home = Path(model).expanduser().resolve()
        uri = f"models:/{names.MODEL_NAME}@champion"
    else:
        home, uri = settings.local_paths().home, model
    from firepipe.resources.registry import LocalModelRegistry

    registry = LocalModelRegistry(root=str(settings.LocalPaths(home=home).mlflow))
    return Served(uri, home, registry.download_model(uri, work / "model"))


def register_small_detector(home: Path, work: Path) -> str:
    """A LightGBM detector fitted on simulated devices and registered in `home`'s MLflow as
    ml/detector does (operating points, feature spec, compiled model); its version's URI."""
    from firepipe.core.features.spec import default_spec
    from firepipe.resources.registry import LocalModelRegistry
    from firepipe.resources.training import LocalTrainingBackend

    frame = training_set(TRAIN_DEVICES)
    paths = settings.LocalPaths(home=home)
    fitted = candidate.fit_candidate(
        frame.lazy(),
        default_spec(),
        LocalTrainingBackend(work_dir=str(paths.training)),
        "bench-serve",
        work / "candidate",
        candidate.CandidateSettings(),
    )
    registry = LocalModelRegistry(root=str(paths.mlflow))
    version = registry.log_candidate(
        fitted.model_dir,
        name=names.MODEL_NAME,
        metrics=fitted.metrics,
        params=fitted.hyperparameters,
        tags={
            "feature_spec_hash": fitted.detector.feature_spec_hash,
            "training_snapshot_id": "bench",
            "git_sha": "bench",
            **fitted.serving.tags(),
        },
        artifacts={},
        input_example=fitted.input_example,
    )
    return version.uri


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Standard output goes to standard error for the block, C libraries' too: training and
    the compiler print progress, and `firepipe bench --json` prints only figures there."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _tracking_uri(home: Path) -> str:
    return f"sqlite:///{settings.LocalPaths(home=home).mlflow / 'mlflow.db'}"


# -- the readings ---------------------------------------------------------------------------


def reading_stream(detector: Detector, devices: int, seed: int) -> pl.DataFrame:
    """STREAM_S seconds of `devices` simulated devices: each reading's channels (null where
    the device sent none) beside the gold features the detector reads for it."""
    spec = detector.require_feature_spec()
    bronze = simulate(GenerationSpec(devices=devices, duration_s=STREAM_S, seed=seed), workers=1)
    silver = to_silver({"synthetic": bronze}).readings.filter(~pl.col("is_gap"))
    features = compute_features(silver, spec).select("device_id", "ts", *detector.feature_names)
    return silver.select("device_id", "ts", *CHANNEL_NAMES).join(
        features, on=["device_id", "ts"], how="left", maintain_order="left"
    )


def stream_document(stream: pl.DataFrame, detector: Detector) -> dict[str, object]:
    """The stream as the load file reads it: per device, its readings' offsets from its first
    (seconds), channel values and feature rows."""
    devices = []
    for (device_id,), rows in stream.sort("device_id", "ts").group_by(
        "device_id", maintain_order=True
    ):
        start = rows["ts"].min()
        offsets = (rows["ts"] - start).dt.total_seconds().cast(pl.Int64).to_list()
        devices.append(
            {
                "id": str(device_id),
                "offsets": offsets,
                "readings": rows.select(CHANNEL_NAMES).rows(),
                "features": _nan_as_null(rows.select(detector.feature_names)).rows(),
            }
        )
    return {
        "channels": list(CHANNEL_NAMES),
        "features": list(detector.feature_names),
        "period_s": STREAM_S,
        "devices": devices,
    }


def _nan_as_null(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.all().fill_nan(None).cast(pl.Float64))


# -- scoring --------------------------------------------------------------------------------


def score_figures(served: Served, stream: pl.DataFrame, options: BenchOptions) -> list[Figure]:
    """Microseconds a row, one row a call, over distinct rows: the serving model's scorer
    (compiled, unless it fell back) against LightGBM native."""
    model = load_serving_model(served.detector_dir, served.uri)
    if model.fallback_reason is not None:
        reason = f"scoring falls back to {model.scorer.backend}: {model.fallback_reason}"
        warnings.warn(reason, stacklevel=2)
    x = feature_matrix(stream.head(SCORE_ROWS), model.detector.feature_names)
    rows = [np.ascontiguousarray(x[i : i + 1]) for i in range(x.shape[0])]
    native = NativeScorer(model.detector)

    def per_row_us(scores: Callable[[np.ndarray], np.ndarray]) -> float:
        best = float("inf")
        for _ in range(max(options.repeats, 1)):
            start = time.perf_counter()
            for row in rows:
                scores(row)
            best = min(best, time.perf_counter() - start)
        return best / len(rows) * 1e6

    value, baseline = per_row_us(model.scorer.scores), per_row_us(native.scores)
    return [Figure(BENCH, "score_us_per_row", value, "us", baseline, False)]


# -- the servers ----------------------------------------------------------------------------


def cpus(role: str) -> set[int] | None:
    """The CPUs a process of `role` ("server" or "load") is pinned to: the server to the first
    CPU this process may use, the load generator to the others, so neither is moved between
    cores nor slowed by the other's cache (measured on two cores at 1,000 rps: p50 0.8 ->
    0.55 ms, p99 2.1-2.2 -> 1.9-2.2 ms). None (no pinning) with a single CPU."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return {allowed[0]} if role == "server" else set(allowed[1:])


def _pinned(role: str) -> Callable[[], None] | None:
    chosen = cpus(role)
    return None if chosen is None else lambda: os.sched_setaffinity(0, chosen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(target: str, served: Served, work: Path, key: str) -> Iterator[str]:
    """`firepipe serve` or MLflow's scoring server of the served model, answering /ping on a
    free loopback port, for the block; stopped (its whole process group) afterwards."""
    port = free_port()
    env = {
        **os.environ,
        settings.HOME_VAR: str(served.home),
        # Both: this process's MLflow calls may have left a registry URI in the environment.
        "MLFLOW_TRACKING_URI": _tracking_uri(served.home),
        "MLFLOW_REGISTRY_URI": _tracking_uri(served.home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    bin_dir = Path(sys.executable).parent
    # MLflow starts `uvicorn` by name: the environment's scripts must be on the PATH.
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    if target == "firepipe":
        env["FIREPIPE_API_KEYS"] = key
        env.pop("FIREPIPE_RATE_LIMIT_RPS", None)  # a limit of the caller's would throttle it
        command = [str(bin_dir / "firepipe"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--model", served.uri]
    else:
        command = [str(bin_dir / "mlflow"), "models", "serve", "-m", served.uri]
        command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log = work / f"{target}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pinned("server"),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, log)
        yield url
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited ({process.returncode}):\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{process.args!r} did not answer /ping in {START_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    # The server's own session: its workers (uvicorn under mlflow) go with it.
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# -- the load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadRun:
    url: str
    target: str
    key: str
    stream_file: Path
    work: Path

    def run(self, name: str, rate: float, seconds: int, devices: int) -> dict[str, float]:
        """Locust against the server: open loop at `rate` requests/s (OPEN_LOOP_USERS users
        sharing one schedule), or closed loop (rate 0, CLOSED_LOOP_USERS users, no wait); the
        latencies after the warm-up as p50_ms, p99_ms and the rate reached (rps)."""
        users = OPEN_LOOP_USERS if rate else CLOSED_LOOP_USERS
        users = min(users, devices)  # a user owns at least one device
        latencies = self.work / f"{self.target}-{name}.json"
        env = {
            **os.environ,
            "FIREPIPE_BENCH_STREAM": str(self.stream_file),
            "FIREPIPE_BENCH_TARGET": self.target,
            "FIREPIPE_BENCH_RATE": str(rate),
            "FIREPIPE_BENCH_USERS": str(users),
            "FIREPIPE_BENCH_API_KEY": self.key if self.target == "firepipe" else "",
            # New devices each run: a server keeps the last run's devices, whose readings
            # must not go back in time.
            "FIREPIPE_BENCH_DEVICE_PREFIX": f"{name}-",
            "FIREPIPE_BENCH_BASE_TS": str(int(datetime.now(UTC).timestamp()) - TS_BEHIND_S),
            "FIREPIPE_BENCH_LATENCIES": str(latencies),
        }
        command = [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            str(LOAD_FILE),
            "--headless",
            "--host",
            self.url,
            "--users",
            str(users),
            "--spawn-rate",
            str(users),  # all within the first second of the warm-up
            "--run-time",
            f"{seconds + WARM_UP_S}s",
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
            "--stop-timeout",
            "5",
        ]
        log = self.work / f"{self.target}-{name}-locust.log"
        with log.open("wb") as out:
            done = subprocess.run(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pinned("load")
            )
        if done.returncode != 0 or not latencies.is_file():
            raise RuntimeError(f"locust failed ({done.returncode}):\n{_tail(log)}")
        recorded = json.loads(latencies.read_text())
        return summarise(recorded["samples"], WARM_UP_S, self.target, recorded["errors"])


def summarise(
    samples: list[list[float]],
    warm_up_s: float,
    target: str,
    errors: dict[str, int] | None = None,
) -> dict[str, float]:
    """p50 and p99 latency (ms) of the requests due after the warm-up (samples: due, latency,
    succeeded, answered), and the rate they were answered at (a server that falls behind the
    schedule answers slower than it is asked); any failed request fails the bench (its latency
    would flatter the server), saying the commonest of `errors` (failures by message)."""
    if not samples:
        raise RuntimeError(f"{target}: locust sent no request")
    data = np.asarray(samples, dtype=np.float64)
    kept = data[data[:, 0] >= data[:, 0].min() + warm_up_s]
    failed = int((kept[:, 2] == 0).sum())
    if failed:
        commonest = max((errors or {}).items(), key=lambda item: item[1], default=("", 0))
        raise RuntimeError(
            f"{target}: {failed} of {len(kept)} requests failed; the commonest failure "
            f"({commonest[1]} times): {commonest[0] or 'not recorded'}"
        )
    if len(kept) < 2:
        raise RuntimeError(f"{target}: too few requests after the warm-up ({len(kept)})")
    span_s = kept[:, 3].max() - kept[:, 3].min()
    return {
        "p50_ms": float(np.percentile(kept[:, 1], 50)),
        "p99_ms": float(np.percentile(kept[:, 1], 99)),
        "rps": float(len(kept) / span_s) if span_s > 0 else float(len(kept)),
    }
