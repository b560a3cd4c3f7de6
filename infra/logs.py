"""Logging for every service: one line per record, service name first, no user content by construction.

Handlers log correlation IDs (opaque keyed hashes), stages, reasons and timings; never chat or user ids,
never text. The launcher prefixes child output by service name, so a process logs only its own role.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that would log request URLs (the bot token is part of Bot API URLs) stay at WARNING.
    for noisy in ("aiogram.event", "aiohttp.access", "httpx", "httpx2", "openai", "faster_whisper"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
