"""Exclusive, non-blocking locks that end with their holder: a file lock on one machine, a
renewed lease in DynamoDB across machines. Taking a held lock fails at once with `LockHeldError`,
which carries what the holder wrote about itself (a run id, since when).

File lock: `flock`, not `lockf`. The kernel drops an flock when its holder's process dies,
SIGKILL included, so a killed run never leaves it behind; and flocks conflict between two opens
of the file in one process too, where POSIX record locks (`lockf`) do not (two threads, or two
in-process runs, would both get one).

DynamoDB lease: an item written on condition that none is there or the one there has expired;
a thread renews it every third of its duration while the holder lives, so a holder killed
without a word (OOM, a lost machine) frees it within one lease duration.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


class LockHeldError(RuntimeError):
    """The lock is held by another; `holder` is what it wrote (None if it wrote nothing yet)."""

    def __init__(self, what: str, holder: Mapping[str, str] | None) -> None:
        super().__init__(f"{what} is held by {dict(holder) if holder else 'another holder'}")
        self.holder = dict(holder) if holder else None


def _read_holder(text: str) -> dict[str, str] | None:
    try:
        holder = json.loads(text)
    except ValueError:
        return None  # the holder took the lock and has not written itself yet
    return {str(k): str(v) for k, v in holder.items()} if isinstance(holder, dict) else None


@contextmanager
def file_lock(path: Path, holder: Mapping[str, str]) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created with its folder) and write `holder` into it;
    raise LockHeldError with the current holder's record when another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(str(path), _read_holder(path.read_text())) from None
        # Rewritten only once held, so a refused taker reads the holder's record (or, in the
        # instant between the lock and the write, the previous holder's or none: never a mix).
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(dict(holder)).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


class DynamoLease:
    """A lease on item `key` of a DynamoDB table whose partition key is `key_attribute` (S)."""

    def __init__(
        self, client: Any, table: str, key_attribute: str, key: str, duration_s: float
    ) -> None:
        if duration_s <= 0:
            raise ValueError(f"a lease needs a positive duration, got {duration_s}")
        self.client, self.table, self.duration_s = client, table, duration_s
        self.key = {key_attribute: {"S": key}}
        self.names = {"#k": key_attribute}

    def _holder(self) -> dict[str, str] | None:
        item = self.client.get_item(TableName=self.table, Key=self.key, ConsistentRead=True)
        found = item.get("Item")
        return None if found is None else _read_holder(found.get("holder", {}).get("S", ""))

    def _take(self, token: str, holder: Mapping[str, str]) -> None:
        now = time.time()
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    **self.key,
                    "token": {"S": token},
                    "holder": {"S": json.dumps(dict(holder))},
                    "expires_at": {"N": repr(now + self.duration_s)},
                },
                ConditionExpression="attribute_not_exists(#k) OR expires_at < :now",
                ExpressionAttributeNames=self.names,
                ExpressionAttributeValues={":now": {"N": repr(now)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            raise LockHeldError(f"lease {self.key} in {self.table}", self._holder()) from None

    def _renew_until(self, stop: threading.Event, token: str) -> None:
        while not stop.wait(self.duration_s / 3):
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=self.key,
                    UpdateExpression="SET expires_at = :until",
                    ConditionExpression="#t = :token",
                    ExpressionAttributeNames={"#t": "token"},
                    ExpressionAttributeValues={
                        ":until": {"N": repr(time.time() + self.duration_s)},
                        ":token": {"S": token},
                    },
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                # Taken over after it expired (this process stalled past the lease): the
                # holder's own guards (a compare-and-set watermark) still keep its writes safe.
                return
            except Exception:
                # A failed call (network, throttling) is not a lost lease: two more renewals
                # come before it expires.
                continue

    @contextmanager
    def held(self, holder: Mapping[str, str]) -> Iterator[None]:
        """Take the lease (LockHeldError if another has it), renew it while inside, then free it."""
        token = uuid.uuid4().hex
        self._take(token, holder)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew_until, args=(stop, token), name="lease-renewal", daemon=True
        )
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            # Only while still ours: another may have taken it over after it expired.
            with suppress(self.client.exceptions.ConditionalCheckFailedException):
                self.client.delete_item(
                    TableName=self.table,
                    Key=self.key,
                    ConditionExpression="#t = :token",
                    ExpressionAttributeNames={"#t": "token"},
                    ExpressionAttributeValues={":token": {"S": token}},
                )
