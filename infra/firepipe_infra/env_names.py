"""The names of the environment variables firepipe reads in AWS, from firepipe/lib/aws_env.py
(and firepipe/settings.py, for the choices it reads such as FIREPIPE_SNOWFLAKE_AUTH).

The CDK app has an environment of its own without firepipe, so it reads that module as text
(its `NAME_VAR = "VALUE"` assignments) rather than importing it: one list of names for the
code that reads them and the stacks that set them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

AWS_ENV_MODULE = Path(__file__).resolve().parents[2] / "firepipe" / "lib" / "aws_env.py"
SETTINGS_MODULE = AWS_ENV_MODULE.parents[1] / "settings.py"


@cache
def env_names(module: Path = AWS_ENV_MODULE) -> dict[str, str]:
    """Every `*_VAR = "..."` constant of the module: {"LAKE_WAREHOUSE_VAR": "FIREPIPE_...", ...}."""
    tree = ast.parse(module.read_text(), filename=str(module))
    names = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.endswith("_VAR")
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            names[node.targets[0].id] = node.value.value
    return names


def env_name(constant: str) -> str:
    """The variable `constant` names in aws_env.py or settings.py (e.g. "LANDING_BUCKET_VAR"),
    or a clear error when firepipe no longer defines it, so a renamed variable fails
    synthesis, not a deploy."""
    for module in (AWS_ENV_MODULE, SETTINGS_MODULE):
        if constant in env_names(module):
            return env_names(module)[constant]
    raise KeyError(f"neither {AWS_ENV_MODULE} nor {SETTINGS_MODULE} defines {constant}")


@cache
def enum_values(class_name: str, module: Path = SETTINGS_MODULE) -> tuple[str, ...]:
    """The string values of an enum class of the module (e.g. settings.py's SnowflakeAuth), read
    as text as the names are, so a configuration is checked against what firepipe accepts."""
    tree = ast.parse(module.read_text(), filename=str(module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return tuple(
                member.value.value
                for member in node.body
                if isinstance(member, ast.Assign)
                and isinstance(member.value, ast.Constant)
                and isinstance(member.value.value, str)
            )
    raise KeyError(f"{module} defines no class {class_name}")
