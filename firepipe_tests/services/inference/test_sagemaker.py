"""The container's `serve` command: SageMaker's port variable, the model folder, no keys even
when some are set, one worker whatever SAGEMAKER_MODEL_SERVER_WORKERS says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import requests

from firepipe_tests.conftest import free_port
from firepipe_tests.services.inference.serving_sample import readings

START = (
    "from pathlib import Path; import sys; from firepipe.services.inference.server import "
    "sagemaker_main; sagemaker_main(Path(sys.argv[1]))"
)


@pytest.mark.slow
def test_serve_answers_on_sagemakers_port_without_keys(detector_dir: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "4",
        "FIREPIPE_API_KEYS": "not-needed-here",
        "FIREPIPE_MODEL_VERSION": "firepipe-fire-detector/7",  # set by the endpoint resource
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-c", START, str(detector_dir)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    ping = requests.get(f"{url}/ping", timeout=2)
                    break
                except requests.ConnectionError:
                    assert process.poll() is None
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert ping.status_code == 200
            answer = requests.post(
                f"{url}/invocations",
                data=b"".join(orjson.dumps(r) + b"\n" for r in readings("sm", 3)),
                headers={"content-type": "application/jsonlines"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            lines = answer.content.splitlines()
            assert len(lines) == 3
            assert {orjson.loads(line)["model_version"] for line in lines} == {
                "firepipe-fire-detector/7"
            }
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
    assert process.returncode == -signal.SIGTERM, err  # after uvicorn's graceful shutdown
    assert f"on port {port}; API keys: off (a SageMaker endpoint" in out
    assert "SAGEMAKER_MODEL_SERVER_WORKERS=4 ignored" in err


@pytest.mark.slow
def test_serve_without_a_model_ends_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", START, str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(free_port())},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"serve: ValueError: {tmp_path / 'missing'} is not a folder holding a model"
    )
