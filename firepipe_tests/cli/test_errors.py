"""Every command reports a mistake as one `Error:` line and a non-zero exit, never a traceback
(FIREPIPE_DEBUG=1 brings the traceback back)."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from firepipe.cli import main
from firepipe.cli.app import DEBUG_VAR, USER_ERRORS, FirepipeGroup, describe
from firepipe_tests.conftest import free_port


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def error_line(result: Result) -> str:
    """The one `Error:` line of a failed command (stderr is part of `output` in click 8.2)."""
    assert result.exit_code != 0, result.output
    # An uncaught exception would be kept here (CliRunner prints no traceback of its own).
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def raising(exc: BaseException) -> click.Group:
    """A group of the CLI's kind whose one command, `fail`, raises `exc`."""

    @click.group(cls=FirepipeGroup)
    def group() -> None: ...

    @group.command()
    def fail() -> None:
        raise exc

    return group


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_VAR, raising=False)


def test_the_top_group_is_the_one_that_handles_errors() -> None:
    assert isinstance(main, FirepipeGroup)
    assert "FIREPIPE_DEBUG=1" in run("--help").output


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            PermissionError(13, "Permission denied", "/data/out"),
            "Error: /data/out: Permission denied",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "/proc/forbidden"),
            "Error: /proc/forbidden: No such file or directory",
        ),
        (ValueError("rows must be >= 2"), "Error: rows must be >= 2"),
        (RuntimeError("the worker died"), "Error: RuntimeError: the worker died"),
        (KeyError("sensor_id"), "Error: KeyError: 'sensor_id'"),
        (AssertionError(), "Error: AssertionError"),
        (
            # polars' object-store errors list their causes on lines of their own
            ConnectionRefusedError(
                "object-store error: Generic S3 error: PUT failed\n\nCaused by:\n"
                "    0: client error (Connect)\n    1: Connection refused (os error 111)"
            ),
            "Error: ConnectionRefusedError: object-store error: Generic S3 error: PUT failed "
            "Caused by: 0: client error (Connect) 1: Connection refused (os error 111)",
        ),
    ],
)
def test_an_exception_becomes_one_error_line(exc: Exception, line: str) -> None:
    result = CliRunner().invoke(raising(exc), ["fail"])
    assert result.exit_code == 1
    assert error_line(result) == line
    assert result.output.strip() == line  # nothing else: no traceback, no usage


def test_firepipe_errors_say_their_message_alone() -> None:
    from firepipe.core.simulation.backends import BackendUnavailableError
    from firepipe.lib.lakehouse.tables import LakehouseError
    from firepipe.resources.query import QueryError

    for exc in (LakehouseError("no table"), QueryError("bad sql"), BackendUnavailableError("x")):
        assert describe(exc) == str(exc)
    # Each listed type still exists where the handler looks for it.
    for module, name in USER_ERRORS:
        assert issubclass(getattr(importlib.import_module(module), name), Exception)


def test_click_errors_and_exits_pass_through_unchanged() -> None:
    usage = CliRunner().invoke(raising(click.BadParameter("no", param_hint="--x")), ["fail"])
    assert usage.exit_code == 2
    assert "Usage:" in usage.output
    assert "Error: Invalid value for --x: no" in usage.output
    assert CliRunner().invoke(raising(click.exceptions.Exit(3)), ["fail"]).exit_code == 3
    assert CliRunner().invoke(raising(SystemExit(4)), ["fail"]).exit_code == 4


def test_firepipe_debug_gives_the_traceback_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEBUG_VAR, "1")
    result = CliRunner().invoke(raising(RuntimeError("boom")), ["fail"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)  # not turned into a ClickException
    assert "Error:" not in result.output


# The cases a tester found, through the real commands.


def test_generate_into_an_unwritable_folder(tmp_path: Path) -> None:
    line = error_line(run("generate", "--rows", "100", "--out", "/proc/forbidden"))
    assert "/proc/forbidden" in line


def test_generate_on_a_gpu_backend_that_is_not_installed(tmp_path: Path) -> None:
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    line = error_line(run("generate", "--rows", "100", "--out", str(tmp_path), "--backend", "cupy"))
    assert "cupy" in line


def test_generate_into_an_object_store_that_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    for var, value in {
        "AWS_ENDPOINT_URL": closed,
        "AWS_ENDPOINT_URL_S3": closed,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
        "POLARS_CLOUD_MAX_RETRIES": "0",  # polars' object store retries 8 times (10 s) otherwise
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    line = error_line(run("generate", "--rows", "100", "--out", "s3://no-such-bucket-xyz/prefix"))
    assert "s3://no-such-bucket-xyz/prefix" in line


def test_lake_show_without_a_namespace_lists_the_tables(firepipe_home: Path) -> None:
    import polars as pl

    from firepipe.lib.lakehouse import tables
    from firepipe.resources.lakehouse import LocalLakehouse

    catalog = LocalLakehouse(root=str(firepipe_home / "lake")).catalog()
    tables.write_table(catalog, "silver.sensor_readings", pl.DataFrame({"device_id": ["a"]}))
    line = error_line(run("lake", "show", "sensor_readings"))
    assert "'sensor_readings' is not 'namespace.table'" in line
    assert line.endswith("existing tables: silver.sensor_readings")
    missing = error_line(run("lake", "show", "silver.nope"))
    assert "table silver.nope does not exist yet" in missing
    assert missing.endswith("existing tables: silver.sensor_readings")


def test_lake_show_of_a_missing_table_in_an_empty_lake(firepipe_home: Path) -> None:
    line = error_line(run("lake", "show", "silver.nope"))
    assert line.endswith("existing tables: none yet (`make run` materialises them)")


def test_a_bad_environment_setting_is_one_line(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIREPIPE_ENV", "staging")
    assert error_line(run("history")) == "Error: FIREPIPE_ENV='staging' is not one of: local, aws"


def test_a_missing_aws_variable_is_named(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIREPIPE_ENV", "aws")
    monkeypatch.delenv("FIREPIPE_GENERATION_HISTORY_TABLE", raising=False)
    line = error_line(run("history"))
    assert line.startswith("Error: FIREPIPE_GENERATION_HISTORY_TABLE is not set")


def test_a_damaged_history_file_is_one_line(firepipe_home: Path) -> None:
    firepipe_home.mkdir(parents=True)
    (firepipe_home / "generation_history.db").write_text("not a database")
    line = error_line(run("history"))
    assert line == f"Error: {sqlite3.DatabaseError.__name__}: file is not a database"


def test_a_home_that_is_a_file_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    monkeypatch.setenv("FIREPIPE_HOME", str(home))
    assert error_line(run("home")) == f"Error: {home / 'dagster'}: Not a directory"
