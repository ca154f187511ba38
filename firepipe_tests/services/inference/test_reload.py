"""The champion followed while serving: a new champion is loaded in the background and
swapped in, and no request fails while it changes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pytest
import requests

from firepipe import settings
from firepipe.names import MODEL_NAME
from firepipe.resources.registry import LocalModelRegistry
from firepipe.services.inference.app import create_app
from firepipe.services.inference.keys import Access
from firepipe.services.inference.source import ModelHolder, RegistrySource
from firepipe_tests.services.detector_sample import register_detector
from firepipe_tests.services.inference.serving_sample import FEATURES, running, saved_detector

pytestmark = pytest.mark.slow


def register(registry: LocalModelRegistry, folder: Path, seed: int) -> int:
    saved_detector(folder, seed=seed, rounds=10 + seed)
    example = pl.DataFrame({name: [1.0] for name in FEATURES})
    return register_detector(registry, folder, MODEL_NAME, example).version


def test_a_new_champion_is_served_without_a_failed_request(
    firepipe_home: Path, tmp_path: Path
) -> None:
    registry = LocalModelRegistry(root=str(settings.local_paths().mlflow))
    first = register(registry, tmp_path / "v1", seed=0)
    second = register(registry, tmp_path / "v2", seed=1)
    registry.promote(MODEL_NAME, first, "test")

    source = RegistrySource(registry, f"models:/{MODEL_NAME}@champion")
    holder = ModelHolder(source, poll_s=0.1)
    holder.load_now()
    versions: dict[int, list[str]] = {}
    failures: list[str] = []
    stop = threading.Event()

    def client(number: int, url: str) -> None:
        start = datetime.now(UTC) - timedelta(hours=1)
        seen = versions.setdefault(number, [])
        with requests.Session() as http:
            for second_ in range(3_000):
                if stop.is_set():
                    return
                ts = (start + timedelta(seconds=second_)).strftime("%Y-%m-%dT%H:%M:%SZ")
                body = {
                    "readings": [{"device_id": f"swap-{number}", "ts": ts, "temperature_c": 25}]
                }
                answer = http.post(
                    f"{url}/invocations",
                    data=orjson.dumps(body),
                    headers={"content-type": "application/json"},
                )
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")
                    continue
                seen.append(answer.json()["predictions"][0]["model_version"])

    with running(create_app(holder, Access(None, None))) as url:
        threads = [threading.Thread(target=client, args=(n, url)) for n in range(3)]
        for thread in threads:
            thread.start()
        threading.Event().wait(0.5)
        registry.promote(MODEL_NAME, second, "test")
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while datetime.now(UTC) < deadline and not all(
            seen and seen[-1].endswith(f"/{second}") for seen in versions.values()
        ):
            threading.Event().wait(0.05)
        threading.Event().wait(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=20)

    assert failures == []
    old, new = f"{MODEL_NAME}/{first}", f"{MODEL_NAME}/{second}"
    for seen in versions.values():
        switch = seen.index(new)  # each client saw the new champion ...
        assert switch > 0
        assert set(seen[:switch]) == {old}
        assert set(seen[switch:]) == {new}  # and never the old one again
