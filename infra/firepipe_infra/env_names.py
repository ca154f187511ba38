"""The names of the environment variables firepipe reads in AWS, from firepipe/lib/aws_env.py.

The CDK app has an environment of its own without firepipe, so it reads that module as text
(its `NAME_VAR = "VALUE"` assignments) rather than importing it: one list of names for the
code that reads them and the stacks that set them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

AWS_ENV_MODULE = Path(__file__).resolve().parents[2] / "firepipe" / "lib" / "aws_env.py"


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
    """The variable `constant` names in aws_env.py (e.g. "LANDING_BUCKET_VAR"), or a clear error
    when firepipe no longer defines it, so a renamed variable fails synthesis, not a deploy."""
    try:
        return env_names()[constant]
    except KeyError:
        raise KeyError(f"{AWS_ENV_MODULE} defines no {constant}") from None
