"""A small LightGBM detector that carries its feature spec (so the engine can compute its
features online), readings to send it, and the service running on a loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from firepipe.core.features.spec import FeatureSpec, default_spec
from firepipe.core.training.dataset import LABEL
from firepipe.core.training.models import Detector, train_detector
from firepipe.services.inference import server
from firepipe_tests.conftest import REPO_ROOT

# Written by `firepipe serve --openapi docs/openapi/inference.json`.
OPENAPI_PATH = REPO_ROOT / "docs" / "openapi" / "inference.json"
FEATURES = (
    "temperature_c__mean_30s",
    "smoke_obscuration_pct_per_m__max_30s",
    "temperature_c__rise_per_min_30s",
)
SPEC = FeatureSpec(tuple(f for f in default_spec().features if f.name in FEATURES))


def saved_detector(directory: Path, seed: int = 0, rounds: int = 20) -> Detector:
    """Fire when it is hot or smoky: scores that move with the readings sent."""
    rng = np.random.default_rng(seed)
    rows = 2_000
    temperature = rng.uniform(15.0, 120.0, rows)
    smoke = rng.exponential(2.0, rows)
    rise = rng.normal(0.0, 5.0, rows)
    label = (temperature > 60.0) | (smoke > 4.0)
    frame = pl.DataFrame(
        {FEATURES[0]: temperature, FEATURES[1]: smoke, FEATURES[2]: rise, LABEL: label}
    )
    params = {"early_fire_weight": 1.0, "num_boost_round": rounds}
    detector = train_detector(frame, None, SPEC.names, SPEC.hash(), "lightgbm", params)
    detector = detector.with_feature_spec(SPEC).with_operating_point(0.5, 0)
    detector.save(directory)
    return detector


def timestamps(count: int, start: datetime | None = None) -> list[str]:
    """`count` seconds in a row, ending a minute ago (the engine refuses the future)."""
    start = start or datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=count + 60)
    return [(start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(count)]


def readings(device: str, count: int, hot: bool = False) -> list[dict[str, object]]:
    temperature = 90.0 if hot else 21.0
    return [
        {
            "device_id": device,
            "ts": ts,
            "temperature_c": temperature + 0.1 * i,
            "smoke_obscuration_pct_per_m": 0.0,
        }
        for i, ts in enumerate(timestamps(count))
    ]


@contextmanager
def running(app: Any) -> Iterator[str]:
    """`app` (an ASGI app: the inference service's, the action API's) served by uvicorn (as
    `firepipe serve` configures it) in a thread on a free loopback port; its base URL."""
    sock = server.listen("127.0.0.1", 0)
    uvicorn_server = server.uvicorn_server(app)
    thread = threading.Thread(
        target=uvicorn_server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=20)
        sock.close()
