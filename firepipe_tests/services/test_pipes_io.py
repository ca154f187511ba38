"""The Pipes side of firepipe's entry points: which channels they open, and their `main`."""

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

from firepipe.services.pipes_io import S3_MESSAGE_INTERVAL_S, pipes_io


def loader(context: dict[str, str], messages: dict[str, str]) -> PipesMappingParamsLoader:
    return PipesMappingParamsLoader(
        {
            DAGSTER_PIPES_CONTEXT_ENV_VAR: encode_param(context),
            DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_param(messages),
        }
    )


def test_a_local_subprocess_uses_the_default_channels() -> None:
    local = loader({"path": "/tmp/context.json"}, {"path": "/tmp/messages"})
    assert pipes_io(local) == (None, None)


def test_batch_or_emr_bootstrap_parameters_select_the_s3_channels(aws_credentials: None) -> None:
    remote = loader({"bucket": "b", "key": "pipes/x/context.json"}, {"bucket": "b"})
    context_loader, message_writer = pipes_io(remote)
    assert isinstance(context_loader, PipesS3ContextLoader)
    assert isinstance(message_writer, PipesS3MessageWriter)
    assert message_writer.interval == S3_MESSAGE_INTERVAL_S


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "instead"),
    [
        ("firepipe.services.generate", "firepipe generate"),
        ("firepipe.services.spark_features", "engine 'spark'"),
    ],
)
def test_outside_dagster_an_entry_point_says_what_to_run_instead(
    module: str, instead: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert instead in done.stderr
    assert "runs under Dagster Pipes" in done.stderr
