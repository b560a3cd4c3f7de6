"""How a process runs a service: settings once, logging and tracing, signals, then one lifespan.

`run` owns the process edges (exit 2 on bad settings, a graceful stop on SIGTERM); `lifespan` connects the bus,
waits for what is not there yet, and drains and closes in order. It sits on `infra.bus` and `infra.runtime`, so
the bus never depends on how a service lives. Every service's `__main__` is the same few lines:

    run_service("formatter", REQUIRED, serve)

with `serve` an `async with lifespan(...)` block.
"""

from infra.service.lifespan import Life, Refused, Stopped, lifespan
from infra.service.run import CONFIG_ERROR_EXIT, load_or_exit, run_service

__all__ = ["CONFIG_ERROR_EXIT", "Life", "Refused", "Stopped", "lifespan", "load_or_exit", "run_service"]
