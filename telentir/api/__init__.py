"""Thin Flask blueprints: parse the request, call one service, serialize the answer."""

from __future__ import annotations

from flask import Flask

from . import (
    account,
    auth,
    billing,
    connect,
    console,
    document,
    events,
    keys,
    objects,
    root,
    system,
    twofactor_qr,
    webhooks,
)

BLUEPRINT_MODULES = (
    system,
    auth,
    twofactor_qr,
    account,
    root,
    keys,
    objects,
    events,
    connect,
    billing,
    webhooks,
    document,
    console,
)


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint."""
    for module in BLUEPRINT_MODULES:
        app.register_blueprint(module.bp)
