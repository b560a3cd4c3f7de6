"""Analyzers: one process per mode, each with its own durable consumer on `voice.transcript`."""
