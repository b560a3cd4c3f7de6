"""Gateway: the Telegram bot. Takes voice notes in, stores them, and publishes `AudioReceived`."""
