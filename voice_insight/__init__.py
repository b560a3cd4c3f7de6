"""The `voice-insight` command line, above the services: `voice_insight.cli`."""
