"""Transcriber: turns stored voice notes into transcripts with faster-whisper."""
