"""The CLI starts light: `--help` loads no heavy library, `history` only Dagster (its resource
is a Dagster resource) and not what a Dagster instance or the lakehouse would load. Asserted as
the modules a fresh interpreter holds afterwards, not as timings."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import click
import dagster as dg
import pytest
from pydantic import PrivateAttr

import firepipe.cli
from firepipe.cli.context import initialised

HEAVY = {
    "polars",
    "pyiceberg",
    "pyarrow",
    "numpy",
    "mlflow",
    "lightgbm",
    "pyspark",
    "numba",
    "boto3",
    # what Dagster's ephemeral instance loads; the CLI initialises plain resources without one
    "sqlalchemy",
    "alembic",
}

LOADED_AFTER = """
import json, sys
from click.testing import CliRunner
from firepipe.cli.app import main
result = CliRunner().invoke(main, sys.argv[1:])
assert result.exit_code == 0, result.output
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_after(*args: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running `firepipe ARGS`."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER, *args], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.usefixtures("firepipe_home")  # the subprocess inherits FIREPIPE_HOME
def test_help_loads_neither_dagster_nor_any_heavy_library() -> None:
    loaded = loaded_after("--help")
    assert "firepipe" in loaded
    assert not loaded & (HEAVY | {"dagster"})


@pytest.mark.usefixtures("firepipe_home")
def test_history_loads_dagster_alone() -> None:
    loaded = loaded_after("history")
    assert "dagster" in loaded  # the history store is a Dagster resource
    assert not loaded & HEAVY


DEFS, DEFINITIONS = ["firepipe", "defs"], ["firepipe", "definitions"]


def imported_names(source: str, package: str) -> set[str]:
    """Every module (and module.name) that `source`, a module of `package`, imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_in_the_cli_imports_the_definitions() -> None:
    # The parse sees absolute, relative and from-imports alike.
    assert "firepipe.defs.lake" in imported_names("from ..defs import lake", "firepipe.cli")
    assert "firepipe.defs" in imported_names("from firepipe import defs", "firepipe.cli")
    modules = sorted(Path(firepipe.cli.__file__).parent.glob("*.py"))
    assert {"app.py", "lake.py", "models.py", "generate.py"} <= {m.name for m in modules}
    for module in modules:
        names = imported_names(module.read_text(), "firepipe.cli")
        defs = sorted(n for n in names if n.split(".")[:2] in (DEFS, DEFINITIONS))
        assert not defs, f"{module.name} imports {defs}"


class Plain(dg.ConfigurableResource):
    table: str
    region: str = "eu-west-1"


class WithSetup(dg.ConfigurableResource):
    table: str
    _ready: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._ready = True


def test_a_plain_resource_is_built_with_its_variables_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIREPIPE_TEST_TABLE", "runs")
    with click.Context(click.Command("x")):
        value = initialised(Plain(table=dg.EnvVar("FIREPIPE_TEST_TABLE")))
    assert isinstance(value, Plain)
    assert (value.table, value.region) == ("runs", "eu-west-1")


def test_an_unset_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREPIPE_TEST_TABLE", raising=False)
    with click.Context(click.Command("x")), pytest.raises(click.ClickException) as raised:
        initialised(Plain(table=dg.EnvVar("FIREPIPE_TEST_TABLE")))
    assert raised.value.message.startswith("FIREPIPE_TEST_TABLE is not set: Plain.table reads it")


def test_a_resource_with_lifecycle_hooks_is_initialised_by_dagster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIREPIPE_TEST_TABLE", "runs")
    with click.Context(click.Command("x")):
        value = initialised(WithSetup(table=dg.EnvVar("FIREPIPE_TEST_TABLE")))
        assert value._ready
        assert value.table == "runs"
