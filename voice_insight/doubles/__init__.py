"""HTTP doubles for the two outside services we cannot reach in tests (the Telegram Bot API and OpenAI), and
an OTLP receiver standing in for Jaeger's collector."""

from __future__ import annotations

from aiohttp import web


class LoopbackServer:
    """An aiohttp app on a free 127.0.0.1 port; subclasses add routes and say what their base URL looks like."""

    _runner: web.AppRunner | None = None
    base_url: str = ""

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a free loopback port; a double in a container of the compose test listens on its own network
        (`voice_insight/doubles/serve.py`)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.base_url = self.url(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self.base_url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
