"""Names shared by the constructs: construct ids from resource names, and firepipe's own
environment selector (read from firepipe/settings.py as text, as env_names reads aws_env.py)."""

from __future__ import annotations

import re

from firepipe_infra.env_names import AWS_ENV_MODULE, env_names

# firepipe/settings.py's ENV_VAR ("FIREPIPE_ENV"): "aws" selects the AWS resources.
FIREPIPE_ENV = env_names(AWS_ENV_MODULE.parents[1] / "settings.py")["ENV_VAR"]


def pascal(name: str) -> str:
    """A construct id from a resource's name: "generator-cuda" -> "GeneratorCuda"."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name) if part)
