"""The doubles as processes of their own: how the compose test runs them as containers on the stack's network.

    python -m voice_insight.doubles.serve telegram --token T   # the Bot API on :8081
    python -m voice_insight.doubles.serve telegram --token T --local /var/lib/telegram-bot-api --owner 101:101
                                                       # a local Bot API server (`--local`): files on the
                                                       # shared volume, as its user, 0600 in 0700 folders
    python -m voice_insight.doubles.serve openai --key K       # the OpenAI API on :8000 (/v1)
    python -m voice_insight.doubles.serve otlp                 # Jaeger's place: OTLP/HTTP on :4318, a query API
                                                       # on :16686 (/api/services), health on :14269
    python -m voice_insight.doubles.serve stub --port 3000     # 200 to anything (Grafana's place: no image here)

In a container the test cannot call a double's methods, so each double gets a few `/_control/...` routes beside
the API it plays, and `tests/compose_stack.py` drives them over HTTP: a user sending a voice note, the chat as the
user sees it, the services that sent spans.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.otlp import OTLPReceiver
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble


def message_json(message: SentMessage) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "chat_id": message.chat_id,
        "text": message.text,
        "history": message.history,
        "reply_to": message.reply_to,
        "keyboard": message.keyboard,
        "document": message.document.file_name if message.document else None,
    }


class ControlledTelegram(TelegramDouble):
    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_post("/_control/media", self._control_media)
        app.router.add_post("/_control/text", self._control_text)
        app.router.add_get("/_control/messages/{chat_id}", self._control_messages)
        app.router.add_get("/_control/calls", self._control_calls)

    async def _control_media(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = base64.b64decode(body.pop("data"))
        chat_id = body.pop("chat_id")
        return web.json_response({"message_id": await self.send_media(chat_id, data, **body)})

    async def _control_text(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"message_id": await self.send_text(body.pop("chat_id"), body.pop("text"), **body)})

    async def _control_messages(self, request: web.Request) -> web.Response:
        return web.json_response([message_json(m) for m in self.messages(int(request.match_info["chat_id"]))])

    async def _control_calls(self, request: web.Request) -> web.Response:
        return web.json_response([method for method, _ in self.calls])


class QueryableOTLP(OTLPReceiver):
    """Jaeger's collector and the part of its query API the test reads (`/api/services`, as Jaeger shapes it)."""

    async def query(self, request: web.Request) -> web.Response:
        services = sorted({span.service for span in self.spans})
        return web.json_response({"data": services, "total": len(services), "limit": 0, "offset": 0, "errors": None})

    async def spans_json(self, request: web.Request) -> web.Response:
        return web.json_response([{"service": s.service, "trace_id": s.trace_id, "name": s.name} for s in self.spans])


def _api_hash_given() -> bool:
    """The app's hash, from the environment or the file `TELEGRAM_API_HASH_FILE` names (a compose secret)."""
    hash_file = os.environ.get("TELEGRAM_API_HASH_FILE", "")
    return bool(os.environ.get("TELEGRAM_API_HASH") or (hash_file and Path(hash_file).read_text().strip()))


async def _answer_ok(request: web.Request) -> web.Response:
    return web.json_response({"database": "ok", "version": "stub"})


async def _site(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    if args.double == "telegram":
        telegram = ControlledTelegram(args.token)
        if args.local:
            if not _api_hash_given():  # as the aiogram/telegram-bot-api entrypoint refuses to start
                raise SystemExit("error: expected TELEGRAM_API_HASH or TELEGRAM_API_HASH_FILE env vars to be set")
            telegram.local_mode, telegram.local_dir = True, Path(args.local)
            uid, _, gid = args.owner.partition(":")
            telegram.local_owner = (int(uid), int(gid or uid)) if uid else None
        await telegram.start("0.0.0.0", args.port or 8081)
        runners.append(telegram._runner)  # type: ignore[arg-type]
    elif args.double == "openai":
        openai = OpenAIDouble(args.key)
        await openai.start("0.0.0.0", args.port or 8000)
        runners.append(openai._runner)  # type: ignore[arg-type]
    elif args.double == "otlp":
        otlp = QueryableOTLP()
        await otlp.start("0.0.0.0", args.port or 4318)
        runners.append(otlp._runner)  # type: ignore[arg-type]
        query = web.Application()
        query.router.add_get("/api/services", otlp.query)
        query.router.add_get("/_control/spans", otlp.spans_json)
        runners.append(await _site(query, 16686))
        health = web.Application()
        health.router.add_get("/", _answer_ok)
        runners.append(await _site(health, 14269))
    else:
        stub = web.Application()
        stub.router.add_route("*", "/{path:.*}", _answer_ok)
        runners.append(await _site(stub, args.port or 8080))
    print(f"{args.double} double serving", flush=True)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m voice_insight.doubles.serve")
    parser.add_argument("double", choices=("telegram", "openai", "otlp", "stub"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="")
    parser.add_argument("--key", default="")
    parser.add_argument("--local", default="", help="play a --local Bot API server keeping its files here")
    parser.add_argument("--owner", default="", help="uid:gid the local server's files belong to")
    asyncio.run(main(parser.parse_args()))
