"""Each service's small HTTP side door: `/metrics` (Prometheus text), `/health`, and extra JSON routes.

The side door listens on loopback unless `METRICS_HOST` says otherwise (compose sets `0.0.0.0` so Prometheus
and the health checks reach it inside the compose network): on a server without a firewall it is not public.

`/health` is 200 only when the service is connected to NATS *and* ready (the model loaded, the consumers
started); otherwise 503 with a short JSON reason, which is what an orchestrator's health check and a load
balancer need to route around a replica.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from infra.runtime.metrics import HEALTHY, NATS_CONNECTED
from infra.runtime.settings import Settings

log = logging.getLogger("voice_insight.health")

JsonRoute = Callable[[], Awaitable[object]]

DEFAULT_PORTS = {
    "gateway": 9101,
    "formatter": 9102,
    "transcriber": 9103,
    "analyzer": 9104,
    "registrar": 9099,
    "asker": 9098,
}
"""Standalone defaults; `voice-insight up` gives every child its own port from METRICS_PORT upwards. The
registrar and the asker sit below the analyzers, whose modes take the ports from 9104 up."""


def port_for(role: str, settings: Settings) -> int:
    return settings.metrics_port if settings.metrics_port is not None else DEFAULT_PORTS[role]


class HealthServer:
    def __init__(self, service: str, port: int, connected: Callable[[], bool], host: str = "127.0.0.1") -> None:
        self.service = service
        self.port = port
        self.host = host
        self.connected = connected
        self.ready = False
        self.waiting_for: str | None = None
        """A dependency the service cannot reach yet (NATS, provisioning, Telegram, its model): it waits, and
        says so here, rather than exiting into a restart loop."""
        self.routes: dict[str, JsonRoute] = {}
        self._runner: web.AppRunner | None = None

    def add_json_route(self, path: str, handler: JsonRoute) -> None:
        self.routes[path] = handler

    def status(self) -> tuple[int, dict[str, str]]:
        if self.waiting_for:
            return 503, {"status": "waiting", "reason": f"waiting for {self.waiting_for}"}
        if not self.connected():
            return 503, {"status": "unavailable", "reason": "not connected to NATS"}
        if not self.ready:
            return 503, {"status": "starting", "reason": "not ready yet"}
        return 200, {"status": "ok", "service": self.service}

    async def _health(self, request: web.Request) -> web.Response:
        code, body = self.status()
        return web.json_response(body, status=code)

    async def _metrics(self, request: web.Request) -> web.Response:
        HEALTHY.set(1 if self.status()[0] == 200 else 0)
        NATS_CONNECTED.set(1 if self.connected() else 0)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _json(self, handler: JsonRoute) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def respond(request: web.Request) -> web.Response:
            return web.json_response(await handler(), dumps=lambda o: json.dumps(o, ensure_ascii=False))

        return respond

    async def _extra(self, request: web.Request) -> web.Response:
        handler = self.routes.get("/" + request.match_info["name"])
        if handler is None:
            raise web.HTTPNotFound()
        return await self._json(handler)(request)

    async def start(self) -> None:
        if not self.port:
            return  # METRICS_PORT=0: no side door
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/{name}", self._extra)  # routes may be added after start
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("metrics and health on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
