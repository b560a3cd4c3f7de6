"""Today's LLM tokens for the whole bot (`DAILY_TOKEN_BUDGET`): one counter every LLM caller checks and spends from.

Checked before a call and spent after it, so a burst of calls at the limit may pass it by a little; what it guards
is a day's bill, not a single token. A counter that cannot be written is logged and the answer still goes out:
the bill is the operator's to watch (`voice_insight_daily_tokens`), the user's answer is not to be lost over it.
"""

from __future__ import annotations

import logging

from infra.bus import Bus
from infra.bus.names import BUCKET_BUDGET
from infra.domain.contracts import Usage
from infra.domain.limits import DailyCounter
from infra.runtime.metrics import DAILY_TOKENS

log = logging.getLogger("voice_insight.analyzer")


class TokenBudget:
    def __init__(self, bus: Bus, daily_tokens: int) -> None:
        self.bus = bus
        self.daily_tokens = daily_tokens
        """0: no budget."""

    async def used_up(self) -> bool:
        if not self.daily_tokens:
            return False
        used = await DailyCounter(await self.bus.kv(BUCKET_BUDGET)).get("tokens")
        DAILY_TOKENS.set(used)
        return used >= self.daily_tokens

    async def spend(self, usage: Usage) -> None:
        try:
            total = await DailyCounter(await self.bus.kv(BUCKET_BUDGET)).add(
                "tokens", usage.input_tokens + usage.output_tokens
            )
            DAILY_TOKENS.set(total)
        except Exception as exc:
            log.warning("token budget not updated (%s)", type(exc).__name__)
