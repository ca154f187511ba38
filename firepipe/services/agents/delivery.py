"""One message through one handler, the same for a worker process and a Lambda function: done,
dead-lettered with its reason, or left for another try.

A message no handler can read (MessageError) goes to the dead-letter queue at once: no retry
can fix it. Any other failure is tried again (the message reappears after its visibility
timeout) until the queue's receive limit, when it goes to the dead-letter queue with the last
error as its reason (SQS's own redrive would move it silently, reason lost).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from firepipe.core.agents.messages import MessageError
from firepipe.resources.queue import Message, MessageQueue, ReceiptError

log = logging.getLogger(__name__)
MAX_REASON_CHARS = 1000

Handler = Callable[[Message], object]


class Outcome(enum.Enum):
    DONE = "done"  # handled: delete it
    DEAD = "dead"  # in the dead-letter queue with its reason (gone from the queue)
    RETRY = "retry"  # failed: leave it to reappear


def deliver(
    queues: MessageQueue, queue: str, message: Message, handle: Handler, max_receives: int
) -> Outcome:
    try:
        handle(message)
        return Outcome.DONE
    except MessageError as error:
        return _dead(queues, queue, message, f"unreadable: {error}")
    except Exception as error:
        what = f"{type(error).__name__}: {error}"
        if message.receive_count >= max_receives:
            return _dead(queues, queue, message, f"failed {message.receive_count} times: {what}")
        log.warning(
            "%s message %s failed (receive %d of %d): %s",
            queue,
            message.id,
            message.receive_count,
            max_receives,
            what,
            exc_info=not isinstance(error, RuntimeError),
        )
        return Outcome.RETRY


def _dead(queues: MessageQueue, queue: str, message: Message, reason: str) -> Outcome:
    reason = reason[:MAX_REASON_CHARS]
    try:
        queues.dead_letter(queue, message, reason)
    except ReceiptError:
        # Received again elsewhere since (its visibility ran out): that receive decides.
        log.warning("%s message %s changed hands before it was dead-lettered", queue, message.id)
        return Outcome.RETRY
    log.error("%s message %s dead-lettered: %s", queue, message.id, reason)
    return Outcome.DEAD
