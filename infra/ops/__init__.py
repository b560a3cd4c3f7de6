"""Operations, on top of every other layer: running the stack (`launcher`), creating its streams and buckets
(`provision`), its NATS accounts (`access`), checking an analyzer written elsewhere (`conformance`) and installing
the packaged Whisper model (`packaged_model`). The console entry point that calls these is `voice_insight.cli`,
above the services.
"""
