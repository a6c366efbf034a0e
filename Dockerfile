# Cronpilot: one image for `cronpilot api`, `cronpilot worker` and `cronpilot migrate`.
# Build: docker build -t cronpilot .   (docker-compose.yml builds it for you)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# node runs the run_code action's JavaScript.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user; /app is its working directory, /data/files the root of file actions.
RUN groupadd --system --gid 10001 cronpilot \
    && useradd --system --uid 10001 --gid cronpilot --home-dir /app --create-home \
       --shell /usr/sbin/nologin cronpilot \
    && mkdir -p /data/files \
    && chown -R cronpilot:cronpilot /data

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so editing the code does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(chr(10).join(deps))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself, non-editable (migrations ship as package data); the sources go away after.
COPY . .
RUN pip install . \
    && cd / \
    && rm -rf /src

ENV CRONPILOT_API_HOST=0.0.0.0
ENV CRONPILOT_API_PORT=8000
ENV CRONPILOT_FILES_ROOT=/data/files

USER cronpilot
WORKDIR /app
EXPOSE 8000

# Liveness of `cronpilot api` (slim has no curl). The worker and migrate services disable it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CRONPILOT_API_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["cronpilot", "api"]
