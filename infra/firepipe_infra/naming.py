"""Names shared by the constructs: construct ids from resource names, and firepipe's own
environment selector (read from firepipe/settings.py as text, as every variable's name is)."""

from __future__ import annotations

import re

from firepipe_infra.env_names import env_name

# firepipe/settings.py's ENV_VAR ("FIREPIPE_ENV") and the value of its Environment that selects
# the AWS resources: every firepipe process of the deployment gets IN_AWS.
FIREPIPE_ENV = env_name("ENV_VAR")
IN_AWS = {FIREPIPE_ENV: "aws"}


def pascal(name: str) -> str:
    """A construct id from a resource's name: "generator-cuda" -> "GeneratorCuda"."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name) if part)
