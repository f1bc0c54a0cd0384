"""The browser console at /console: static HTML, CSS and ES modules shipped in the package (docs/protocol.md §9).

Everything is decrypted in the browser; the server only hands out files, under a strict
Content-Security-Policy (no inline script or style, nothing from another origin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from flask import Blueprint, Response, jsonify, send_from_directory
from msgspec import Meta

from ..errors import NotFound
from .common import runtime
from .registry import Answer, operation
from .types.system import ConsoleConfig

bp = Blueprint("console", __name__)

ASSETS = Path(__file__).resolve().parent.parent / "console"
# Served types, by extension; anything else in the folder (or outside it) is a 404.
MIMETYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
ConsoleFile = Annotated[str, Meta(min_length=1, description="a file of the console, e.g. app.js; else a 404")]
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # No build step means no hashed file names: the browser revalidates (ETag, 304) every time.
    "Cache-Control": "no-cache",
}


@bp.after_request
def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/console")
@bp.get("/console/")
@operation(
    "get_console",
    "Console",
    "The browser console",
    ok=Answer(type=str, description="The console's page", media="text/html", example="<!doctype html>"),
    auth=None,
    other_paths={"/console/": "get_console_slash"},
)
def index() -> Response:
    """The console's page."""
    return _asset("index.html")


@bp.get("/console/config.json")
@operation(
    "get_console_config",
    "Console",
    "What the console needs to know of this server",
    ok=Answer(type=ConsoleConfig, description="Whether Stripe top-ups are configured", example={"stripe": False}),
    auth=None,
)
def config() -> Response:
    """What the console needs to know of this server: whether Stripe top-ups exist."""
    return jsonify({"stripe": runtime().config.stripe_secret_key is not None})


@bp.get("/console/<path:name>")
@operation(
    "get_console_file",
    "Console",
    "A console file",
    ok=Answer(
        type=str, description="A console file (script, style)", media="*/*", example="export function start() {}"
    ),
    errors=(404,),
    auth=None,
    path={"name": ConsoleFile},
)
def asset(name: str) -> Response:
    """A file of the console (scripts, styles, images)."""
    return _asset(name)


def _asset(name: str) -> Response:
    mimetype = MIMETYPES.get(Path(name).suffix)
    if mimetype is None:
        raise NotFound("No such console file.")
    # send_from_directory refuses paths that leave the folder (`..`, absolute) with a 404.
    response = send_from_directory(ASSETS, name, mimetype=mimetype, conditional=True, max_age=0)
    response.headers["Content-Type"] = f"{mimetype}; charset=utf-8" if mimetype != "image/svg+xml" else mimetype
    return response
