"""Webhook mode: Telegram posts each update to us, and any number of gateways behind a load balancer take them.

An update is taken into the `UPDATES` stream exactly as a polled one (`take_in`), and only then answered 200:
if NATS is away the answer is 503 and Telegram posts the update again later, so nothing is lost. The same
update posted twice, to one gateway or to two, is kept once (its message ID is the update's), and the shared
`gateway` consumer hands it to one of them. A request without Telegram's secret header is refused with 401, one
with a wrong secret with 403, compared in constant time; neither touches anything.
"""

from __future__ import annotations

import hmac
import logging

import msgspec
from aiohttp import web

from gateway.updates import take_in
from infra.bus import Bus

log = logging.getLogger("voice_insight.gateway")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_UPDATE_BYTES = 1024 * 1024
"""An update is a few kilobytes (files come by reference); anything bigger is not from Telegram."""


class UpdateId(msgspec.Struct):
    update_id: int


_decode = msgspec.json.Decoder(UpdateId).decode


class WebhookReceiver:
    def __init__(self, bus: Bus, bot_id: int, secret: str, path: str) -> None:
        self.bus = bus
        self.bot_id = bot_id
        self.secret = secret.encode()
        self.path = path or "/"
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPDATE_BYTES)
        app.router.add_post(self.path, self.receive)
        return app

    async def receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            return web.Response(status=401, text="no secret token")
        if not hmac.compare_digest(given.encode(), self.secret):
            log.warning("webhook: a request with a wrong secret token was refused")
            return web.Response(status=403, text="wrong secret token")
        body = await request.read()
        try:
            update_id = _decode(body).update_id
        except msgspec.MsgspecError:
            return web.Response(status=400, text="not an update")
        try:
            await take_in(self.bus, self.bot_id, update_id, body)
        except Exception as exc:  # NATS away: Telegram keeps the update and posts it again
            log.warning("webhook: update not taken in (%s); Telegram will retry", type(exc).__name__)
            return web.Response(status=503, text="try again later")
        return web.Response(status=200)

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        log.info("webhook: listening on %s:%d%s", host, port, self.path)

    async def stop(self) -> None:
        """No new update is taken (Telegram retries what it could not post); those taken finish in the stream."""
        if self._runner is not None:
            await self._runner.cleanup()
