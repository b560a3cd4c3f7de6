"""Formatter: joins transcript and analyses by correlation ID and answers through the Bot API."""
