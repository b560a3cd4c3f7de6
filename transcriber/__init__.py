"""The transcriber: speech to text with faster-whisper. What it consumes, publishes and does on failure:
`transcriber.service`."""
