# Telentir server: one container; data in the /data volume, the master key apart in /keys.
#   docker build -t telentir .
#   docker run -d --name telentir -p 127.0.0.1:8000:8000 -v telentir-data:/data -v telentir-keys:/keys telentir
# Published on loopback: a TLS proxy goes in front (docs/deploy.md); it alone can bound how
# many connections one address opens (docs/security.md).
# docs/deploy.md: the first user, the key as a Docker secret, backups, upgrades.
# Pinned base image: the same Python as development and CI.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing the code does not reinstall them. Every package, direct or
# not, is pinned with its hashes (`make lock`): the build installs exactly what was tested.
COPY requirements.lock .
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock

# A fixed, unprivileged user; /data and /keys are created owned by it so fresh named volumes
# are writable, /keys readable by it alone.
RUN groupadd --system --gid 10001 telentir \
    && useradd --system --uid 10001 --gid telentir --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin telentir \
    && mkdir /data /keys \
    && chown telentir:telentir /data /keys \
    && chmod 0700 /keys

COPY app.py gunicorn.conf.py schema.sql ./
COPY telentir ./telentir

USER telentir
# The master key seals the private keys stored in /data: it lives in another volume (or
# point TELENTIR_MASTER_KEY_FILE at a Docker secret, /run/secrets/…), so a copy of the
# data volume alone opens nothing.
ENV TELENTIR_DATA_DIR=/data \
    TELENTIR_MASTER_KEY_FILE=/keys/master.key
VOLUME ["/data", "/keys"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Exec form: gunicorn's master is PID 1 and receives SIGTERM for a graceful stop.
CMD ["python", "-m", "telentir", "serve", "--host", "0.0.0.0", "--port", "8000"]
