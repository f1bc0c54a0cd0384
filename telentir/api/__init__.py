"""Thin Flask blueprints: parse the request, call one service, serialize the answer."""

from __future__ import annotations

from flask import Flask

from . import auth, billing, connect, console, document, events, keys, objects, root, system, webhooks


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint."""
    for module in (system, auth, root, keys, objects, events, connect, billing, webhooks, document, console):
        app.register_blueprint(module.bp)
