"""Thin Flask blueprints: parse the request, call one service, serialize the answer."""

from __future__ import annotations

from flask import Flask

from . import auth, billing, connect, console, events, keys, objects, openapi, root, system, webhooks


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint."""
    for module in (system, auth, root, keys, objects, events, connect, billing, webhooks, openapi, console):
        app.register_blueprint(module.bp)
