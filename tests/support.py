"""Helpers shared by the tests that drive one service's handlers directly (no `voice-insight up`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from infra.bus import Delivery, Reject, Retry

NOTES = [
    "The budget review moves to Thursday morning.",
    "Please send the sales report before Wednesday evening.",
    "Our new office opens next Monday in the city center.",
    "Call the supplier about the delayed shipment today.",
    "The team dinner is on Friday at seven o'clock.",
    "Remember to renew the software licenses this month.",
]
"""Short notes that the packaged `base` model gets right; `KEYWORDS` finds each in its answer."""
KEYWORDS = ["budget", "sales", "office", "supplier", "friday", "licen"]


class Redelivered:
    """Calls a handler the way JetStream delivers a message: again after each `Retry`, with the attempt count."""

    def __init__(self, handler: Callable[[Any, Delivery], Awaitable[None]], time_scale: float = 1.0) -> None:
        self.handler = handler
        self.time_scale = time_scale
        self.retries: list[float] = []

    async def __call__(self, event: Any, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.handler(event, Delivery(subject="voice.test", attempt=attempt))
                return "acked"
            except Retry as retry:
                self.retries.append(retry.delay)
                assert time.monotonic() + retry.delay * self.time_scale < deadline, f"still retrying: {retry}"
                await asyncio.sleep(retry.delay * self.time_scale)
            except Reject as reject:
                return f"rejected:{reject.reason}"
