"""`firepipe serve`: a mistake is one `Error:` line; the OpenAPI document is written from the
app; the real command serves until it is stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import requests
from click.testing import CliRunner

from firepipe.cli import main
from firepipe_tests.cli.test_errors import error_line
from firepipe_tests.services.inference.serving_sample import OPENAPI_PATH, readings, saved_detector


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    saved_detector(tmp_path / "model")
    return tmp_path / "model"


def test_without_a_champion_it_says_how_to_get_one(firepipe_home: Path) -> None:
    line = error_line(CliRunner().invoke(main, ["serve"]))
    assert "has no champion yet" in line
    assert "make run" in line


@pytest.mark.parametrize("model", ["/no/such/folder", "s3://bucket/model", "runs:/abc/detector"])
def test_a_model_that_is_no_folder_or_models_uri_is_a_usage_error(
    firepipe_home: Path, model: str
) -> None:
    result = CliRunner().invoke(main, ["serve", "--model", model])
    assert result.exit_code == 2
    assert "--model" in result.output


def test_a_folder_without_a_model_is_one_error_line(tmp_path: Path) -> None:
    line = error_line(CliRunner().invoke(main, ["serve", "--model", str(tmp_path)]))
    assert line.startswith(f"Error: cannot load the model {tmp_path}:")


def test_a_port_in_use_is_one_error_line(model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--model", str(model_dir), "--port", str(port)])
    assert "Address already in use" in error_line(result)


def test_a_bad_rate_limit_is_one_error_line(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIREPIPE_API_KEYS", "k")
    monkeypatch.setenv("FIREPIPE_RATE_LIMIT_RPS", "lots")
    line = error_line(CliRunner().invoke(main, ["serve", "--model", str(model_dir)]))
    assert "FIREPIPE_RATE_LIMIT_RPS must be a number" in line


def test_openapi_writes_the_committed_document(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    assert CliRunner().invoke(main, ["serve", "--openapi", str(out)]).exit_code == 0
    assert out.read_text() == OPENAPI_PATH.read_text()
    printed = CliRunner().invoke(main, ["serve", "--openapi", "-"])
    assert json.loads(printed.output) == json.loads(OPENAPI_PATH.read_text())


def _started(process: subprocess.Popen[str]) -> tuple[list[str], str]:
    """The lines printed up to the one saying where it listens, and its URL."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("listening on "):
            return lines, line.split()[2].rstrip(";")
    raise AssertionError(
        f"it did not start: {lines} {process.stderr.read() if process.stderr else ''}"
    )


@pytest.mark.slow
def test_serve_prints_what_it_serves_and_answers_until_stopped(model_dir: Path) -> None:
    env = {**os.environ, "FIREPIPE_API_KEYS": "cli-key", "PYTHONUNBUFFERED": "1"}
    env.pop("FIREPIPE_RATE_LIMIT_RPS", None)
    command = [
        sys.executable,
        "-m",
        "firepipe.cli",
        "serve",
        "--model",
        str(model_dir),
        "--port",
        "0",
    ]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            lines, url = _started(process)
            assert (
                lines[0]
                == f"serving {model_dir} (lightgbm, not compiled: "
                + lines[0].split("not compiled: ")[1]
            )
            assert lines[1].endswith("API keys: 1 (no rate limit)")
            assert requests.get(f"{url}/ping", timeout=10).json()["model_version"] == str(model_dir)
            answer = requests.post(
                f"{url}/invocations",
                data=orjson.dumps({"readings": readings("cli", 2)}),
                headers={"content-type": "application/json", "x-api-key": "cli-key"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"]) == 2
        finally:
            process.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then raises the signal again for its parent to see
            assert process.wait(timeout=20) == -signal.SIGTERM


@pytest.mark.slow
def test_a_new_deployment_serves_503_until_a_champion_exists(firepipe_home: Path) -> None:
    """--wait-for-model (the ECS service's): no champion yet is no error; the service listens
    and says why it cannot score, so a load balancer's liveness check passes meanwhile."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FIREPIPE_HOME": str(firepipe_home)}
    env.pop("FIREPIPE_API_KEYS", None)
    command = [sys.executable, "-m", "firepipe.cli", "serve", "--wait-for-model", "--port", "0"]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            lines, url = _started(process)
            assert not any(line.startswith("serving ") for line in lines)
            ping = requests.get(f"{url}/ping", timeout=10)
            assert (ping.status_code, ping.json()) == (503, {"detail": "no model loaded yet"})
            assert requests.get(f"{url}/openapi.json", timeout=10).status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        assert process.stderr is not None
        assert "waiting for the champion" in process.stderr.read()
