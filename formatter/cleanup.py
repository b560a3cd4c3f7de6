"""After the answer: the user's audio and join need not wait for the 24 h TTL, the note stops counting against
its sender's notes in flight, and its minutes count against their day.

Best effort on every count: what is not removed here expires under its TTL, and a limit not updated lets the
in-flight mark expire within the hour.
"""

from __future__ import annotations

import logging

import nats.js.errors

from formatter.join import JoinState, JoinStore
from infra.bus import Bus
from infra.bus.names import BUCKET_QUOTA
from infra.domain.limits import DailyCounter, note_finished

log = logging.getLogger("voice_insight.formatter")


async def forget(bus: Bus, joins: JoinStore, cid: str, state: JoinState, erased: bool = False) -> None:
    """`erased`: the note went whole because its chat said `/forget` while it was in flight (`formatter.forget`):
    its join and audio are gone with every trace (a purge here would leave a marker naming it), and its minutes do
    not count (a private chat's `/forget` erased the day's count)."""
    try:
        await note_finished(bus, cid)
        if not erased and state.user_key and state.transcript is not None:
            await DailyCounter(await bus.kv(BUCKET_QUOTA)).add(state.user_key, state.transcript.duration)
    except Exception as exc:
        log.warning("%s: limits not updated (%s); the in-flight mark expires within the hour", cid, type(exc).__name__)
    if erased:
        return
    try:
        await joins.forget(cid)
        if state.object_name:
            store = await bus.audio_store()
            await store.delete(state.object_name)
    except nats.js.errors.NotFoundError:
        pass
    except Exception as exc:
        log.warning("%s: early clean-up failed (%s); the TTL will remove it", cid, type(exc).__name__)
