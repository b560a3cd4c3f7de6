"""`/forget`, the transcriber's part: the chat's cached transcripts and the pieces of its long notes, which only
the transcriber keeps (and so only it may erase), once the formatter has named them."""

from __future__ import annotations

from infra.bus import Bus, Delivery, consumes
from infra.bus.names import CONSUMER_TRANSCRIBER_FORGET, STREAM_FORGET, SUBJECT_FORGET_TRANSCRIPTS
from infra.domain.contracts import ForgetTranscripts
from infra.domain.notes import forget_transcripts


class TranscriptForgetter:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @consumes(SUBJECT_FORGET_TRANSCRIPTS, CONSUMER_TRANSCRIBER_FORGET, stage="forget", stream=STREAM_FORGET)
    async def on_forget_transcripts(self, request: ForgetTranscripts, delivery: Delivery) -> None:
        await forget_transcripts(
            self.bus, request.chat_key, request.fingerprints, pieces=request.pieces, notes=request.notes
        )
