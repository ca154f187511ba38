"""The generator's Pipes entry point: how it picks its Pipes channels and what it refuses."""

import subprocess
import sys
from pathlib import Path

import pytest
from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    DAGSTER_PIPES_MESSAGES_ENV_VAR,
    PipesMappingParamsLoader,
    encode_param,
)

from firepipe.services import generate


def loader(context: dict[str, str], messages: dict[str, str]) -> PipesMappingParamsLoader:
    return PipesMappingParamsLoader(
        {
            DAGSTER_PIPES_CONTEXT_ENV_VAR: encode_param(context),
            DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_param(messages),
        }
    )


class Extras:
    """Only what `generate.run` reads before it generates: the extras."""

    def __init__(self, extras: dict[str, object]) -> None:
        self.extras = extras


def test_extras_without_a_spec_or_directory_are_refused() -> None:
    with pytest.raises(generate.GenerateRequestError, match=r"lack \['spec'\]"):
        generate.run(Extras({"directory": "/tmp/x"}))  # type: ignore[arg-type]


@pytest.mark.slow
def test_outside_dagster_it_says_what_to_run_instead(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "firepipe.services.generate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "firepipe generate" in done.stderr
