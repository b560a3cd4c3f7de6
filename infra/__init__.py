"""What every service shares, in layers; each may import only the layers below it, and none imports a service.

    ops       operations: the launcher, provisioning, NATS accounts, conformance, the packaged model
    service   how a process runs a service: settings once, lifespan, waits, drain and close
    voice     the bot's voice: texts, buttons, transcript files, the Bot API client
    domain    contracts, mode definitions and their registry, notes, answers, limits, usage
    bus       the delivery mechanism: names, consumers and outcomes, the client (knows no domain)
    runtime   settings, logging, metrics, tracing, the health side door (knows nothing above it)

`service` sits on `bus` and `runtime` only; `voice` and `domain` never see a service's life. Deployment files
that are not Python live beside the layers: `config/` (NATS, Prometheus, Grafana, the shipped modes),
`systemd/`, and `bootstrap.sh` (set-up, secrets, the test command). `tests/test_layers.py` keeps these rules.
"""
