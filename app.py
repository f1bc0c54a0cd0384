"""WSGI entry point: `gunicorn app:app`."""

from telentir import create_app

app = create_app()
