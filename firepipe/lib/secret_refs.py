"""Secret references in ECS's form, `<secret ARN>[:<JSON key>[:<version stage>[:<version id>]]]`,
read where nothing injects them: a Lambda function gets no `secrets` as an ECS task does, so
it reads the reference the Dagster instance already names (DAGSTER_PG_PASSWORD_SECRET_ARN,
which the ECS run launcher hands to each run) at its cold start."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from firepipe.lib.aws_env import AWS_REGION_VAR

_ARN_PARTS = 7  # arn:aws:secretsmanager:<region>:<account>:secret:<name>-<suffix>


class SecretReferenceError(ValueError):
    """A reference that names no readable value."""


@dataclass(frozen=True)
class SecretReference:
    arn: str
    key: str | None = None
    stage: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> SecretReference:
        parts = text.strip().split(":")
        if len(parts) < _ARN_PARTS or parts[:3] != ["arn", parts[1], "secretsmanager"]:
            raise SecretReferenceError(f"{text!r} is not a Secrets Manager secret ARN")
        if not parts[1].startswith("aws") or len(parts) > _ARN_PARTS + 3:
            raise SecretReferenceError(f"{text!r} is not a Secrets Manager secret reference")
        extra = [p or None for p in parts[_ARN_PARTS:]] + [None] * 3
        return cls(":".join(parts[:_ARN_PARTS]), extra[0], extra[1], extra[2])

    def read(self, client: Any) -> str:
        """The secret's string, or its JSON key's value."""
        request: dict[str, str] = {"SecretId": self.arn}
        if self.stage:
            request["VersionStage"] = self.stage
        if self.version:
            request["VersionId"] = self.version
        text = client.get_secret_value(**request).get("SecretString")
        if text is None:
            raise SecretReferenceError(f"{self.arn} holds no SecretString")
        if self.key is None:
            return str(text)
        try:
            value = json.loads(text)[self.key]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise SecretReferenceError(f"{self.arn} holds no JSON key {self.key!r}") from None
        return str(value)


def fill_from_reference(
    name: str,
    reference_var: str,
    environ: MutableMapping[str, str] | None = None,
    client: Any = None,
) -> bool:
    """Set `name` from the secret `reference_var` names, unless `name` is set already or no
    reference is given; whether it was set."""
    environ = os.environ if environ is None else environ
    reference = environ.get(reference_var, "").strip()
    if environ.get(name) or not reference:
        return False
    parsed = SecretReference.parse(reference)
    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=environ.get(AWS_REGION_VAR))
    environ[name] = parsed.read(client)
    return True
