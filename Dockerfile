# Telentir server: one container; data in the /data volume, the master key apart in /keys.
#   docker build -t telentir .
#   docker run -d --name telentir -p 127.0.0.1:8000:8000 -v telentir-data:/data -v telentir-keys:/keys telentir
# The port is published on loopback only: put the TLS proxy of docs/deploy.md §1 in front of it
# (and set TELENTIR_PROXY_HOPS=1, TELENTIR_COOKIE_SECURE=true) rather than exposing plain HTTP;
# it alone can bound how many connections one address opens (docs/security.md).
# docs/deploy.md §3: the first user, the key as a secret, compose.yaml, read-only root, backups.
#
# The base is the same Python as development and CI. BASE_IMAGE swaps it for any image whose
# `python` and `pip` are /usr/local/bin's and which has groupadd/useradd (the test suite builds
# one from Debian's packages: tests/operate/test_container.py).
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing the code does not reinstall them. Every package, direct or
# not, is pinned with its hashes (`make lock`): the build installs exactly what was tested.
# Then a fixed, unprivileged user; /data and /keys are created owned by it so fresh named
# volumes are writable, /keys readable by it alone.
COPY requirements.lock .
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
    && groupadd --system --gid 10001 telentir \
    && useradd --system --uid 10001 --gid telentir --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin telentir \
    && mkdir /data /keys \
    && chown telentir:telentir /data /keys \
    && chmod 0700 /keys

COPY app.py gunicorn.conf.py schema.sql ./
COPY telentir ./telentir
# Byte-code compiled now: with a read-only root filesystem nothing can be written at run time.
RUN python -m compileall -q /app/telentir

USER telentir
# The master key seals the private keys stored in /data: it lives in another volume (or
# point TELENTIR_MASTER_KEY_FILE at a secret, /run/secrets/…), so a copy of the data volume
# alone opens nothing. The server creates it there on first start.
ENV TELENTIR_DATA_DIR=/data \
    TELENTIR_MASTER_KEY_FILE=/keys/master.key
VOLUME ["/data", "/keys"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Exec form: gunicorn's master is PID 1 and receives SIGTERM for a graceful stop (requests
# finish, streams end, running jobs settle; exit status 0). Give it more than gunicorn's 10 s
# graceful timeout before the kill: `docker stop -t 30`, compose's stop_grace_period.
CMD ["python", "-m", "telentir", "serve", "--host", "0.0.0.0", "--port", "8000"]
