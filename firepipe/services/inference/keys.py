"""Who may call /invocations: API keys (the `x-api-key` header, as API Gateway names it) and a
token bucket per key.

Keys come from FIREPIPE_API_KEYS (comma-separated) and, on ECS, from the Secrets Manager secret
FIREPIPE_API_KEYS_SECRET names (read once at start). The secret holds a JSON list of keys, a
JSON object whose values are keys (the console's key/value form: names for the callers), or
comma-separated text. Inside a SageMaker endpoint no key is checked: IAM signs InvokeEndpoint
and API Gateway's usage plans meter the callers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from firepipe.lib.aws_env import API_KEYS_SECRET_VAR, AWS_REGION_VAR
from firepipe.lib.secret_refs import SecretReference, SecretReferenceError

API_KEYS_VAR = "FIREPIPE_API_KEYS"
RATE_LIMIT_RPS_VAR = "FIREPIPE_RATE_LIMIT_RPS"
RATE_LIMIT_BURST_VAR = "FIREPIPE_RATE_LIMIT_BURST"


class KeyConfigError(ValueError):
    """Keys or limits configured in a way the service will not start with."""


class ApiKeys:
    """The configured keys, kept as SHA-256 digests: a presented key is hashed and compared
    with every digest in constant time, so neither its content nor which key it matched shows
    in the time of the answer."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(hashlib.sha256(k.encode()).digest() for k in dict.fromkeys(keys))
        if not self._digests:
            raise KeyConfigError("no API keys given")

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, presented: bytes) -> int | None:
        """The index of the key `presented` is (the caller's bucket), None when it is none."""
        digest = hashlib.sha256(presented).digest()
        found = None
        for index, known in enumerate(self._digests):
            if hmac.compare_digest(known, digest):
                found = index
        return found


def split_keys(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def secret_keys(secret_string: str) -> list[str]:
    """The keys a secret holds: a JSON list, a JSON object's values, or comma-separated text."""
    try:
        document = json.loads(secret_string)
    except json.JSONDecodeError:
        return split_keys(secret_string)
    values = document.values() if isinstance(document, dict) else document
    if not isinstance(values, Iterable) or isinstance(values, str):
        return split_keys(secret_string)
    if not all(isinstance(v, str) for v in values):
        raise KeyConfigError("the API keys secret's JSON must hold strings only")
    return [v.strip() for v in values if v.strip()]


def read_secret(secret_id: str, client: Any = None) -> str:
    """The secret's string (`secret_id`: its name or ARN)."""
    import boto3

    client = client or boto3.client("secretsmanager", region_name=os.environ.get(AWS_REGION_VAR))
    try:
        return SecretReference(secret_id).read(client)
    except SecretReferenceError as e:  # a binary secret
        raise KeyConfigError(f"the API keys secret: {e}") from e


def load_keys(
    environ: Mapping[str, str], *, sagemaker: bool, read: Callable[[str], str] = read_secret
) -> ApiKeys | None:
    """The keys to check, or None: none configured, or inside a SageMaker endpoint."""
    if sagemaker:
        return None
    keys: list[str] = []
    if environ.get(API_KEYS_VAR, "").strip():
        keys += split_keys(environ[API_KEYS_VAR])
        if not keys:
            raise KeyConfigError(f"{API_KEYS_VAR} is set but names no key")
    secret_id = environ.get(API_KEYS_SECRET_VAR, "").strip()
    if secret_id:
        from_secret = secret_keys(read(secret_id))
        if not from_secret:  # starting open would hide the mistake
            raise KeyConfigError(f"the API keys secret {secret_id} holds no key")
        keys += from_secret
    return ApiKeys(keys) if keys else None


class RateLimiter:
    """A token bucket per caller: `rate_per_s` tokens a second, at most `burst` saved up."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)) or burst < 1:
            raise KeyConfigError("a rate limit needs a rate > 0 per second and a burst >= 1")
        self.rate_per_s, self.burst, self._clock = rate_per_s, burst, clock
        self._buckets: dict[int, tuple[float, float]] = {}  # caller -> (tokens, at)

    def wait_s(self, caller: int) -> float:
        """0 when the caller may go now (a token is taken), else the seconds until it may."""
        now = self._clock()
        tokens, at = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s


@dataclass(frozen=True)
class Refusal:
    """Why a request is not let through: its status, detail and Retry-After (for a 429)."""

    status: int
    detail: str
    retry_after: str | None = None


@dataclass(frozen=True)
class Access:
    keys: ApiKeys | None
    limiter: RateLimiter | None
    sagemaker: bool = False

    def refusal(self, presented: bytes | None) -> Refusal | None:
        """None when a request with this `x-api-key` (None: none sent) may go (a rate token is
        taken), else a 401 (no valid key, when keys are on) or a 429 (the key's rate)."""
        if self.keys is None:
            return None
        caller = None if presented is None else self.keys.match(presented)
        if caller is None:
            return Refusal(401, "a valid x-api-key header is required")
        wait_s = 0.0 if self.limiter is None else self.limiter.wait_s(caller)
        if wait_s > 0:
            return Refusal(429, "rate limit of this key exceeded", str(max(1, math.ceil(wait_s))))
        return None

    def describe(self) -> str:
        if self.sagemaker:
            return "API keys: off (a SageMaker endpoint: IAM authenticates)"
        if self.keys is None:
            return "API keys: off"
        limit = (
            f"{self.limiter.rate_per_s:g}/s per key, burst {self.limiter.burst}"
            if self.limiter
            else "no rate limit"
        )
        return f"API keys: {len(self.keys)} ({limit})"


def load_access(environ: Mapping[str, str], *, sagemaker: bool) -> Access:
    """Keys and rate limit from the environment (a limit applies per key, so only with keys)."""
    keys = load_keys(environ, sagemaker=sagemaker)
    rate = environ.get(RATE_LIMIT_RPS_VAR, "").strip()
    if keys is None or not rate:
        return Access(keys, None, sagemaker)
    try:
        rate_per_s = float(rate)
        burst_text = environ.get(RATE_LIMIT_BURST_VAR, "").strip()
        burst = int(burst_text) if burst_text else max(1, math.ceil(rate_per_s))
    except (ValueError, OverflowError) as e:
        raise KeyConfigError(
            f"{RATE_LIMIT_RPS_VAR} must be a number and {RATE_LIMIT_BURST_VAR} an integer: {e}"
        ) from e
    return Access(keys, RateLimiter(rate_per_s, burst))
