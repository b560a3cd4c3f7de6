"""`voice-insight formatter`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging

from formatter.digest import DigestDesk, DigestReplies
from formatter.forget import ChatForgetter
from formatter.join import JoinStore
from formatter.marks import AnswerMarks
from formatter.note_desk import serve_notes
from formatter.questions import QuestionDesk
from formatter.queue import export_transcriber_backlog
from formatter.replies import QuestionReplies
from formatter.sending import Sender
from formatter.service import FormatterService
from infra.bus.names import BUCKET_ANSWERED, BUCKET_JOINS, BUCKET_PACE
from infra.bus.pace import SharedPace
from infra.runtime.health import port_for
from infra.runtime.settings import Settings
from infra.service.lifespan import lifespan
from infra.service.run import run_service
from infra.voice.telegram import make_bot

log = logging.getLogger("voice_insight.formatter")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with lifespan("formatter", settings, port_for("formatter", settings), log, stop) as life:
        bot = make_bot(settings, pace=SharedPace(await life.bus.kv(BUCKET_PACE)))  # one pace with every writer
        life.closing(bot.session.close)
        service = FormatterService(
            life.bus,
            bot,
            JoinStore(await life.bus.kv(BUCKET_JOINS)),
            AnswerMarks(await life.bus.kv(BUCKET_ANSWERED)),
            join_timeout=settings.join_timeout,
            max_audio_seconds=settings.max_audio_seconds,
            transcription_deadline=settings.transcription_deadline,
            notify_after=settings.notify_after,
        )
        await life.bus.start(service)
        await life.bus.start(ChatForgetter(life.bus, bot))
        await life.bus.start(QuestionDesk(life.bus))
        await life.bus.start(QuestionReplies(life.bus, Sender(bot), service.marks))
        await life.bus.start(DigestDesk(life.bus))
        await life.bus.start(DigestReplies(life.bus, Sender(bot), service.marks))
        await serve_notes(life.bus)  # the buttons' reads of a note, for the gateway
        export_transcriber_backlog(life.bus)  # still measured with every transcriber gone
        life.ready()
        await stop.wait()


def run(args: argparse.Namespace | None = None) -> None:
    run_service("formatter", ("TELEGRAM_TOKEN",), serve)


if __name__ == "__main__":
    run()
