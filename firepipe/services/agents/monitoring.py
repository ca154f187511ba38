"""The monitoring agent: a readings batch in, its score events out on the events topic.

Online features and scoring are the inference service's engine (`ScoringEngine`), in process,
with the champion the service would load (`ModelHolder`). A batch that cannot be scored (a
value out of its channel's range, a time in the future) is a poison message: MessageError.
"""

from __future__ import annotations

from firepipe.core.agents import messages
from firepipe.core.serving.engine import RejectedReadingsError
from firepipe.resources.topic import Topic
from firepipe.services.inference.source import ModelHolder


class ModelNotReadyError(RuntimeError):
    """No model loaded yet: the message is retried later."""


class MonitoringAgent:
    def __init__(self, holder: ModelHolder, topic: Topic) -> None:
        self.holder, self.topic = holder, topic

    def handle(self, body: str, group: str | None = None) -> int:
        """Score the batch and publish its events (in the batch's FIFO `group`: a device's
        score events stay in the order of its readings); returns how many were scored."""
        batch = messages.decode_readings(body)
        engine = self.holder.engine
        if engine is None:
            raise ModelNotReadyError(f"no model loaded from {self.holder.source.description}")
        try:
            # Readings too late to score online are left to gold, not refused: a batch that
            # waited out a worker's crash is late through no fault of its own.
            scored = engine.score_columns(batch.readings, batch.profiles, skip_late=True)
        except RejectedReadingsError as error:
            raise messages.MessageError(f"readings batch {batch.batch_id}: {error}") from None
        attributes = {messages.KIND: messages.SCORES}
        if group:
            attributes[messages.GROUP] = group
        for body_out in messages.encode_scores(batch, scored):
            self.topic.publish(body_out, attributes)
        return len(scored)
