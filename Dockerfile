# Telentir server: one container, state in the /data volume.
#   docker build -t telentir .
#   docker run -p 8000:8000 -v telentir-data:/data telentir
# Pinned base image: the same Python as development and CI.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing the code does not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# A fixed, unprivileged user; /data is created owned by it so a fresh named volume is writable.
RUN groupadd --system --gid 10001 telentir \
    && useradd --system --uid 10001 --gid telentir --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin telentir \
    && mkdir /data \
    && chown telentir:telentir /data

COPY app.py gunicorn.conf.py schema.sql ./
COPY telentir ./telentir

USER telentir
ENV TELENTIR_DATA_DIR=/data
VOLUME /data
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Exec form: gunicorn's master is PID 1 and receives SIGTERM for a graceful stop.
CMD ["python", "-m", "telentir", "serve", "--host", "0.0.0.0", "--port", "8000"]
