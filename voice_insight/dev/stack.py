"""`voice-insight dev`: `voice-insight up` (the launcher's embedded nats-server, provisioning, every service as a
child) with the Telegram double in place of Telegram, and the OpenAI double in place of an LLM unless one is
configured (OPENAI_API_KEY or OPENAI_BASE_URL, in the environment or `.env`).

The doubles serve on this process's event loop, beside the launcher. The children get the person's settings with
what would reach outside replaced: the bot's token and Bot API, NATS (always an embedded server, in a state folder
of its own), webhooks, the local Bot API server; everyone may use the bot. Once the gateway polls and every mode
has announced itself, the stack says where things are: how to send a note, the NATS an analyzer written elsewhere
logs in to (`--external NAME`), how to change a mode on it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys
import time

from infra.bus import Bus
from infra.domain.modes import live_modes
from infra.domain.registry import ModeRegistry
from infra.ops.access import ADMIN, Logins, analyzer_user
from infra.ops.launcher import packaged_model, run_stack
from infra.runtime.settings import Settings
from infra.service.run import load_or_exit
from voice_insight.dev.state import Running, StackFile, folder
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.serve import ControlledTelegram

DEV_TOKEN = "1000000001:voice-insight-development-bot"
"""The development bot's token: any token the double knows will do; it reaches no Telegram."""
DEV_KEY = "sk-voice-insight-development"
TELL_EVERY = 30.0
"""Seconds between two lines saying what the stack still waits for before it is ready."""


def say(line: str) -> None:
    print(f"{'dev':<14}| {line}", flush=True)


def dev_env(mine: Settings, telegram: str, openai: str | None) -> dict[str, str]:
    """What the children get instead of the person's settings (an empty value counts as unset)."""
    env = {
        "TELEGRAM_TOKEN": DEV_TOKEN,
        "TELEGRAM_TOKEN_FILE": "",
        "TELEGRAM_API_BASE": telegram,
        "TELEGRAM_LOCAL_MODE": "",
        "WEBHOOK_URL": "",  # long polling, from the double
        "WEBHOOK_SECRET": "",
        "WEBHOOK_SECRET_FILE": "",
        "NATS_URL": "",  # the launcher's embedded server
        "NATS_USER": "",
        "NATS_PASSWORD_FILE": "",
        "NATS_CREDENTIALS_DIR": "",
        "NATS_TLS_CA_FILE": "",
        "JETSTREAM_REPLICAS": "",
        "VOICE_INSIGHT_STATE_DIR": str(folder(mine.state_dir)),
        "ALLOWED_USERS": "open",
        "METRICS_PORT": os.environ.get("METRICS_PORT", "0"),  # no side doors unless asked: `up` may hold 9100+
    }
    if openai is not None:
        env |= {"OPENAI_API_KEY": DEV_KEY, "OPENAI_API_KEY_FILE": "", "OPENAI_BASE_URL": openai}
    if mine.whisper_model == Settings.whisper_model and (packaged := packaged_model(mine.state_dir)) is not None:
        env["WHISPER_MODEL"] = str(packaged)  # assembled once, under `up`'s state folder, for both
    return env


def serve(args: argparse.Namespace) -> int:
    mine = load_or_exit("dev", ())
    # This process's own connections (the launcher's registry follower, the readiness check) have nothing to say
    # a developer needs, "disconnected" at every close least of all; each service logs its own.
    logging.getLogger("voice_insight.bus").setLevel(logging.ERROR)
    return asyncio.run(_serve(mine, args))


async def _serve(mine: Settings, args: argparse.Namespace) -> int:
    stack = StackFile(mine.state_dir)
    if (other := stack.read()) is not None:
        print(f"voice-insight dev: a development stack runs here already (pid {other.pid})", file=sys.stderr)
        return 1
    telegram = ControlledTelegram(DEV_TOKEN)
    await telegram.start()
    openai = None if mine.analyses_possible else OpenAIDouble(DEV_KEY, any_model=True)
    if openai is not None:
        await openai.start()
    modes = [m for m in args.modes.split(",") if m] if args.modes else None
    external = tuple(name.strip() for name in (args.external or "").split(",") if name.strip())
    try:
        os.environ.update(dev_env(mine, telegram.base_url, openai.base_url if openai else None))
        settings = load_or_exit("dev", ())
        stack.write(Running(os.getpid(), telegram.base_url))
        llm = f"the OpenAI double at {openai.base_url} (any model)" if openai else f"your LLM at {mine.openai_base_url}"
        say(f"Telegram double at {telegram.base_url} (no token), {llm}; state in {folder(mine.state_dir)}")

        async def when_ready(servers: list[str]) -> None:
            await _ready(settings, servers, modes, telegram)
            stack.write(Running(os.getpid(), telegram.base_url, servers[0], ready=True))
            _tell(settings, servers[0], external, openai)

        return await run_stack(settings, 1, modes, external, on_started=when_ready)
    finally:
        stack.remove()
        await telegram.stop()
        if openai is not None:
            await openai.stop()


async def _ready(settings: Settings, servers: list[str], modes: list[str] | None, telegram: ControlledTelegram) -> None:
    """Until the gateway polls the double and every mode the stack runs is live (a note takes the live modes)."""
    logins = Logins(settings.state_dir.resolve() / "nats-credentials")
    bus = await Bus.connect(servers, name="dev", user=ADMIN, password=logins.password(ADMIN))
    told = time.monotonic()
    try:
        registry = await ModeRegistry.open(bus)
        while True:
            wanted = set(modes) if modes is not None else {d.name for d in await registry.all() if d.enabled}
            missing = sorted(wanted - {m.mode for m in await live_modes(bus)})
            polling = any(method.lower() == "getupdates" for method, _ in telegram.calls)
            if not missing and polling:
                return
            if time.monotonic() - told > TELL_EVERY:
                told = time.monotonic()
                waits = [f"mode {m}" for m in missing] + ([] if polling else ["the gateway"])
                say(f"not ready yet: waiting for {', '.join(waits)}")
            await asyncio.sleep(0.5)
    finally:
        await bus.close(grace=1)


def _tell(settings: Settings, nats: str, external: tuple[str, ...], openai: OpenAIDouble | None) -> None:
    """Where things are, as lines to paste."""
    logins = Logins(settings.state_dir.resolve() / "nats-credentials")
    say("ready. Send a voice note (any audio file ffmpeg reads) from a development user, in another terminal here:")
    say("    voice-insight dev send FILE [--chat ID] [--lang en|ru]")
    say(f"NATS: NATS_URL={nats}")
    for name in external:
        user = analyzer_user(name)
        login = f"NATS_URL={nats} NATS_USER={user} NATS_PASSWORD_FILE={shlex.quote(str(logins.file(user)))}"
        say(f"analyzer {name}, written elsewhere, logs in with: {login}")
    admin = f"NATS_URL={nats} NATS_USER={ADMIN} NATS_PASSWORD_FILE={shlex.quote(str(logins.file(ADMIN)))}"
    say(f"check it: {admin} voice-insight conformance {external[0] if external else 'NAME'}")
    llm = f" OPENAI_BASE_URL={openai.base_url} OPENAI_API_KEY={DEV_KEY}" if openai is not None else ""
    say(f"change a mode (its prompt, its model): {admin}{llm} voice-insight modes edit DEFAULT")
    say("Ctrl-C stops it all.")
