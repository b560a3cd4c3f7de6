"""The domain: what a voice note becomes and who may ask for what, independent of Telegram.

`contracts` (the versioned events on the bus, published as JSON Schema by `schemas`), `definitions` and
`registry` (analysis modes as live data), `modes` (which analyzers are up), `notes` (an answered note, kept for
its buttons), `answers` (the "answered" marks that make one answer per note), `limits` (access, quotas, fair
order) and `usage` (what the modes cost). It may import `infra.bus` and `infra.runtime`; it never imports
aiogram or the bot's voice.
"""
