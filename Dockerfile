# civicbot for running at scale: the same image serves the web app (`civicbot serve`) and runs
# the background worker (`civicbot worker`); see compose.yaml and docs/scale.md.
FROM python:3.11-slim AS build
# A C compiler for the PB tally's optional kernel (flows/pb/_mes.c).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY channels ./channels
COPY flows ./flows
COPY storage ./storage
COPY admin ./admin
RUN python -m venv /opt/civicbot \
    && /opt/civicbot/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim
COPY --from=build /opt/civicbot /opt/civicbot
RUN useradd --system --home-dir /app --create-home civicbot
USER civicbot
WORKDIR /app
ENV PATH=/opt/civicbot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CIVICBOT_HOST=0.0.0.0 \
    CIVICBOT_PORT=8000
EXPOSE 8000
# Liveness: the web process answers and reaches the database (/health also needs a worker).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["civicbot", "serve"]
