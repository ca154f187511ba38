"""`firepipe actions`: the OpenAPI document printed and checked, and serve's refusals."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from click.testing import CliRunner

from firepipe.cli import main
from firepipe_tests.conftest import REPO_ROOT

COMMITTED = REPO_ROOT / "docs" / "openapi" / "actions.json"


def test_openapi_prints_the_committed_document() -> None:
    result = CliRunner().invoke(main, ["actions", "openapi"])
    assert result.exit_code == 0, result.output
    assert result.output == COMMITTED.read_text()
    assert json.loads(result.output)["openapi"] == "3.0.0"


def test_openapi_check_passes_on_the_committed_document_and_fails_on_another(
    tmp_path: Path,
) -> None:
    ok = CliRunner().invoke(main, ["actions", "openapi", "--check", "--path", str(COMMITTED)])
    assert ok.exit_code == 0, ok.output
    assert "is the generated document" in ok.output
    stale = tmp_path / "actions.json"
    stale.write_text(COMMITTED.read_text().replace("getGeneration", "getGen"))
    result = CliRunner().invoke(main, ["actions", "openapi", "--check", "--path", str(stale)])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: {stale} differs from the generated document")
    missing = CliRunner().invoke(
        main, ["actions", "openapi", "--check", "--path", str(tmp_path / "none.json")]
    )
    assert (missing.exit_code, missing.output.strip()) == (
        1,
        f"Error: no committed document at {tmp_path / 'none.json'}",
    )


def test_serve_refuses_a_bad_port_and_a_port_in_use(firepipe_home: Path) -> None:
    bad = CliRunner().invoke(main, ["actions", "serve", "--port", "70000"])
    assert bad.exit_code == 2
    assert "--port" in bad.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["actions", "serve", "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(f"Error: cannot listen on 127.0.0.1:{port}")


def test_serve_answers_with_the_keys_of_the_inference_service(firepipe_home: Path) -> None:
    import os
    import subprocess
    import sys

    import requests

    env = {**os.environ, "FIREPIPE_API_KEYS": "k1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "firepipe.cli", "actions", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        while line and "listening on" not in line:
            line = server.stdout.readline()
        url = line.split("listening on ")[1].split(";")[0]
        assert "1 API key" in line or "key" in line
        assert requests.get(f"{url}/openapi.json", timeout=10).json()["openapi"] == "3.0.0"
        refused = requests.get(f"{url}/generations", timeout=10)
        assert refused.status_code == 401
        listed = requests.get(f"{url}/generations", headers={"x-api-key": "k1"}, timeout=10)
        assert (listed.status_code, listed.json()) == (200, {"generations": []})
    finally:
        server.terminate()
        server.wait(timeout=30)
