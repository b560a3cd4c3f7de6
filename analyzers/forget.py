"""`/forget`, a mode's analyzer's part: its cached analyses of a forgotten chat's transcripts. Only this mode's
account may write (and so erase) its keys of the cache; it is asked on a subject of its own."""

from __future__ import annotations

from infra.bus import Bus, Delivery, consumes
from infra.bus.names import STREAM_FORGET, SUBJECT_FORGET_ANALYSES_PREFIX
from infra.domain.contracts import ForgetAnalyses
from infra.domain.notes import forget_analyses


class AnalysisForgetter:
    def __init__(self, bus: Bus, mode: str) -> None:
        self.bus = bus
        self.mode = mode

    @consumes(
        SUBJECT_FORGET_ANALYSES_PREFIX + "{mode}",
        "analyzer-{mode}-forget",
        stage="forget",
        mode="{mode}",
        stream=STREAM_FORGET,
    )
    async def on_forget_analyses(self, request: ForgetAnalyses, delivery: Delivery) -> None:
        await forget_analyses(self.bus, self.mode, request.digests)
