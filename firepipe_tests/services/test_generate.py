"""The generator's Pipes entry point: how it picks its Pipes channels and what it refuses."""

import subprocess
import sys
from pathlib import Path

import pytest
from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    DAGSTER_PIPES_MESSAGES_ENV_VAR,
    PipesMappingParamsLoader,
    PipesS3ContextLoader,
    PipesS3MessageWriter,
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


def test_a_local_subprocess_uses_the_default_channels() -> None:
    local = loader({"path": "/tmp/context.json"}, {"path": "/tmp/messages"})
    assert generate.pipes_io(local) == (None, None)


def test_batch_bootstrap_parameters_select_the_s3_channels(aws_credentials: None) -> None:
    remote = loader({"bucket": "b", "key": "pipes/x/context.json"}, {"bucket": "b"})
    context_loader, message_writer = generate.pipes_io(remote)
    assert isinstance(context_loader, PipesS3ContextLoader)
    assert isinstance(message_writer, PipesS3MessageWriter)
    assert message_writer.interval == generate.S3_MESSAGE_INTERVAL_S


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
