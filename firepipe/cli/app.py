"""`firepipe`: the command line for people and scripts outside the Dagster UI.

Each command imports what it needs when it runs, so `firepipe --help` answers without loading
dagster, polars or pyiceberg; nothing here imports `firepipe.defs`. Errors are turned into one
`Error:` line here, for every command, so a command raises what it meets and need not wrap it.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click

from firepipe.cli import (
    actions,
    agent,
    agents,
    bench,
    generate,
    kb,
    lake,
    models,
    notifications,
    runs,
    serve,
)

DEBUG_VAR = "FIREPIPE_DEBUG"

# firepipe's error types whose message is written for the user, by module and name. An exception
# can be one of them only when its module is loaded, so the handler looks them up in sys.modules
# rather than importing pyiceberg or numpy to report, say, a missing history file. (ValueError,
# which SettingsError, NistDataError and ApprovalError extend, is matched directly.)
USER_ERRORS = (
    ("firepipe.lib.lakehouse.tables", "LakehouseError"),
    ("firepipe.resources.query", "QueryError"),
    ("firepipe.core.simulation.backends", "BackendUnavailableError"),
)
# What click handles itself: its own errors (printed as they are) and exits, and EOFError,
# which click's main turns into an abort.
_CLICK_OWN = (click.ClickException, click.exceptions.Exit, click.Abort, EOFError)


def one_line(text: str) -> str:
    """`text` with its line breaks and runs of spaces made single spaces (a Rust error from
    polars lists its causes on lines of their own)."""
    return " ".join(text.split())


def _user_error_types() -> tuple[type[BaseException], ...]:
    loaded = (getattr(sys.modules.get(module), name, None) for module, name in USER_ERRORS)
    return (ValueError, *(t for t in loaded if isinstance(t, type)))


def describe(exc: BaseException) -> str:
    """The one line that reports `exc`: a file error names its path, a user error says its own
    message, anything else says its type too."""
    if isinstance(exc, OSError) and exc.filename is not None:
        where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return f"{where}: {exc.strerror or one_line(str(exc)) or type(exc).__name__}"
    message = one_line(str(exc))
    if message and isinstance(exc, _user_error_types()):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class FirepipeGroup(click.Group):
    """The top group: any exception a command raises ends as one `Error:` line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _CLICK_OWN:
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_VAR, "").strip() not in ("", "0"):
                raise
            raise click.ClickException(describe(exc)) from exc


@click.group(cls=FirepipeGroup)
def main() -> None:
    """firepipe: synthetic fire-sensor data, lakehouse and detectors on Dagster.

    A failing command prints one `Error: ...` line on stderr and exits with 1 (2 for a usage
    error); set FIREPIPE_DEBUG=1 to see the Python traceback instead.
    """
    if os.environ.get(DEBUG_VAR, "").strip() in ("", "0"):
        # Dagster's notes that an API firepipe uses is in beta or preview speak to firepipe's
        # developers (the tests show them), not to someone running a command.
        warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")


for command in (
    runs.home,
    runs.seed,
    runs.summary,
    runs.history,
    generate.generate,
    models.calibrate,
    models.evaluate_real,
    models.promote,
    lake.features,
    lake.lake,
    bench.bench,
    notifications.notifications,
    serve.serve,
    agents.agents,
    agents.alerts,
    agents.replay,
    kb.kb,
    actions.actions,
    agent.agent,
):
    main.add_command(command)
