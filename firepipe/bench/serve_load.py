"""The load of `firepipe bench serve`: a locustfile, run by locust in its own process.

Never import it from firepipe: locust monkey-patches the process with gevent on import.

Each simulated user owns a share of the stream's devices and sends their readings one request
at a time, round robin, so each device's readings arrive in order with increasing `ts` (1 Hz
apart, the device's own gaps kept; when its recorded stream runs out it starts again an
interval later). A device sends faster than its data's 1 Hz (a few hundred devices make 1,000
requests/s), so its `ts` starts in the past (`serve.py` sets it a day back): the service
refuses readings from more than a few minutes ahead of its clock.

The target decides the body: the reading itself for firepipe, the same reading's gold feature
row (with device_id and ts) for MLflow's scoring server. Every request's start time, latency
and outcome, and the failures' messages, are written to the latencies file when the run stops
(locust's own percentiles are rounded to whole milliseconds).

Open loop, as wrk2 measures it: the run has one schedule, request j due at T0 + j / rate,
dealt round robin to the users; a user waits for its next due time and sends. A request that
went out later than its due time by more than gevent's timer resolution (TIMER_SLACK_S: a
wait overshoots by up to that much) is timed from its due time, not from when it went out, so
a server (or client) that falls behind is charged for the requests it kept waiting
(coordinated omission); one sent on time is timed from its sending. Closed loop (rate
0): each user sends as soon as its answer is back, latency from sending.

The environment says what to do (`serve.py` sets it): the stream file, the target, the rate
(requests per second over all users; 0: closed loop), the users, the API key, the device-id
prefix, the first `ts` (Unix seconds) and the latencies file.
"""

import itertools
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task

STREAM = json.loads(Path(os.environ["FIREPIPE_BENCH_STREAM"]).read_text())
TARGET = os.environ["FIREPIPE_BENCH_TARGET"]  # "firepipe" | "mlflow"
RATE = float(os.environ["FIREPIPE_BENCH_RATE"])
USERS = int(os.environ["FIREPIPE_BENCH_USERS"])
# libev's timers, under gevent's sleep, have millisecond resolution.
TIMER_SLACK_S = 0.001
# When the schedule starts: set at the test's start, once the users have had time to spawn.
SPAWN_S = 1.5
T0 = 0.0
API_KEY = os.environ.get("FIREPIPE_BENCH_API_KEY", "")
PREFIX = os.environ["FIREPIPE_BENCH_DEVICE_PREFIX"]
BASE_TS = int(os.environ["FIREPIPE_BENCH_BASE_TS"])
LATENCIES = Path(os.environ["FIREPIPE_BENCH_LATENCIES"])

CHANNELS: list[str] = STREAM["channels"]
FEATURES: list[str] = STREAM["features"]
PERIOD_S: int = STREAM["period_s"]  # one pass over a device's recorded readings
DEVICES: list[dict[str, Any]] = STREAM["devices"]
# due (Unix s), latency (ms), succeeded, answered (Unix s)
SAMPLES: list[tuple[float, float, bool, float]] = []
_user_numbers = itertools.count()


# Failures by their exception's text (the status), with the first failure's answer of each.
ERRORS: dict[str, int] = {}
EXAMPLES: dict[str, str] = {}


@events.request.add_listener
def _record(exception: Exception | None, **meta: Any) -> None:
    if exception is not None:
        kind = str(exception)
        ERRORS[kind] = ERRORS.get(kind, 0) + 1
        body = getattr(meta.get("response"), "text", "") or ""
        EXAMPLES.setdefault(kind, f"{kind} {body[:300]}".strip())


@events.test_start.add_listener
def _start(**_: Any) -> None:
    global T0
    T0 = time.time() + SPAWN_S


@events.test_stop.add_listener
def _write(**_: Any) -> None:
    errors = {EXAMPLES[kind]: count for kind, count in ERRORS.items()}
    LATENCIES.write_text(json.dumps({"samples": SAMPLES, "errors": errors}))


def _iso(unix_s: int) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reader(FastHttpUser):
    def wait_time(self) -> float:
        """Until this user's next due time (none in a closed loop)."""
        if RATE <= 0:
            return 0.0
        self.due = T0 + (self.sent * USERS + self.number) / RATE
        self.sent += 1
        return max(0.0, self.due - time.time())

    def on_start(self) -> None:
        self.number = number = next(_user_numbers) % USERS
        self.sent, self.due = 0, 0.0
        own = range(number, len(DEVICES), USERS)
        self.turns = itertools.cycle([(d, itertools.count()) for d in own])
        self.headers = {"content-type": "application/json"}
        if API_KEY:
            self.headers["x-api-key"] = API_KEY
        if RATE > 0:  # locust runs the first task before any wait: wait for its due time here
            time.sleep(self.wait_time())  # gevent's sleep: the process is monkey-patched

    @task
    def send(self) -> None:
        device, sent = next(self.turns)
        n = next(sent)
        record = DEVICES[device]
        i = n % len(record["offsets"])
        ts = BASE_TS + (n // len(record["offsets"])) * PERIOD_S + record["offsets"][i]
        device_id = f"{PREFIX}{record['id']}"
        if TARGET == "firepipe":
            values = record["readings"][i]
            reading = {name: v for name, v in zip(CHANNELS, values, strict=True) if v is not None}
            body: dict[str, Any] = {
                "readings": [{"device_id": device_id, "ts": _iso(ts), **reading}]
            }
        else:
            naive = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            row = [*record["features"][i], device_id, naive]
            body = {"dataframe_split": {"columns": [*FEATURES, "device_id", "ts"], "data": [row]}}
        data = json.dumps(body)
        start = time.time()
        due = self.due if RATE > 0 else start
        since = start if start - due <= TIMER_SLACK_S else due
        response = self.client.post("/invocations", data=data, headers=self.headers)
        answered = time.time()
        SAMPLES.append((due, (answered - since) * 1000.0, response.status_code == 200, answered))
