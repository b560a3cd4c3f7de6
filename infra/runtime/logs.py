"""Logging for every service: one line per record, service name first, no user content, no secrets.

Handlers log correlation IDs (opaque keyed hashes), stages, reasons and timings; never chat or user ids,
never text. Libraries are another matter: aiohttp's errors quote the URL they failed on, and a Bot API URL
carries the bot token. So every formatted line, tracebacks included, passes through `Redactor`, which replaces
each secret the service knows (bot token, API key, NATS password) before it is written; uncaught exceptions
go through the same filter.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable
from types import TracebackType

REDACTED = "[redacted]"


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is replaced whole. However short a secret is, it is one:
        # a line that loses an innocent "abcd" to a four-letter password is the lesser harm.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, redact: Redactor) -> None:
        super().__init__(fmt)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(service: str, level: str = "INFO", secrets: Iterable[str] = ()) -> Redactor:
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(f"%(asctime)s %(levelname)-7s {service} %(name)s: %(message)s", redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that would log request URLs (the bot token is part of Bot API URLs) stay at WARNING.
    for noisy in ("aiogram.event", "aiohttp.access", "httpx", "httpx2", "openai", "faster_whisper"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

    sys.excepthook = excepthook
    return redact
