"""The shared run loop of a service process: settings once, logging, signals, graceful stop.

A service's `__main__` hands over a `serve(settings, stop)` coroutine; this module owns the process edges, so
every service fails the same way on bad settings (one line, exit 2) and stops the same way on SIGTERM/Ctrl-C.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from infra.runtime.logs import setup_logging
from infra.runtime.settings import Settings, SettingsError, load_settings
from infra.runtime.telemetry import setup_tracing, shutdown_tracing
from infra.service.lifespan import Refused, Stopped

CONFIG_ERROR_EXIT = 2

Serve = Callable[[Settings, asyncio.Event], Awaitable[None]]


def load_or_exit(service: str, required: tuple[str, ...]) -> Settings:
    try:
        return load_settings(required)
    except SettingsError as exc:
        print(f"voice-insight {service}: {exc}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT) from None


def run_service(service: str, required: tuple[str, ...], serve: Serve) -> None:
    settings = load_or_exit(service, required)
    setup_logging(service, settings.log_level, settings.secrets)
    setup_tracing(service)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(main())
    except Stopped:
        pass  # stopped while it waited for a dependency: nothing was started, nothing to finish
    except Refused as exc:
        print(f"voice-insight {service}: {exc}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT) from None
    finally:
        shutdown_tracing()
