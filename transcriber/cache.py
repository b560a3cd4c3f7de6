"""Transcripts of files seen before: a file Telegram has seen before (the same `file_unique_id`, forwarded by
anyone) within a day is not transcribed again. Its transcript waits in `voice-transcript-cache` under a keyed hash
of that id and of the chat's vocabulary (which changes what Whisper writes), for 24 h.
"""

from __future__ import annotations

import msgspec

from infra.bus import Bus
from infra.bus.kvcache import KVCache
from infra.bus.names import BUCKET_TRANSCRIPT_CACHE
from infra.domain.contracts import AudioReceived, Segment
from infra.domain.notes import vocabulary_digest


class CachedTranscript(msgspec.Struct, frozen=True, kw_only=True):
    """A note's transcript as the transcriber knows it, before it becomes a `Transcript` for one note."""

    text: str
    language: str
    language_probability: float
    duration: float
    segments: tuple[Segment, ...]
    model: str


def transcript_cache_key(event: AudioReceived) -> str | None:
    """`<file fingerprint>.<vocabulary digest>`: a chat's `/forget` finds the file's transcripts by the prefix."""
    if not event.audio.fingerprint:
        return None
    return f"{event.audio.fingerprint}.{vocabulary_digest(event.vocabulary)}"


class TranscriptCache:
    def __init__(self, bus: Bus) -> None:
        self.kv = KVCache(bus, BUCKET_TRANSCRIPT_CACHE, CachedTranscript, "transcript")

    async def get(self, note: AudioReceived) -> CachedTranscript | None:
        """A transcript of this very file, heard with the same vocabulary, from the last day."""
        key = transcript_cache_key(note)
        return await self.kv.get(key) if key else None

    async def put(self, note: AudioReceived, known: CachedTranscript) -> None:
        if key := transcript_cache_key(note):
            await self.kv.put(key, known)
